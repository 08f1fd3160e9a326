//! The part of Go's `regexp` (RE2 syntax with the Perl flags `regexp.Compile` uses) that the
//! pattern compiler can produce: literals, `.`, `^`/`$` (whole text), `*`/`+`/`?` (also
//! non-greedy), groups, classes with ranges, `[:posix:]` and `\d\s\w` groups, escapes
//! (`\x41`, octal, `\n`…, `\Q…\E`, `\A`, `\z`, `\b`, `\B`). Matching is a Pike VM: linear in
//! the text, no backtracking. `\p{…}` classes and alternation are refused.

/// Why a regexp written by the pattern compiler cannot be used: Go's `regexp/syntax` errors,
/// and the constructs this port refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegexError {
    #[error("expression nests too deeply")]
    TooDeep,
    #[error("alternation `|` is not supported")]
    Alternation,
    #[error("group flags `(?` are not supported")]
    GroupFlags,
    #[error("missing closing )")]
    MissingParen,
    #[error("unexpected )")]
    UnexpectedParen,
    #[error("invalid nested repetition operator `{0}`")]
    NestedRepetition(char),
    #[error("missing argument to repetition operator `{0}`")]
    MissingRepetitionArgument(char),
    #[error("trailing backslash at end of expression")]
    TrailingBackslash,
    /// `\` followed by this character.
    #[error("invalid escape sequence `\\{0}`")]
    InvalidEscape(char),
    #[error("Unicode classes `\\p` are not supported")]
    UnicodeClass,
    #[error("missing closing ]")]
    MissingBracket,
    /// An unknown `[:name:]` class.
    #[error("invalid character class range `{0}`")]
    InvalidNamedClass(String),
    /// A range whose end is before its start, like `z-a`.
    #[error("invalid character class range")]
    InvalidRange,
}

/// Deepest group nesting accepted (Go: 1000).
const MAX_DEPTH: usize = 1000;
const MAX_RUNE: u32 = 0x10_ffff;

#[derive(Debug, Clone)]
pub(super) struct Regex {
    prog: Vec<Inst>,
}

#[derive(Debug, Clone)]
enum Inst {
    Rune(u32),
    Class(Class),
    AnyNotNl,
    Look(Look),
    Split(usize, usize),
    Jmp(usize),
    Match,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Look {
    BeginText,
    EndText,
    WordBoundary,
    NoWordBoundary,
}

#[derive(Debug, Clone)]
struct Class {
    ranges: Vec<(u32, u32)>,
    negated: bool,
}

impl Class {
    fn matches(&self, c: u32) -> bool {
        self.ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != self.negated
    }
}

enum Node {
    Rune(u32),
    Class(Class),
    AnyNotNl,
    Look(Look),
    Concat(Vec<Node>),
    Repeat(Box<Node>, Rep),
}

enum Rep {
    ZeroOrMore,
    OneOrMore,
    ZeroOrOne,
}

const DIGIT: &[(u32, u32)] = &[(0x30, 0x39)];
const SPACE_PERL: &[(u32, u32)] = &[(0x09, 0x0a), (0x0c, 0x0d), (0x20, 0x20)];
const WORD: &[(u32, u32)] = &[(0x30, 0x39), (0x41, 0x5a), (0x5f, 0x5f), (0x61, 0x7a)];

fn perl_group(c: char) -> Option<(bool, &'static [(u32, u32)])> {
    match c {
        'd' => Some((false, DIGIT)),
        'D' => Some((true, DIGIT)),
        's' => Some((false, SPACE_PERL)),
        'S' => Some((true, SPACE_PERL)),
        'w' => Some((false, WORD)),
        'W' => Some((true, WORD)),
        _ => None,
    }
}

/// `[:name:]` / `[:^name:]` (Go's posixGroup).
fn posix_group(name: &str) -> Option<(bool, &'static [(u32, u32)])> {
    let inner = name.strip_prefix("[:")?.strip_suffix(":]")?;
    let (negated, inner) = match inner.strip_prefix('^') {
        Some(rest) => (true, rest),
        None => (false, inner),
    };
    let ranges: &'static [(u32, u32)] = match inner {
        "alnum" => &[(0x30, 0x39), (0x41, 0x5a), (0x61, 0x7a)],
        "alpha" => &[(0x41, 0x5a), (0x61, 0x7a)],
        "ascii" => &[(0x00, 0x7f)],
        "blank" => &[(0x09, 0x09), (0x20, 0x20)],
        "cntrl" => &[(0x00, 0x1f), (0x7f, 0x7f)],
        "digit" => DIGIT,
        "graph" => &[(0x21, 0x7e)],
        "lower" => &[(0x61, 0x7a)],
        "print" => &[(0x20, 0x7e)],
        "punct" => &[(0x21, 0x2f), (0x3a, 0x40), (0x5b, 0x60), (0x7b, 0x7e)],
        "space" => &[(0x09, 0x0d), (0x20, 0x20)],
        "upper" => &[(0x41, 0x5a)],
        "word" => WORD,
        "xdigit" => &[(0x30, 0x39), (0x41, 0x46), (0x61, 0x66)],
        _ => return None,
    };
    Some((negated, ranges))
}

fn add_group(ranges: &mut Vec<(u32, u32)>, negated: bool, group: &[(u32, u32)]) {
    if !negated {
        ranges.extend_from_slice(group);
        return;
    }
    // group is sorted and disjoint: add the gaps
    let mut next = 0u32;
    for &(lo, hi) in group {
        if lo > next {
            ranges.push((next, lo - 1));
        }
        next = hi.saturating_add(1);
    }
    if next <= MAX_RUNE {
        ranges.push((next, MAX_RUNE));
    }
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, offset: usize) -> Option<char> {
        self.chars.get(self.pos + offset).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn parse_seq(&mut self, depth: usize) -> Result<Vec<Node>, RegexError> {
        if depth > MAX_DEPTH {
            return Err(RegexError::TooDeep);
        }
        let mut items: Vec<Node> = Vec::new();
        let mut last_was_repeat = false;
        while let Some(c) = self.peek() {
            let mut is_repeat = false;
            match c {
                ')' => break,
                '|' => return Err(RegexError::Alternation),
                '(' => {
                    self.pos += 1;
                    if self.peek() == Some('?') {
                        return Err(RegexError::GroupFlags);
                    }
                    let inner = self.parse_seq(depth + 1)?;
                    if self.bump() != Some(')') {
                        return Err(RegexError::MissingParen);
                    }
                    items.push(Node::Concat(inner));
                }
                '^' => {
                    self.pos += 1;
                    items.push(Node::Look(Look::BeginText));
                }
                '$' => {
                    self.pos += 1;
                    items.push(Node::Look(Look::EndText));
                }
                '.' => {
                    self.pos += 1;
                    items.push(Node::AnyNotNl);
                }
                '[' => {
                    let class = self.parse_class()?;
                    items.push(Node::Class(class));
                }
                '*' | '+' | '?' => {
                    self.pos += 1;
                    let rep = match c {
                        '*' => Rep::ZeroOrMore,
                        '+' => Rep::OneOrMore,
                        _ => Rep::ZeroOrOne,
                    };
                    if self.peek() == Some('?') {
                        self.pos += 1; // non-greedy: same answer to "does it match"
                    }
                    if last_was_repeat {
                        return Err(RegexError::NestedRepetition(c));
                    }
                    let Some(operand) = items.pop() else {
                        return Err(RegexError::MissingRepetitionArgument(c));
                    };
                    items.push(Node::Repeat(Box::new(operand), rep));
                    is_repeat = true;
                }
                '\\' => self.parse_top_escape(&mut items)?,
                other => {
                    self.pos += 1;
                    items.push(Node::Rune(u32::from(other)));
                }
            }
            last_was_repeat = is_repeat;
        }
        Ok(items)
    }

    fn parse_top_escape(&mut self, items: &mut Vec<Node>) -> Result<(), RegexError> {
        let look = match self.peek_at(1) {
            None => return Err(RegexError::TrailingBackslash),
            Some('A') => Some(Look::BeginText),
            Some('z') => Some(Look::EndText),
            Some('b') => Some(Look::WordBoundary),
            Some('B') => Some(Look::NoWordBoundary),
            Some('C') => return Err(RegexError::InvalidEscape('C')),
            Some('p' | 'P') => return Err(RegexError::UnicodeClass),
            Some('Q') => {
                // \Q...\E: everything up to \E (or the end) is literal
                self.pos += 2;
                while let Some(c) = self.peek() {
                    if c == '\\' && self.peek_at(1) == Some('E') {
                        self.pos += 2;
                        break;
                    }
                    self.pos += 1;
                    items.push(Node::Rune(u32::from(c)));
                }
                return Ok(());
            }
            Some(c) => {
                if let Some((negated, group)) = perl_group(c) {
                    self.pos += 2;
                    let mut ranges = Vec::new();
                    add_group(&mut ranges, negated, group);
                    items.push(Node::Class(Class {
                        ranges,
                        negated: false,
                    }));
                    return Ok(());
                }
                None
            }
        };
        match look {
            Some(look) => {
                self.pos += 2;
                items.push(Node::Look(look));
            }
            None => {
                let r = self.parse_escape()?;
                items.push(Node::Rune(r));
            }
        }
        Ok(())
    }

    /// Go's parseEscape, at a backslash: the escaped rune.
    fn parse_escape(&mut self) -> Result<u32, RegexError> {
        self.pos += 1;
        let Some(c) = self.bump() else {
            return Err(RegexError::TrailingBackslash);
        };
        if c.is_ascii() && !c.is_ascii_alphanumeric() {
            return Ok(u32::from(c));
        }
        let invalid = || RegexError::InvalidEscape(c);
        match c {
            '0'..='7' => {
                // \1-\7 alone would be a backreference: not supported
                if c != '0' && !matches!(self.peek(), Some('0'..='7')) {
                    return Err(invalid());
                }
                let mut r = u32::from(c) - u32::from('0');
                for _ in 1..3 {
                    match self.peek() {
                        Some(d @ '0'..='7') => {
                            r = r * 8 + u32::from(d) - u32::from('0');
                            self.pos += 1;
                        }
                        _ => break,
                    }
                }
                Ok(r)
            }
            'x' => {
                let first = self.bump().ok_or_else(invalid)?;
                if first == '{' {
                    let mut r = 0u32;
                    let mut digits = 0;
                    loop {
                        let d = self.bump().ok_or_else(invalid)?;
                        if d == '}' {
                            break;
                        }
                        r = r * 16 + d.to_digit(16).ok_or_else(invalid)?;
                        if r > MAX_RUNE {
                            return Err(invalid());
                        }
                        digits += 1;
                    }
                    return if digits == 0 { Err(invalid()) } else { Ok(r) };
                }
                let x = first.to_digit(16);
                let y = self.bump().and_then(|d| d.to_digit(16));
                match (x, y) {
                    (Some(x), Some(y)) => Ok(x * 16 + y),
                    _ => Err(invalid()),
                }
            }
            'a' => Ok(7),
            'f' => Ok(12),
            'n' => Ok(10),
            'r' => Ok(13),
            't' => Ok(9),
            'v' => Ok(11),
            _ => Err(invalid()),
        }
    }

    /// Go's parseClass, at `[`.
    fn parse_class(&mut self) -> Result<Class, RegexError> {
        self.pos += 1;
        let mut negated = false;
        if self.peek() == Some('^') {
            negated = true;
            self.pos += 1;
        }
        let mut ranges = Vec::new();
        let mut first = true; // `]` is a member when first
        loop {
            match self.peek() {
                None => return Err(RegexError::MissingBracket),
                Some(']') if !first => {
                    self.pos += 1;
                    break;
                }
                _ => {}
            }
            first = false;
            // [:alnum:] etc.
            if self.peek() == Some('[')
                && self.peek_at(1) == Some(':')
                && self.peek_at(2).is_some()
                && let Some(end) = self.find(":]", self.pos + 2)
            {
                let name: String = self
                    .chars
                    .get(self.pos..end + 2)
                    .unwrap_or_default()
                    .iter()
                    .collect();
                let Some((neg, group)) = posix_group(&name) else {
                    return Err(RegexError::InvalidNamedClass(name));
                };
                add_group(&mut ranges, neg, group);
                self.pos = end + 2;
                continue;
            }
            if self.peek() == Some('\\') {
                match self.peek_at(1) {
                    Some('p' | 'P') => {
                        return Err(RegexError::UnicodeClass);
                    }
                    Some(c) => {
                        if let Some((neg, group)) = perl_group(c) {
                            add_group(&mut ranges, neg, group);
                            self.pos += 2;
                            continue;
                        }
                    }
                    None => {}
                }
            }
            let lo = self.parse_class_char()?;
            let mut hi = lo;
            if self.peek() == Some('-') && self.peek_at(1).is_some_and(|c| c != ']') {
                self.pos += 1;
                hi = self.parse_class_char()?;
                if hi < lo {
                    return Err(RegexError::InvalidRange);
                }
            }
            ranges.push((lo, hi));
        }
        Ok(Class { ranges, negated })
    }

    fn parse_class_char(&mut self) -> Result<u32, RegexError> {
        match self.peek() {
            None => Err(RegexError::MissingBracket),
            Some('\\') => self.parse_escape(),
            Some(c) => {
                self.pos += 1;
                Ok(u32::from(c))
            }
        }
    }

    /// Index of the first occurrence of `needle` at or after `from`.
    fn find(&self, needle: &str, from: usize) -> Option<usize> {
        let needle: Vec<char> = needle.chars().collect();
        let haystack = self.chars.get(from..)?;
        haystack
            .windows(needle.len())
            .position(|w| w == needle.as_slice())
            .map(|i| i + from)
    }
}

fn emit(node: &Node, prog: &mut Vec<Inst>) {
    match node {
        Node::Rune(r) => prog.push(Inst::Rune(*r)),
        Node::Class(class) => prog.push(Inst::Class(class.clone())),
        Node::AnyNotNl => prog.push(Inst::AnyNotNl),
        Node::Look(look) => prog.push(Inst::Look(*look)),
        Node::Concat(items) => items.iter().for_each(|item| emit(item, prog)),
        Node::Repeat(inner, Rep::ZeroOrMore) => {
            let split = prog.len();
            prog.push(Inst::Jmp(0));
            emit(inner, prog);
            prog.push(Inst::Jmp(split));
            let end = prog.len();
            if let Some(slot) = prog.get_mut(split) {
                *slot = Inst::Split(split + 1, end);
            }
        }
        Node::Repeat(inner, Rep::OneOrMore) => {
            let start = prog.len();
            emit(inner, prog);
            let end = prog.len() + 1;
            prog.push(Inst::Split(start, end));
        }
        Node::Repeat(inner, Rep::ZeroOrOne) => {
            let split = prog.len();
            prog.push(Inst::Jmp(0));
            emit(inner, prog);
            let end = prog.len();
            if let Some(slot) = prog.get_mut(split) {
                *slot = Inst::Split(split + 1, end);
            }
        }
    }
}

/// A set of program counters, in insertion order.
struct Threads {
    member: Vec<bool>,
    list: Vec<usize>,
}

impl Threads {
    fn new(len: usize) -> Threads {
        Threads {
            member: vec![false; len],
            list: Vec::new(),
        }
    }

    fn insert(&mut self, pc: usize) -> bool {
        match self.member.get_mut(pc) {
            Some(seen) if !*seen => {
                *seen = true;
                self.list.push(pc);
                true
            }
            _ => false,
        }
    }

    fn clear(&mut self) {
        for &pc in &self.list {
            if let Some(seen) = self.member.get_mut(pc) {
                *seen = false;
            }
        }
        self.list.clear();
    }
}

fn is_word(c: Option<&char>) -> bool {
    c.is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
}

impl Regex {
    pub(super) fn new(source: &str) -> Result<Regex, RegexError> {
        let mut parser = Parser {
            chars: source.chars().collect(),
            pos: 0,
        };
        let items = parser.parse_seq(0)?;
        if parser.peek().is_some() {
            return Err(RegexError::UnexpectedParen);
        }
        let mut prog = Vec::new();
        items.iter().for_each(|item| emit(item, &mut prog));
        prog.push(Inst::Match);
        Ok(Regex { prog })
    }

    /// Go's `MatchString`: whether the regexp matches anywhere in `text`.
    pub(super) fn is_match(&self, text: &str) -> bool {
        let chars: Vec<char> = text.chars().collect();
        let mut current = Threads::new(self.prog.len());
        let mut next = Threads::new(self.prog.len());
        for pos in 0..=chars.len() {
            if self.add(&mut current, 0, pos, &chars) {
                return true;
            }
            let Some(&c) = chars.get(pos) else { break };
            next.clear();
            for &pc in &current.list {
                let advances = match self.prog.get(pc) {
                    Some(Inst::Rune(r)) => *r == u32::from(c),
                    Some(Inst::Class(class)) => class.matches(u32::from(c)),
                    Some(Inst::AnyNotNl) => c != '\n',
                    _ => false,
                };
                if advances && self.add(&mut next, pc + 1, pos + 1, &chars) {
                    return true;
                }
            }
            std::mem::swap(&mut current, &mut next);
        }
        false
    }

    /// Adds `pc` and everything reachable from it without reading; true on reaching Match.
    fn add(&self, threads: &mut Threads, pc: usize, pos: usize, chars: &[char]) -> bool {
        let mut stack = vec![pc];
        while let Some(pc) = stack.pop() {
            if !threads.insert(pc) {
                continue;
            }
            match self.prog.get(pc) {
                Some(Inst::Match) => return true,
                Some(Inst::Jmp(to)) => stack.push(*to),
                Some(Inst::Split(a, b)) => {
                    stack.push(*b);
                    stack.push(*a);
                }
                Some(Inst::Look(look)) => {
                    let before = pos.checked_sub(1).and_then(|p| chars.get(p));
                    let holds = match look {
                        Look::BeginText => pos == 0,
                        Look::EndText => pos == chars.len(),
                        Look::WordBoundary => is_word(before) != is_word(chars.get(pos)),
                        Look::NoWordBoundary => is_word(before) == is_word(chars.get(pos)),
                    };
                    if holds {
                        stack.push(pc + 1);
                    }
                }
                _ => {}
            }
        }
        false
    }
}
