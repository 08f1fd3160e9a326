//! BuildKit's `shell/lex.go`: quotes, escapes and `$VAR` / `${VAR...}` substitution.

use super::{ExpansionError, MAX_NESTING};
use std::collections::BTreeMap;

/// Variables in scope. A missing key is unset; an empty value is set but empty.
pub(super) type Env = BTreeMap<String, String>;

/// `Lex` switches used by the Dockerfile frontend.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Options {
    /// Keep quote characters in the output.
    pub raw_quotes: bool,
    /// Keep escape tokens in the output.
    pub raw_escapes: bool,
    /// Leave references to unset variables as written.
    pub skip_unset_env: bool,
}

pub(super) struct Output {
    /// `ProcessWord`: the whole word.
    pub result: String,
    /// `ProcessWords`: split on unquoted whitespace.
    pub words: Vec<String>,
}

/// Processes `word` like `Lex.process`.
pub(super) fn process(
    word: &str,
    env: &Env,
    escape: char,
    opts: Options,
) -> Result<Output, ExpansionError> {
    // text/scanner skips a byte-order mark at the start.
    let word = word.strip_prefix('\u{feff}').unwrap_or(word);
    let mut lexer = Lexer {
        chars: word.chars().collect(),
        pos: 0,
        env,
        escape,
        opts,
        raw_escapes: opts.raw_escapes,
        word_buf: String::new(),
        depth: 0,
    };
    let (result, words) = lexer.process_stop_on(None, opts.raw_escapes)?;
    Ok(Output { result, words })
}

struct Lexer<'a> {
    chars: Vec<char>,
    pos: usize,
    env: &'a Env,
    escape: char,
    opts: Options,
    raw_escapes: bool,
    /// Upstream shares one word buffer across nested calls (`sw.wordsBuffer`), which a
    /// nested `${...}` resets; kept so word splitting matches.
    word_buf: String,
    depth: usize,
}

#[derive(Default)]
struct Words {
    words: Vec<String>,
    in_word: bool,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn add_char(&mut self, w: &mut Words, ch: char) {
        if ch.is_whitespace() && w.in_word {
            if !self.word_buf.is_empty() {
                w.words.push(std::mem::take(&mut self.word_buf));
                w.in_word = false;
            }
        } else if !ch.is_whitespace() {
            self.add_raw_char(w, ch);
        }
    }

    fn add_raw_char(&mut self, w: &mut Words, ch: char) {
        self.word_buf.push(ch);
        w.in_word = true;
    }

    fn add_string(&mut self, w: &mut Words, s: &str) {
        for ch in s.chars() {
            self.add_char(w, ch);
        }
    }

    fn add_raw_string(&mut self, w: &mut Words, s: &str) {
        self.word_buf.push_str(s);
        w.in_word = true;
    }

    fn get_words(&mut self, mut w: Words) -> Vec<String> {
        if !self.word_buf.is_empty() {
            w.words.push(std::mem::take(&mut self.word_buf));
        }
        w.words
    }

    /// `processStopOn`: up to `stop` (consumed) or the end.
    fn process_stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<(String, Vec<String>), ExpansionError> {
        if self.depth >= MAX_NESTING {
            return Err(ExpansionError::TooDeep);
        }
        self.depth += 1;
        let saved = std::mem::replace(&mut self.raw_escapes, raw_escapes);
        let out = self.stop_on(stop);
        self.raw_escapes = saved;
        self.depth -= 1;
        out
    }

    fn stop_on(&mut self, stop: Option<char>) -> Result<(String, Vec<String>), ExpansionError> {
        let mut result = String::new();
        self.word_buf.clear();
        let mut words = Words::default();
        while let Some(ch) = self.peek() {
            if stop == Some(ch) {
                self.pos += 1;
                return Ok((result, self.get_words(words)));
            }
            match ch {
                '$' => {
                    let tmp = self.process_dollar()?;
                    result.push_str(&tmp);
                    self.add_string(&mut words, &tmp);
                    continue;
                }
                '\'' | '"' => {
                    let tmp = if ch == '\'' {
                        self.process_single_quote()?
                    } else {
                        self.process_double_quote()?
                    };
                    result.push_str(&tmp);
                    self.add_raw_string(&mut words, &tmp);
                    continue;
                }
                '<' => {
                    let tmp = self.process_possible_heredoc();
                    result.push_str(&tmp);
                    self.add_raw_string(&mut words, &tmp);
                    continue;
                }
                _ => {}
            }
            self.pos += 1;
            let mut ch = ch;
            if ch == self.escape {
                if self.raw_escapes {
                    self.add_raw_char(&mut words, ch);
                    result.push(ch);
                }
                // The escape token escapes the next character, except at the end.
                match self.next() {
                    Some(c) => ch = c,
                    None => break,
                }
                self.add_raw_char(&mut words, ch);
            } else {
                self.add_char(&mut words, ch);
            }
            result.push(ch);
        }
        if let Some(stop) = stop {
            return Err(ExpansionError::Unterminated(match stop {
                '}' => "}",
                '/' => "/",
                _ => "character",
            }));
        }
        Ok((result, self.get_words(words)))
    }

    /// `processPossibleHeredoc` (BuildKit since moby/buildkit#5817, Dockerfile frontend 1.16):
    /// `<<` and the blanks (`\t`, `\r`, space) right after it stay in the word, so
    /// `<< EOF` is one word. The text is unchanged; only word splitting sees a difference.
    fn process_possible_heredoc(&mut self) -> String {
        self.pos += 1;
        if self.peek() != Some('<') {
            return "<".into();
        }
        self.pos += 1;
        let mut out = String::from("<<");
        while let Some(c @ ('\t' | '\r' | ' ')) = self.peek() {
            out.push(c);
            self.pos += 1;
        }
        out
    }

    /// Everything up to the next `'` is literal.
    fn process_single_quote(&mut self) -> Result<String, ExpansionError> {
        let mut result = String::new();
        self.pos += 1;
        if self.opts.raw_quotes {
            result.push('\'');
        }
        loop {
            match self.next() {
                None => return Err(ExpansionError::Unterminated("single-quote")),
                Some('\'') => {
                    if self.opts.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(c) => result.push(c),
            }
        }
    }

    /// Literal except `$`; the escape token escapes only `"`, `$` and itself.
    fn process_double_quote(&mut self) -> Result<String, ExpansionError> {
        let mut result = String::new();
        self.pos += 1;
        if self.opts.raw_quotes {
            result.push('"');
        }
        loop {
            match self.peek() {
                None => return Err(ExpansionError::Unterminated("double-quote")),
                Some('"') => {
                    self.pos += 1;
                    if self.opts.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let value = self.process_dollar()?;
                    result.push_str(&value);
                }
                Some(mut ch) => {
                    self.pos += 1;
                    if ch == self.escape {
                        if self.raw_escapes {
                            result.push(ch);
                        }
                        match self.peek() {
                            None => continue,
                            Some(c) if c == '"' || c == '$' || c == self.escape => {
                                self.pos += 1;
                                ch = c;
                            }
                            Some(_) => {}
                        }
                    }
                    result.push(ch);
                }
            }
        }
    }

    fn lookup(&self, name: &str) -> Option<String> {
        self.env.get(name).cloned()
    }

    /// `$NAME`, `${NAME}` and `${NAME<modifier>word}`.
    fn process_dollar(&mut self) -> Result<String, ExpansionError> {
        let start = self.pos;
        self.pos += 1;
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok(match self.lookup(&name) {
                Some(v) => v,
                None if self.opts.skip_unset_env => format!("${name}"),
                None => String::new(),
            });
        }
        self.pos += 1;
        match self.peek() {
            None => return Err(ExpansionError::MissingBrace),
            Some('{' | '}' | ':') => return Err(ExpansionError::BadSubstitution),
            Some(_) => {}
        }
        let name = self.process_name();
        // Upstream reports "unsupported modifier (\u{fffd})" for `${NAME` at the end.
        let ch = self.next().ok_or(ExpansionError::MissingBrace)?;
        let mut chs = ch.to_string();
        let mut null_is_unset = false;
        let op = match ch {
            '}' => {
                return Ok(match self.lookup(&name) {
                    Some(v) => v,
                    None if self.opts.skip_unset_env => format!("${{{name}}}"),
                    None => String::new(),
                });
            }
            ':' => {
                null_is_unset = true;
                let op = self.next().ok_or(ExpansionError::MissingBrace)?;
                chs.push(op);
                op
            }
            '+' | '-' | '?' | '#' | '%' => ch,
            '/' => return self.process_replace(&name),
            _ => return Err(ExpansionError::UnsupportedModifier(chs)),
        };
        let raw_escapes = op == '#' || op == '%';
        if null_is_unset && raw_escapes {
            return Err(ExpansionError::UnsupportedModifier(chs));
        }
        let word = self.stop_on_brace('}', raw_escapes, ExpansionError::MissingBrace)?;
        let value = self.lookup(&name);
        if self.opts.skip_unset_env && value.is_none() {
            return Ok(format!("${{{name}{chs}{word}}}"));
        }
        let set_and_usable = |v: &String| !(null_is_unset && v.is_empty());
        match op {
            '-' => Ok(value.filter(set_and_usable).unwrap_or(word)),
            '+' => Ok(if value.as_ref().is_some_and(set_and_usable) {
                word
            } else {
                String::new()
            }),
            '?' => match value {
                Some(v) if set_and_usable(&v) => Ok(v),
                other => Err(ExpansionError::Required {
                    expr: self.chars[start..self.pos].iter().collect(),
                    name,
                    unset: other.is_none(),
                    message: word,
                }),
            },
            '%' | '#' => {
                let (pattern, greedy) = match word.strip_prefix(op) {
                    Some(p) => (p.to_owned(), true),
                    None => (word, false),
                };
                let value = value.unwrap_or_default();
                if op == '%' {
                    super::pattern::trim_suffix(&pattern, &value, greedy)
                } else {
                    super::pattern::trim_prefix(&pattern, &value, greedy)
                }
            }
            _ => Err(ExpansionError::UnsupportedModifier(chs)),
        }
    }

    /// A nested word up to `stop`; an error at the end of input is reported as `at_end`.
    fn stop_on_brace(
        &mut self,
        stop: char,
        raw_escapes: bool,
        at_end: ExpansionError,
    ) -> Result<String, ExpansionError> {
        match self.process_stop_on(Some(stop), raw_escapes) {
            Ok((word, _)) => Ok(word),
            Err(ExpansionError::TooDeep) => Err(ExpansionError::TooDeep),
            Err(_) if self.peek().is_none() => Err(at_end),
            Err(e) => Err(e),
        }
    }

    /// `${NAME/pattern/replacement}` and `${NAME//pattern/replacement}`.
    fn process_replace(&mut self, name: &str) -> Result<String, ExpansionError> {
        let all = self.peek() == Some('/');
        if all {
            self.pos += 1;
        }
        let pattern = self.stop_on_brace('/', true, ExpansionError::MissingSlash)?;
        let replacement = self.stop_on_brace('}', true, ExpansionError::MissingBrace)?;
        let Some(value) = self
            .lookup(name)
            .or_else(|| (!self.opts.skip_unset_env).then(String::new))
        else {
            return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
        };
        super::pattern::replace(&pattern, &value, &replacement, all)
    }

    /// A variable name: letters, digits and `_`; or digits only; or one special
    /// parameter character.
    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && ch.is_numeric() {
                while let Some(d) = self.peek().filter(|c| c.is_numeric()) {
                    name.push(d);
                    self.pos += 1;
                }
                return name;
            }
            if name.is_empty() && matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.pos += 1;
                return ch.to_string();
            }
            if !(ch.is_alphabetic() || ch.is_numeric() || ch == '_') {
                break;
            }
            name.push(ch);
            self.pos += 1;
        }
        name
    }
}
