//! Our parser against moby/buildkit's parser (`frontend/dockerfile/parser`).
//!
//! BuildKit's `TestParseCases` data (`testfiles/<case>/{Dockerfile,result}`, `result` being
//! `Node.Dump()` of the parsed file), `TestParseErrorCases` (`testfiles-negative`) and
//! `TestParseIncludesLineNumbers` (`testfile-line`) are not copied into this repository. The
//! tests that read them are `#[ignore]`d and run against a BuildKit checkout:
//!
//! ```text
//! git -C <buildkit> archive <commit> frontend/dockerfile/parser | tar -x -C /tmp/bk
//! BUILDKIT_PARSER_TESTDATA=/tmp/bk/frontend/dockerfile/parser \
//!     cargo test --lib dockerfile::buildkit_cases -- --include-ignored
//! ```
//!
//! (last run: all pass against moby/buildkit `73ed6825c4b7569379ef89df0aedcdbe64473d31`).
//! [`dump`] renders BuildKit's dump from our instructions: the instruction splitting,
//! continuations, comments, the escape directive, flags, JSON forms and heredocs are ours; the
//! argument shapes of `line_parsers.go` that the image search never needs (ENV, LABEL,
//! HEALTHCHECK) are rendered by small test-only ports below.
//!
//! The heredoc tests (the rules of `parser_heredoc_test.go`, with cases of our own) always run.

use std::fs;
use std::path::{Path, PathBuf};

use super::heredoc::{self, Heredoc};
use super::instructions::{Node, parse_words};
use super::lines::{self, RawInstruction};
use super::{DockerfileError, is_space};

/// BuildKit's `frontend/dockerfile/parser` folder, from `BUILDKIT_PARSER_TESTDATA`.
fn testdata() -> PathBuf {
    let dir = std::env::var_os("BUILDKIT_PARSER_TESTDATA").unwrap_or_else(|| {
        panic!("set BUILDKIT_PARSER_TESTDATA to BuildKit's frontend/dockerfile/parser folder")
    });
    PathBuf::from(dir)
}

fn cases(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().to_string_lossy().into_owned(), e.path())
        })
        .collect();
    out.sort();
    out
}

/// Go's `strconv.Quote` (and the `%q` of `fmt`), for valid UTF-8.
fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", u32::from(c)));
            }
            // unicode.IsPrint: no control or format characters, and U+0020 the only space.
            c if c == ' ' || !(c.is_whitespace() || c.is_control() || c == '\u{feff}') => {
                out.push(c);
            }
            c if u32::from(c) < 0x10000 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push_str(&format!("\\U{:08x}", u32::from(c))),
        }
    }
    out.push('"');
    out
}

/// `reWhitespace.Split(s, n)`: `[\t\v\f\r ]+`.
fn split_token_space(s: &str, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = s;
    while out.len() + 1 < n {
        let Some(start) = rest.find(super::is_token_space) else {
            break;
        };
        out.push(rest[..start].to_owned());
        rest = rest[start..].trim_start_matches(super::is_token_space);
    }
    out.push(rest.to_owned());
    out
}

/// `parseJSON`: `Ok(Some(strings))` for a JSON array of strings, `Ok(None)` for something
/// that is not a JSON array, `Err` for an array with other elements.
fn parse_json(rest: &str) -> Result<Option<Vec<String>>, String> {
    let rest = rest.trim_start_matches(is_space);
    if !rest.starts_with('[') {
        return Ok(None);
    }
    let Ok(values) = serde_json::from_str::<Vec<serde_json::Value>>(rest) else {
        return Ok(None);
    };
    values
        .into_iter()
        .map(|v| match v {
            serde_json::Value::String(s) => Ok(s),
            other => Err(format!("not a string: {other}")),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// `parseMaybeJSON`, from the arguments as we split them and our JSON decision.
fn maybe_json(node: &Node) -> Vec<String> {
    if node.args.is_empty() {
        return Vec::new();
    }
    if node.json {
        return parse_json(&node.args).unwrap().unwrap();
    }
    vec![node.args.clone()]
}

/// `parseNameVal` (ENV, LABEL): test-only, the image search never reads them.
fn name_val(node: &Node) -> Vec<String> {
    let words = parse_words(&node.args, node.escape);
    let Some(first) = words.first() else {
        return Vec::new();
    };
    if !first.contains('=') {
        let parts = split_token_space(&node.args, 2);
        assert_eq!(parts.len(), 2, "{} must have two arguments", node.cmd);
        return vec![parts[0].clone(), parts[1].clone(), String::new()];
    }
    let mut out = Vec::new();
    for word in words {
        let (key, value) = word.split_once('=').expect("name=value");
        out.extend([key.to_owned(), value.to_owned(), "=".to_owned()]);
    }
    out
}

/// `parseHealthConfig`: test-only. Upstream looks at bytes as runes; so does this.
fn health(node: &Node) -> Vec<String> {
    let rest = node.args.as_bytes();
    let is_space_byte =
        |b: u8| matches!(b, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ' | 0x85 | 0xa0);
    let sep = rest
        .iter()
        .position(|&b| is_space_byte(b))
        .unwrap_or(rest.len());
    let next = rest[sep..]
        .iter()
        .position(|&b| !is_space_byte(b))
        .map_or(rest.len(), |p| sep + p);
    if sep == 0 {
        return Vec::new();
    }
    let typ = String::from_utf8_lossy(&rest[..sep]).into_owned();
    let cmd = String::from_utf8_lossy(&rest[next..]).into_owned();
    let mut out = vec![typ];
    if !cmd.is_empty() {
        match parse_json(&cmd).unwrap() {
            Some(list) => out.extend(list),
            None => out.push(cmd),
        }
    }
    out
}

/// `Node.Dump()` of one instruction.
fn dump(node: &Node) -> String {
    let mut out = node.cmd.clone();
    if !node.flags.is_empty() {
        let flags: Vec<String> = node.flags.iter().map(|f| go_quote(f)).collect();
        out.push_str(&format!(" [{}]", flags.join(" ")));
    }
    let values: Vec<String> = match node.cmd.as_str() {
        "add" | "copy" | "volume" if node.json => maybe_json(node),
        "add" | "copy" | "volume" | "expose" | "from" => node
            .whitespace_words()
            .into_iter()
            .map(str::to_owned)
            .collect(),
        "cmd" | "entrypoint" | "run" | "shell" => maybe_json(node),
        "arg" => node.quoted_words(),
        "env" | "label" => name_val(node),
        "healthcheck" => health(node),
        "maintainer" | "stopsignal" | "user" | "workdir" => {
            if node.args.is_empty() {
                Vec::new()
            } else {
                vec![node.args.clone()]
            }
        }
        "onbuild" => {
            if let Some(child) = &node.child {
                out.push_str(&format!(" ({})", dump(child)));
            }
            Vec::new()
        }
        // parseIgnore: an empty node.
        _ => vec![String::new()],
    };
    for value in values {
        out.push(' ');
        out.push_str(&go_quote(&value));
    }
    out
}

fn split(content: &str) -> Result<Vec<RawInstruction>, DockerfileError> {
    lines::split(content).map(|(instructions, _)| instructions)
}

/// `TestParseCases`: every `testfiles/<case>/Dockerfile` dumps as its `result`.
#[test]
#[ignore = "needs BUILDKIT_PARSER_TESTDATA (see the module documentation)"]
fn buildkit_testfiles_parse_to_their_results() {
    let cases = cases(&testdata().join("testfiles"));
    assert!(cases.len() >= 30, "{cases:?}");
    for (name, dir) in cases {
        let content = fs::read_to_string(dir.join("Dockerfile")).unwrap();
        let want = fs::read_to_string(dir.join("result")).unwrap();
        let instructions = split(&content).unwrap_or_else(|e| panic!("{name}: {e}"));
        let got: String = instructions
            .iter()
            .map(|i| format!("({})\n", dump(&i.node)))
            .collect();
        assert_eq!(got, want, "testfiles/{name}");
    }
}

/// `TestParseErrorCases`, for what the image search checks. ENV arguments and the elements
/// of JSON arrays do not decide which images a build needs and are not checked (see `parse`'s
/// documentation): `env_no_value` parses, and `shykes-nested-json` (a lone `CMD`) is refused
/// for having no stage.
#[test]
#[ignore = "needs BUILDKIT_PARSER_TESTDATA (see the module documentation)"]
fn buildkit_negative_testfiles() {
    let cases = cases(&testdata().join("testfiles-negative"));
    let names: Vec<&str> = cases.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "empty_dockerfile",
            "env_no_value",
            "only_comments",
            "shykes-nested-json"
        ]
    );
    for (name, dir) in &cases {
        let content = fs::read_to_string(dir.join("Dockerfile")).unwrap();
        let result = super::parse(&content, &Default::default());
        match name.as_str() {
            "env_no_value" => assert!(result.is_ok(), "{name}: {result:?}"),
            "shykes-nested-json" => assert!(
                matches!(result, Err(DockerfileError::NoBuildStage { line: 1, .. })),
                "{name}: {result:?}"
            ),
            _ => assert_eq!(result, Err(DockerfileError::NoInstructions), "{name}"),
        }
    }
}

/// `TestParseIncludesLineNumbers`.
#[test]
#[ignore = "needs BUILDKIT_PARSER_TESTDATA (see the module documentation)"]
fn buildkit_line_numbers() {
    let content = fs::read_to_string(testdata().join("testfile-line/Dockerfile")).unwrap();
    let got: Vec<(usize, usize)> = split(&content)
        .unwrap()
        .iter()
        .map(|i| (i.line, i.end_line))
        .collect();
    assert_eq!(got, [(5, 5), (11, 12), (17, 31)]);
}

/// One expected heredoc: name, body, expand, chomp, file descriptor.
type Want = (&'static str, &'static str, bool, bool, u64);

fn got(h: &Heredoc) -> (String, String, bool, bool, u64) {
    (
        h.name.clone(),
        h.content.clone(),
        h.expand,
        h.chomp,
        h.file_descriptor,
    )
}

/// `Parse` with heredocs: which instruction opens which heredocs, and their bodies, exactly
/// as BuildKit's `Node.Heredocs`.
#[test]
fn heredocs_are_extracted_like_buildkit() {
    let content = "\
FROM alpine
RUN <<NONE
NONE
RUN 5<<FD
x
FD
RUN echo \"<<QUOTED\" '<<SINGLE'
COPY <<KEEP /k
  two spaces
\ta tab
KEEP
RUN <<-STRIP
\tbody $HOME
\t\tSTRIP
RUN <<-\"RAW\"
\t$HOME stays
RAW
ADD <<ONE <<'TWO' /dir/
1
ONE
2
TWO
RUN <<NEST
# a comment line
RUN inner
NEST
RUN <<na'me'
n
name
RUN <<na\\'me
n
na'me
RUN <<'spaced name'
s
spaced name
RUN <<$VAR
$VAR
RUN <<\tTABBED  | sh
t
TABBED
USER <<NOTHERE
NOTHERE
RUN [\"sh\", \"-c\", \"cat <<JSON\"]
";
    let want: &[(&str, &[Want])] = &[
        ("RUN <<NONE", &[("NONE", "", true, false, 0)]),
        ("RUN 5<<FD", &[("FD", "x\n", true, false, 5)]),
        ("RUN echo \"<<QUOTED\"", &[]),
        (
            "COPY <<KEEP",
            &[("KEEP", "  two spaces\n\ta tab\n", true, false, 0)],
        ),
        (
            "RUN <<-STRIP",
            &[("STRIP", "\tbody $HOME\n", true, true, 0)],
        ),
        (
            "RUN <<-\"RAW\"",
            &[("RAW", "\t$HOME stays\n", false, true, 0)],
        ),
        (
            "ADD <<ONE <<'TWO'",
            &[
                ("ONE", "1\n", true, false, 0),
                ("TWO", "2\n", false, false, 0),
            ],
        ),
        (
            "RUN <<NEST",
            &[("NEST", "# a comment line\nRUN inner\n", true, false, 0)],
        ),
        ("RUN <<na'me'", &[("name", "n\n", false, false, 0)]),
        ("RUN <<na\\'me", &[("na'me", "n\n", true, false, 0)]),
        (
            "RUN <<'spaced name'",
            &[("spaced name", "s\n", false, false, 0)],
        ),
        ("RUN <<$VAR", &[("$VAR", "", true, false, 0)]),
        ("RUN <<\\tTABBED", &[("TABBED", "t\n", true, false, 0)]),
        ("USER <<NOTHERE", &[]),
        ("NOTHERE", &[]),
        ("RUN [json]", &[]),
    ];
    let instructions = split(content).unwrap();
    assert_eq!(instructions.len(), want.len() + 1);
    for (ins, (label, docs)) in instructions[1..].iter().zip(want) {
        let got: Vec<_> = ins.heredocs.iter().map(got).collect();
        let want: Vec<_> = docs
            .iter()
            .map(|&(n, c, e, ch, fd)| (n.to_owned(), c.to_owned(), e, ch, fd))
            .collect();
        assert_eq!(got, want, "{label}");
    }
    // Each instruction ends on its last terminator line.
    let ends: Vec<usize> = instructions.iter().map(|i| i.end_line).collect();
    assert_eq!(
        ends,
        [
            1, 3, 6, 7, 11, 14, 17, 22, 26, 29, 32, 35, 37, 40, 41, 42, 43
        ]
    );
}

/// `ParseHeredoc` on one word: `^(\d*)<<(-?)\s*([^<]*)$`, a single-word name, and an error
/// for an unterminated quote.
#[test]
fn heredoc_words_like_buildkit() {
    let valid = [
        ("<<END", "END", false),
        ("<<'END'", "END", false),
        ("<<\"END\"", "END", false),
        ("<<E\"N\"D", "END", false),
        ("<<-END", "END", true),
        ("<<-'END'", "END", true),
        ("<<  END", "END", false),
        ("<<-\tEND", "END", true),
        ("9<<END", "END", false),
    ];
    for (word, name, chomp) in valid {
        let doc = heredoc::parse(word)
            .unwrap()
            .unwrap_or_else(|| panic!("{word}"));
        assert_eq!((doc.name.as_str(), doc.chomp), (name, chomp), "{word}");
    }
    for word in ["<<'END", "<<END\"", "<< \"END"] {
        assert!(heredoc::parse(word).is_err(), "{word}");
    }
    for word in [
        "",
        "END",
        "<<",
        "<<-",
        "<< ",
        "<END",
        "<<<END",
        "<<END cat",
        "x<<END",
        "<<A<<B",
    ] {
        assert_eq!(heredoc::parse(word), Ok(None), "{word}");
    }
}

/// `heredocsFromLine`: the lexer keeps blanks right after `<<` in the word (moby/buildkit#5817),
/// not blanks after `<<-`: `RUN <<- END` opens no heredoc in BuildKit (its own test lists that
/// line but checks nothing when no heredoc is found), and `<< -END` is named `-END`.
#[test]
fn heredocs_from_line_like_buildkit() {
    let cases: &[(&str, &[&str])] = &[
        ("RUN <<END", &["END"]),
        ("RUN <<-END", &["END"]),
        ("RUN << END", &["END"]),
        ("RUN <<\t END", &["END"]),
        ("RUN 1<< END", &["END"]),
        ("RUN <<- END", &[]),
        ("RUN << -END", &["-END"]),
        ("RUN << 'A B' <<C", &["A B", "C"]),
        ("RUN '<<END'", &[]),
        ("RUN \"<< END\"", &[]),
        ("RUN cat<<END", &[]),
    ];
    for (line, want) in cases {
        let got: Vec<String> = heredoc::from_line(line)
            .unwrap()
            .into_iter()
            .map(|d| d.name)
            .collect();
        assert_eq!(got, *want, "{line}");
    }
}
