//! Instruction words and flags: `split_command.go`, `line_parsers.go`, `instructions/parse.go`.

use super::{DockerfileError, is_space, is_token_space, trim_space};

/// `newNodeFromLine`: the instruction, its `--flags`, and its arguments.
pub(super) struct Node {
    /// Lowercased instruction name.
    pub cmd: String,
    pub flags: Vec<String>,
    /// Arguments after the flags, trimmed.
    pub args: String,
    /// `parseMaybeJSON`: the arguments are a JSON array of strings.
    pub json: bool,
    /// For `ONBUILD`: the instruction it wraps.
    pub child: Option<Box<Node>>,
    pub escape: char,
}

impl Node {
    /// `splitCommand` + the per-instruction line parser.
    pub(super) fn from_line(line: &str, escape: char) -> Node {
        Node::parse_line(line, escape, true)
    }

    /// `with_child`: parse an `ONBUILD`'s instruction too. Only one level is needed
    /// (`canContainHeredoc` looks one level down), and stopping there keeps
    /// `ONBUILD ONBUILD ...` from recursing once per word.
    fn parse_line(line: &str, escape: char, with_child: bool) -> Node {
        let line = trim_space(line);
        let (cmd, rest) = match line.find(is_token_space) {
            Some(i) => (
                &line[..i],
                Some(line[i..].trim_start_matches(is_token_space)),
            ),
            None => (line, None),
        };
        let (args, flags) = match rest {
            Some(rest) => extract_builder_flags(rest, escape),
            None => (String::new(), Vec::new()),
        };
        let cmd = cmd.to_lowercase();
        let args = trim_space(&args).to_owned();
        let json = matches!(
            cmd.as_str(),
            "run" | "copy" | "add" | "cmd" | "entrypoint" | "shell" | "volume"
        ) && is_json_string_array(&args);
        let child = (with_child && cmd == "onbuild" && !args.is_empty())
            .then(|| Box::new(Node::parse_line(&args, escape, false)));
        Node {
            cmd,
            flags,
            args,
            json,
            child,
            escape,
        }
    }

    /// `canContainHeredoc`: ADD, COPY and RUN (also under ONBUILD) in shell form.
    pub(super) fn can_contain_heredoc(&self) -> bool {
        let node = match (&self.cmd[..], &self.child) {
            ("onbuild", Some(child)) => child,
            _ => self,
        };
        matches!(node.cmd.as_str(), "add" | "copy" | "run") && !node.json
    }

    /// `parseStringsWhitespaceDelimited`.
    pub(super) fn whitespace_words(&self) -> Vec<&str> {
        self.args
            .split(is_token_space)
            .filter(|w| !w.is_empty())
            .collect()
    }

    /// `parseWords`: words of `ARG`, quotes kept (expansion removes them later).
    pub(super) fn quoted_words(&self) -> Vec<String> {
        parse_words(&self.args, self.escape)
    }

    /// The values of `--name` (`BFlags.Parse` for a string flag): `None` when given
    /// without `=`. Parsing stops at `--`.
    pub(super) fn flag(&self, name: &str) -> Vec<Option<&str>> {
        let mut out = Vec::new();
        for flag in &self.flags {
            if flag == "--" {
                break;
            }
            let Some(body) = flag.strip_prefix("--") else {
                continue;
            };
            match body.split_once('=') {
                Some((n, v)) if n == name => out.push(Some(v)),
                None if body == name => out.push(None),
                _ => {}
            }
        }
        out
    }

    /// A single-valued string flag: errors for a missing value or a repeat.
    pub(super) fn string_flag(
        &self,
        name: &str,
        line: usize,
    ) -> Result<Option<&str>, DockerfileError> {
        let values = self.flag(name);
        if values.len() > 1 {
            return Err(DockerfileError::DuplicateFlag {
                line,
                instruction: self.cmd.to_uppercase(),
                flag: name.to_owned(),
            });
        }
        match values.first() {
            Some(None) => Err(DockerfileError::FlagWithoutValue {
                line,
                instruction: self.cmd.to_uppercase(),
                flag: name.to_owned(),
            }),
            Some(Some(v)) => Ok(Some(v)),
            None => Ok(None),
        }
    }
}

/// `parseJSON` succeeds: a JSON array whose elements are all strings.
fn is_json_string_array(args: &str) -> bool {
    let rest = args.trim_start_matches(is_space);
    rest.starts_with('[')
        && serde_json::from_str::<Vec<serde_json::Value>>(rest)
            .is_ok_and(|v| v.iter().all(serde_json::Value::is_string))
}

#[derive(PartialEq)]
enum Phase {
    Spaces,
    Word,
    Quote,
}

/// `extractBuilderFlags`: leading `--flag[=value]` words (quotes and the escape token
/// processed) and the rest of the line. A flag's value is only ever given with `=`: in
/// `--from image`, `image` is the start of the arguments. Upstream walks bytes (and so
/// mis-splits multi-byte characters containing 0x85 or 0xA0 and re-encodes each byte of one
/// inside a flag); this walks chars.
pub(super) fn extract_builder_flags(line: &str, escape: char) -> (String, Vec<String>) {
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let n = chars.len();
    let rest_at = |pos: usize| line[chars[pos].0..].to_owned();
    let mut words: Vec<String> = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut pos = 0;
    while pos <= n {
        let mut ch = chars.get(pos).map_or('\0', |c| c.1);
        if phase == Phase::Spaces {
            if pos == n {
                break;
            }
            if is_space(ch) {
                pos += 1;
                continue;
            }
            // Only keep going if the next word starts with `--`.
            let next_is_dash = chars.get(pos + 1).is_some_and(|c| c.1 == '-');
            if ch != '-' || !next_is_dash {
                return (rest_at(pos), words);
            }
            phase = Phase::Word;
        }
        if pos == n {
            if word != "--" && (blank_ok || !word.is_empty()) {
                words.push(word);
            }
            break;
        }
        if phase == Phase::Word {
            if is_space(ch) {
                phase = Phase::Spaces;
                if word == "--" {
                    return (rest_at(pos), words);
                }
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                word.clear();
                blank_ok = false;
                pos += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
                pos += 1;
                continue;
            }
            if ch == escape {
                if pos + 1 == n {
                    pos += 1;
                    continue;
                }
                pos += 1;
                ch = chars[pos].1;
            }
            word.push(ch);
            pos += 1;
            continue;
        }
        // Phase::Quote
        if ch == quote {
            phase = Phase::Word;
            pos += 1;
            continue;
        }
        if ch == escape {
            if pos + 1 == n {
                phase = Phase::Word;
                pos += 1;
                continue;
            }
            pos += 1;
            ch = chars[pos].1;
        }
        word.push(ch);
        pos += 1;
    }
    (String::new(), words)
}

/// `parseWords`: whitespace-separated words; quotes are kept, and the escape token keeps
/// the next character in the word (outside single quotes).
pub(super) fn parse_words(rest: &str, escape: char) -> Vec<String> {
    let chars: Vec<char> = rest.chars().collect();
    let n = chars.len();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut word = String::new();
    let mut pos = 0;
    while pos <= n {
        let mut ch = chars.get(pos).copied().unwrap_or('\0');
        if phase == Phase::Spaces {
            if pos == n {
                break;
            }
            if is_space(ch) {
                pos += 1;
                continue;
            }
            phase = Phase::Word;
        }
        if pos == n {
            if blank_ok || !word.is_empty() {
                words.push(std::mem::take(&mut word));
            }
            break;
        }
        if phase == Phase::Word {
            if is_space(ch) {
                phase = Phase::Spaces;
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                blank_ok = false;
                pos += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
            }
            if ch == escape {
                if pos + 1 == n {
                    pos += 1;
                    continue;
                }
                word.push(ch);
                pos += 1;
                ch = chars[pos];
            }
            word.push(ch);
            pos += 1;
            continue;
        }
        // Phase::Quote
        if ch == quote {
            phase = Phase::Word;
        }
        if ch == escape && quote != '\'' {
            if pos + 1 == n {
                phase = Phase::Word;
                pos += 1;
                continue;
            }
            pos += 1;
            word.push(ch);
            ch = chars[pos];
        }
        word.push(ch);
        pos += 1;
    }
    words
}

/// What the image search needs from each instruction.
pub(super) enum Parsed {
    /// A meta `ARG` (before the first `FROM`): `(name, default)` pairs.
    MetaArg {
        line: usize,
        args: Vec<(String, Option<String>)>,
    },
    From(From),
    CopyFrom {
        line: usize,
        from: String,
    },
    /// The `from=` values of a `RUN`'s mounts, in order (empty `from` omitted).
    RunMounts {
        line: usize,
        froms: Vec<String>,
    },
}

pub(super) struct From {
    pub line: usize,
    pub base: String,
    pub name: Option<String>,
    pub platform: Option<String>,
}

const KNOWN: [&str; 18] = [
    "add",
    "arg",
    "cmd",
    "copy",
    "entrypoint",
    "env",
    "expose",
    "from",
    "healthcheck",
    "label",
    "maintainer",
    "onbuild",
    "run",
    "shell",
    "stopsignal",
    "user",
    "volume",
    "workdir",
];

/// `instructions.Parse`, keeping what matters for images: the instructions as
/// `(1-based line, node)`, in order.
pub(super) fn parse<'a>(
    nodes: impl IntoIterator<Item = (usize, &'a Node)>,
) -> Result<Vec<Parsed>, DockerfileError> {
    let mut out = Vec::new();
    let mut in_stage = false;
    for (line, node) in nodes {
        match node.cmd.as_str() {
            "from" => {
                out.push(Parsed::From(parse_from(node, line)?));
                in_stage = true;
            }
            "arg" if !in_stage => out.push(parse_meta_arg(node, line)?),
            cmd if !in_stage && KNOWN.contains(&cmd) => {
                return Err(DockerfileError::NoBuildStage {
                    line,
                    instruction: cmd.to_uppercase(),
                });
            }
            "copy" => {
                if let Some(from) = node.string_flag("from", line)?
                    && !from.is_empty()
                {
                    out.push(Parsed::CopyFrom {
                        line,
                        from: from.to_owned(),
                    });
                }
            }
            "run" => {
                let mut froms = Vec::new();
                for spec in node.flag("mount") {
                    let Some(spec) = spec else {
                        return Err(DockerfileError::FlagWithoutValue {
                            line,
                            instruction: "RUN".into(),
                            flag: "mount".into(),
                        });
                    };
                    if let Some(from) = super::mount::from(spec, line)? {
                        froms.push(from);
                    }
                }
                if !froms.is_empty() {
                    out.push(Parsed::RunMounts { line, froms });
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// `parseFrom` + `parseBuildStageName`.
fn parse_from(node: &Node, line: usize) -> Result<From, DockerfileError> {
    let words = node.whitespace_words();
    let name = match words.len() {
        0 => return Err(DockerfileError::FromWithoutImage { line }),
        1 => None,
        3 if words[1].eq_ignore_ascii_case("as") => {
            let name = words[2].to_lowercase();
            let mut chars = name.chars();
            let valid = chars.next().is_some_and(|c| c.is_ascii_lowercase())
                && chars.all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.')
                });
            if !valid {
                return Err(DockerfileError::InvalidStageName {
                    line,
                    name: words[2].to_owned(),
                });
            }
            Some(name)
        }
        _ => {
            return Err(DockerfileError::FromArguments {
                line,
                args: words.iter().map(|w| (*w).to_owned()).collect(),
            });
        }
    };
    let platform = node.string_flag("platform", line)?.map(str::to_owned);
    Ok(From {
        line,
        base: words[0].to_owned(),
        name,
        platform: platform.filter(|p| !p.is_empty()),
    })
}

/// `parseArg`: `ARG a`, `ARG a=1 b="two"`.
fn parse_meta_arg(node: &Node, line: usize) -> Result<Parsed, DockerfileError> {
    let mut args = Vec::new();
    for word in node.quoted_words() {
        match word.split_once('=') {
            Some(("", _)) => return Err(DockerfileError::BlankArgName { line }),
            Some((key, value)) => args.push((key.to_owned(), Some(value.to_owned()))),
            None => args.push((word, None)),
        }
    }
    Ok(Parsed::MetaArg { line, args })
}
