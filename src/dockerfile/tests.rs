//! Unit tests of the Dockerfile parser: the shell lexer, lines and directives, heredocs,
//! stages and image uses, errors, and properties (no panics on arbitrary input).

use super::*;
use crate::reference::ReferenceError;
use proptest::prelude::*;

fn args(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect()
}

fn parse_with(content: &str, build_args: &[(&str, &str)]) -> Result<Dockerfile, DockerfileError> {
    let map = args(build_args);
    parse(content, &BuildContextArgs::new(&map))
}

fn ok(content: &str) -> Dockerfile {
    parse_with(content, &[]).unwrap_or_else(|e| panic!("should parse: {e}\n{content}"))
}

fn err(content: &str) -> DockerfileError {
    parse_with(content, &[]).expect_err(content)
}

/// The canonical references of `images`, with their lines.
fn uses(d: &Dockerfile) -> Vec<(String, usize)> {
    d.images
        .iter()
        .map(|u| (u.reference.to_string(), u.line))
        .collect()
}

fn expand(word: &str, env: &[(&str, &str)]) -> Result<String, ExpansionError> {
    shell::process(word, &args(env), '\\', shell::Options::default()).map(|o| o.result)
}

fn words(word: &str, env: &[(&str, &str)]) -> Vec<String> {
    shell::process(word, &args(env), '\\', shell::Options::default())
        .map(|o| o.words)
        .unwrap_or_default()
}

// ---- shell/lex.go (ported from lex_test.go and envVarTest) ----

#[test]
fn lex_plain_and_braced_variables() {
    let env = [("PWD", "/home"), ("SHELL", "bash"), ("KOREAN", "한국어")];
    assert_eq!(expand("hello", &env).unwrap(), "hello");
    assert_eq!(expand("he'll'o", &env).unwrap(), "hello");
    assert_eq!(expand("he\"ll\"o", &env).unwrap(), "hello");
    assert_eq!(expand("$PWD", &env).unwrap(), "/home");
    assert_eq!(expand("${PWD}", &env).unwrap(), "/home");
    assert_eq!(expand("'$PWD'", &env).unwrap(), "$PWD");
    assert_eq!(expand("\"$PWD\"", &env).unwrap(), "/home");
    assert_eq!(expand("he\\$PWD", &env).unwrap(), "he$PWD");
    assert_eq!(expand("\\${PWD}", &env).unwrap(), "${PWD}");
    assert_eq!(expand("$KOREAN", &env).unwrap(), "한국어");
    assert_eq!(expand("${KOREAN}x", &env).unwrap(), "한국어x");
    assert_eq!(expand("$PWD-x", &env).unwrap(), "/home-x");
    assert_eq!(expand("$UNSET", &env).unwrap(), "");
    assert_eq!(expand("a$", &env).unwrap(), "a$");
    assert_eq!(expand("$.x", &env).unwrap(), "$.x");
}

#[test]
fn lex_default_and_alternative_distinguish_unset_and_empty() {
    let env = [("EMPTY", ""), ("SET", "v")];
    assert_eq!(expand("${SET:-d}", &env).unwrap(), "v");
    assert_eq!(expand("${EMPTY:-d}", &env).unwrap(), "d");
    assert_eq!(expand("${UNSET:-d}", &env).unwrap(), "d");
    assert_eq!(expand("${SET-d}", &env).unwrap(), "v");
    assert_eq!(expand("${EMPTY-d}", &env).unwrap(), "");
    assert_eq!(expand("${UNSET-d}", &env).unwrap(), "d");
    assert_eq!(expand("${SET:+a}", &env).unwrap(), "a");
    assert_eq!(expand("${EMPTY:+a}", &env).unwrap(), "");
    assert_eq!(expand("${UNSET:+a}", &env).unwrap(), "");
    assert_eq!(expand("${SET+a}", &env).unwrap(), "a");
    assert_eq!(expand("${EMPTY+a}", &env).unwrap(), "a");
    assert_eq!(expand("${UNSET+a}", &env).unwrap(), "");
}

#[test]
fn lex_required_variables() {
    let env = [("EMPTY", ""), ("SET", "v")];
    assert_eq!(expand("${SET:?e}", &env).unwrap(), "v");
    assert_eq!(expand("${EMPTY?e}", &env).unwrap(), "");
    let e = expand("x${UNSET:?must be set}y", &env).unwrap_err();
    assert_eq!(
        e,
        ExpansionError::Required {
            expr: "${UNSET:?must be set}".into(),
            name: "UNSET".into(),
            unset: true,
            message: "must be set".into(),
        }
    );
    match expand("${EMPTY:?}", &env).unwrap_err() {
        ExpansionError::Required { unset, message, .. } => {
            assert!(!unset);
            assert_eq!(message, "");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        expand("${UNSET?}", &env),
        Err(ExpansionError::Required { unset: true, .. })
    ));
}

#[test]
fn lex_nested_words_in_defaults() {
    let env = [("A", "a"), ("B", "")];
    assert_eq!(expand("${X:-${A}}", &env).unwrap(), "a");
    assert_eq!(expand("${X:-${B:-${A}-z}}", &env).unwrap(), "a-z");
    assert_eq!(expand("${A:+pre-${A}}", &env).unwrap(), "pre-a");
    assert_eq!(expand("${X:-'quoted }'}", &env).unwrap(), "quoted }");
    assert_eq!(expand("${X:-a\\}b}", &env).unwrap(), "a}b");
}

#[test]
fn lex_syntax_errors() {
    assert_eq!(expand("${", &[]), Err(ExpansionError::MissingBrace));
    assert_eq!(expand("${A", &[]), Err(ExpansionError::MissingBrace));
    assert_eq!(expand("${A:-x", &[]), Err(ExpansionError::MissingBrace));
    assert_eq!(expand("${}", &[]), Err(ExpansionError::BadSubstitution));
    assert_eq!(expand("${:x}", &[]), Err(ExpansionError::BadSubstitution));
    assert_eq!(expand("${{x}", &[]), Err(ExpansionError::BadSubstitution));
    assert_eq!(
        expand("${A:x}", &[]),
        Err(ExpansionError::UnsupportedModifier(":x".into()))
    );
    assert_eq!(
        expand("${A:#x}", &[]),
        Err(ExpansionError::UnsupportedModifier(":#".into()))
    );
    assert_eq!(
        expand("'abc", &[]),
        Err(ExpansionError::Unterminated("single-quote"))
    );
    assert_eq!(
        expand("\"abc", &[]),
        Err(ExpansionError::Unterminated("double-quote"))
    );
    assert_eq!(expand("${A/x", &[]), Err(ExpansionError::MissingSlash));
}

#[test]
fn lex_nesting_is_bounded() {
    let deep = format!("{}x{}", "${A:-".repeat(200), "}".repeat(200));
    assert_eq!(expand(&deep, &[]), Err(ExpansionError::TooDeep));
    let fine = format!("{}x{}", "${A:-".repeat(10), "}".repeat(10));
    assert_eq!(expand(&fine, &[]).unwrap(), "x");
}

#[test]
fn lex_escapes_inside_double_quotes() {
    assert_eq!(expand("\"a\\\"b\"", &[]).unwrap(), "a\"b");
    assert_eq!(expand("\"a\\nb\"", &[]).unwrap(), "a\\nb");
    assert_eq!(expand("\"\\$X\"", &[("X", "1")]).unwrap(), "$X");
    assert_eq!(expand("a\\", &[]).unwrap(), "a");
    // The backtick escape token.
    let out = shell::process("a`$X", &args(&[("X", "1")]), '`', shell::Options::default());
    assert_eq!(out.unwrap().result, "a$X");
}

#[test]
fn lex_prefix_and_suffix_removal() {
    let env = [("V", "abc.def.ghi")];
    assert_eq!(expand("${V#*.}", &env).unwrap(), "def.ghi");
    assert_eq!(expand("${V##*.}", &env).unwrap(), "ghi");
    assert_eq!(expand("${V%.*}", &env).unwrap(), "abc.def");
    assert_eq!(expand("${V%%.*}", &env).unwrap(), "abc");
    assert_eq!(expand("${V#x}", &env).unwrap(), "abc.def.ghi");
    assert_eq!(expand("${V#a?c}", &env).unwrap(), ".def.ghi");
    assert_eq!(expand("${V%\\*}", &[("V", "a*")]).unwrap(), "a");
    assert!(matches!(
        expand("${V%\\x}", &env),
        Err(ExpansionError::InvalidPattern { .. })
    ));
}

#[test]
fn lex_pattern_replacement() {
    let env = [("V", "a-b-c")];
    assert_eq!(expand("${V/-/_}", &env).unwrap(), "a_b-c");
    assert_eq!(expand("${V//-/_}", &env).unwrap(), "a_b_c");
    assert_eq!(expand("${V/-*/}", &env).unwrap(), "a");
    assert_eq!(expand("${V//?/x}", &env).unwrap(), "xxxxx");
    assert_eq!(expand("${V/x/y}", &env).unwrap(), "a-b-c");
    // Go's ReplaceAllString: an empty pattern matches between every character.
    assert_eq!(expand("${V///.}", &[("V", "ab")]).unwrap(), ".a.b.");
    assert_eq!(expand("${UNSET//a/b}", &env).unwrap(), "");
}

#[test]
fn lex_word_splitting() {
    assert_eq!(words("a b  c", &[]), ["a", "b", "c"]);
    assert_eq!(words("'a b' c", &[]), ["a b", "c"]);
    assert_eq!(words("$X c", &[("X", "1 2")]), ["1", "2", "c"]);
    assert_eq!(words("\"$X\" c", &[("X", "1 2")]), ["1 2", "c"]);
}

// ---- parser.go: lines, directives, comments, continuations, heredocs ----

#[test]
fn simple_from() {
    let d = ok("FROM ubuntu:22.04\nRUN echo hi\n");
    assert_eq!(uses(&d), [("docker.io/library/ubuntu:22.04".to_owned(), 1)]);
    assert_eq!(d.stages.len(), 1);
    assert_eq!(d.images[0].raw, "ubuntu:22.04");
    assert_eq!(d.images[0].kind, UseKind::From);
}

#[test]
fn default_tag_is_applied() {
    let d = ok("FROM alpine");
    assert_eq!(
        d.images[0].reference.to_string(),
        "docker.io/library/alpine:latest"
    );
    assert_eq!(d.images[0].raw, "alpine");
}

#[test]
fn instructions_are_case_insensitive() {
    let d = ok("from alpine AS Build\nFrOm build\ncopy --from=BUILD /a /b\n");
    assert_eq!(d.stages[0].name.as_deref(), Some("build"));
    assert_eq!(d.stages[1].base, StageBase::Stage(0));
    assert_eq!(d.images.len(), 1);
}

#[test]
fn comments_and_blank_lines_count_for_line_numbers() {
    let d = ok("# a comment\n\n   # indented comment\nFROM alpine\n\nFROM debian:12\n");
    assert_eq!(
        uses(&d),
        [
            ("docker.io/library/alpine:latest".to_owned(), 4),
            ("docker.io/library/debian:12".to_owned(), 6),
        ]
    );
}

#[test]
fn line_continuation_joins_and_keeps_the_start_line() {
    let d = ok("FROM \\\n  alpine:3.20 \\\n  AS base\nFROM base\n");
    assert_eq!(d.stages[0].line, 1);
    assert_eq!(d.stages[0].name.as_deref(), Some("base"));
    assert_eq!(d.stages[1].line, 4);
    assert_eq!(d.stages[1].base, StageBase::Stage(0));
}

#[test]
fn continuation_skips_comments_and_empty_lines() {
    let d = ok("FROM \\\n# comment inside\n\n  alpine\nRUN x\n");
    assert_eq!(
        uses(&d),
        [("docker.io/library/alpine:latest".to_owned(), 1)]
    );
}

#[test]
fn escaped_escape_token_is_not_a_continuation() {
    // `RUN echo \\` ends the instruction; the FROM on the next line is its own.
    let d = ok("FROM alpine\nRUN echo \\\\\nFROM debian\n");
    assert_eq!(d.stages.len(), 2);
    assert_eq!(d.stages[1].line, 3);
}

#[test]
fn backtick_escape_directive() {
    let d = ok(
        "# escape=`\nFROM `\n  mcr.microsoft.com/windows/servercore:ltsc2022\nRUN dir c:\\\nFROM alpine\n",
    );
    assert_eq!(
        uses(&d),
        [
            (
                "mcr.microsoft.com/windows/servercore:ltsc2022".to_owned(),
                2
            ),
            ("docker.io/library/alpine:latest".to_owned(), 5),
        ]
    );
}

#[test]
fn directives_only_at_the_top_and_keys_case_insensitive() {
    // After a comment, `# escape=` is just a comment: `\` stays the escape token.
    let d = ok("# hello\n# escape=`\nFROM alpine\nRUN a `\nFROM debian\n");
    assert_eq!(d.stages.len(), 2);
    let d = ok("# ESCAPE = `\nFROM `\nalpine\n");
    assert_eq!(d.stages.len(), 1);
    let d = ok("#Syntax=docker/dockerfile:1.7\nFROM alpine\n");
    assert_eq!(
        d.syntax.unwrap().reference.to_string(),
        "docker.io/docker/dockerfile:1.7"
    );
}

#[test]
fn directive_errors() {
    let e = err("# escape=x\nFROM alpine");
    assert_eq!(
        e,
        DockerfileError::Directive {
            line: 1,
            source: DirectiveError::InvalidEscape { value: "x".into() }
        }
    );
    assert_eq!(
        e.to_string(),
        "line 1: invalid escape token 'x' does not match ` or \\: write `# escape=\\` or `# escape=``"
    );
    let e = err("# escape=\\\n# escape=`\nFROM alpine");
    assert!(
        matches!(
            &e,
            DockerfileError::Directive {
                line: 2,
                source: DirectiveError::Repeated { name }
            } if name == "escape"
        ),
        "{e}"
    );
    assert!(
        e.to_string().contains("only one escape parser directive"),
        "{e}"
    );
}

#[test]
fn syntax_directive_is_an_image_use() {
    let d = ok("# syntax=docker/dockerfile:1\nFROM alpine\n");
    let s = d.syntax.clone().unwrap();
    assert_eq!(s.kind, UseKind::Syntax);
    assert_eq!(s.line, 1);
    assert_eq!(s.reference.to_string(), "docker.io/docker/dockerfile:1");
    assert_eq!(d.images[0], s);
    assert_eq!(d.images.len(), 2);
}

#[test]
fn syntax_directive_forms() {
    let d =
        ok("#!/usr/bin/env buildx\n# syntax = docker/dockerfile:1.4 --some-flag\nFROM alpine\n");
    let s = d.syntax.unwrap();
    assert_eq!((s.raw.as_str(), s.line), ("docker/dockerfile:1.4", 2));
    let d = ok("// syntax=docker/dockerfile-upstream:master\nFROM alpine\n");
    assert_eq!(d.syntax.unwrap().raw, "docker/dockerfile-upstream:master");
    // Not at the top: a plain comment.
    assert!(
        ok("FROM alpine\n# syntax=docker/dockerfile:1\n")
            .syntax
            .is_none()
    );
    assert!(
        ok("\n# syntax=docker/dockerfile:1\nFROM alpine\n")
            .syntax
            .is_none()
    );
}

#[test]
fn buildkit_syntax_build_arg_overrides_the_directive() {
    let d = parse_with(
        "# syntax=docker/dockerfile:1\nFROM alpine\n",
        &[("BUILDKIT_SYNTAX", "docker/dockerfile:1.9 extra")],
    )
    .unwrap();
    let s = d.syntax.unwrap();
    assert_eq!((s.raw.as_str(), s.line), ("docker/dockerfile:1.9", 0));
}

#[test]
fn invalid_syntax_reference_is_an_error_with_line() {
    let e = err("# syntax=Docker/Dockerfile\nFROM alpine\n");
    assert!(
        matches!(e, DockerfileError::InvalidReference { line: 1, .. }),
        "{e}"
    );
}

#[test]
fn byte_order_mark_and_crlf() {
    let d = ok("\u{feff}# escape=`\r\nFROM `\r\n  alpine\r\nFROM debian\r\n");
    assert_eq!(
        uses(&d),
        [
            ("docker.io/library/alpine:latest".to_owned(), 2),
            ("docker.io/library/debian:latest".to_owned(), 4),
        ]
    );
}

#[test]
fn heredoc_bodies_are_not_instructions() {
    let content = "FROM alpine\nRUN <<EOF\nFROM evil:latest\nEOF\nCOPY <<-EOT /x\n\tFROM worse\n\tEOT\nFROM debian\n";
    let d = ok(content);
    assert_eq!(
        uses(&d),
        [
            ("docker.io/library/alpine:latest".to_owned(), 1),
            ("docker.io/library/debian:latest".to_owned(), 8),
        ]
    );
}

#[test]
fn heredoc_quoted_names_and_several_per_line() {
    let d = ok("FROM alpine\nRUN <<'A' cat - <<\"B\"\nx\nA\ny\nB\nFROM debian\n");
    assert_eq!(d.stages[1].line, 7);
}

#[test]
fn heredoc_json_form_and_other_instructions_do_not_open_heredocs() {
    let d = ok(
        "FROM alpine\nRUN [\"sh\", \"-c\", \"cat <<EOF\"]\nFROM debian\nENV X=<<EOF\nFROM busybox\n",
    );
    assert_eq!(d.stages.len(), 3);
}

/// Issue 17: BuildKit (Dockerfile frontend 1.16, moby/buildkit#5817) accepts blanks between
/// `<<` and the heredoc name. A Python body is not read as instructions: no `FROM x` stage,
/// no image to pull, and no error from its lines.
#[test]
fn issue17_heredoc_with_space_after_operator() {
    let content = "\
FROM python:3.12-slim
RUN << EOF python3
import sys
FROM = {\"x\": 1}
print(FROM, file=sys.stderr)
FROM x
EOF
RUN python3 - << \"PY\"
FROM busybox AS evil
PY
COPY <<  'CFG'  /etc/app.cfg
FROM debian
CFG
RUN <<\tTAB
FROM alpine
TAB
FROM scratch
";
    let d = ok(content);
    assert_eq!(d.stages.len(), 2, "{:?}", d.stages);
    assert_eq!(d.stages[1].line, 17);
    assert_eq!(d.stages[1].base, StageBase::Scratch);
    assert_eq!(
        uses(&d),
        [("docker.io/library/python:3.12-slim".to_owned(), 1)]
    );
    // An unterminated one is still an error, naming the instruction.
    assert_eq!(
        err("FROM alpine\nRUN << EOF\necho hi\n"),
        DockerfileError::UnterminatedHeredoc {
            line: 2,
            name: "EOF".into()
        }
    );
}

/// Issue 17: `<<-` strips leading tabs from the terminator line; the body, tab-indented, is
/// not parsed. BuildKit keeps only the blanks right after `<<` with the operator, so
/// `<<- EOF` (a blank after the `-`) is *not* a heredoc there: its lines stay instructions,
/// and `<< -EOF` is a heredoc named `-EOF`. Both as BuildKit does.
#[test]
fn issue17_dash_heredoc_with_tabs() {
    let d =
        ok("FROM alpine\nRUN <<-EOF\n\tFROM x\n\t\tEOF\nRUN << -EOF\nFROM y\n-EOF\nFROM debian\n");
    assert_eq!(d.stages.len(), 2);
    assert_eq!(d.stages[1].line, 8);
    assert_eq!(
        uses(&d),
        [
            ("docker.io/library/alpine:latest".to_owned(), 1),
            ("docker.io/library/debian:latest".to_owned(), 8),
        ]
    );
    // `<< -EOF` does not strip tabs: a tab-indented `-EOF` does not end it.
    assert!(matches!(
        err("FROM alpine\nRUN << -EOF\n\t-EOF\n"),
        DockerfileError::UnterminatedHeredoc { line: 2, .. }
    ));
    let d = ok("FROM alpine\nRUN <<- EOF\n\tFROM x\n\tEOF\n");
    assert_eq!(d.stages.len(), 2);
    assert_eq!(d.stages[1].line, 3);
}

/// Issue 17: several heredocs on one line, with and without blanks and quotes, are read in
/// order, each body up to its own terminator.
#[test]
fn issue17_multiple_heredocs_on_one_line() {
    let content = "\
FROM alpine
COPY <<-\"B\" <<C << A /dst/
\tFROM b
\tB
FROM c
C
FROM a
A
RUN --mount=type=cache,target=/c cat <<EOF1 - << EOF2 | sh
B
EOF1
FROM e
EOF2
FROM debian
";
    let d = ok(content);
    assert_eq!(d.stages.len(), 2, "{:?}", d.stages);
    assert_eq!(d.stages[1].line, 14);
    assert_eq!(
        uses(&d),
        [
            ("docker.io/library/alpine:latest".to_owned(), 1),
            ("docker.io/library/debian:latest".to_owned(), 14),
        ]
    );
}

#[test]
fn unterminated_heredoc() {
    let e = err("FROM alpine\nRUN <<EOF\necho hi\n");
    assert_eq!(
        e,
        DockerfileError::UnterminatedHeredoc {
            line: 2,
            name: "EOF".into()
        }
    );
}

#[test]
fn deeply_nested_onbuild_does_not_recurse() {
    let content = format!("FROM alpine\n{}RUN x\n", "ONBUILD ".repeat(200_000));
    assert_eq!(ok(&content).stages.len(), 1);
}

#[test]
fn onbuild_heredoc_and_onbuild_from_are_ignored() {
    let d =
        ok("FROM alpine\nONBUILD RUN <<EOF\nFROM nope\nEOF\nONBUILD COPY --from=golang /a /b\n");
    assert_eq!(d.images.len(), 1);
}

// ---- instructions/parse.go: FROM ----

#[test]
fn from_argument_errors() {
    assert_eq!(err("FROM\n"), DockerfileError::FromWithoutImage { line: 1 });
    assert_eq!(
        err("FROM --platform=linux/amd64\n"),
        DockerfileError::FromWithoutImage { line: 1 }
    );
    assert!(matches!(
        err("FROM a b\n"),
        DockerfileError::FromArguments { line: 1, .. }
    ));
    assert!(matches!(
        err("FROM a to b\n"),
        DockerfileError::FromArguments { .. }
    ));
    assert!(matches!(
        err("FROM a AS 1b\n"),
        DockerfileError::InvalidStageName { .. }
    ));
    assert!(matches!(
        err("FROM a AS b/c\n"),
        DockerfileError::InvalidStageName { .. }
    ));
    let d = ok("FROM a as B.c-d_e\n");
    assert_eq!(d.stages[0].name.as_deref(), Some("b.c-d_e"));
}

#[test]
fn stage_references_and_scratch() {
    let d = ok("FROM golang:1.22 AS build\nFROM scratch\nFROM build AS test\nFROM test\n");
    assert_eq!(
        d.stages[0].base,
        StageBase::Image(Reference::parse("golang:1.22").unwrap())
    );
    assert_eq!(d.stages[1].base, StageBase::Scratch);
    assert_eq!(d.stages[2].base, StageBase::Stage(0));
    assert_eq!(d.stages[3].base, StageBase::Stage(2));
    assert_eq!(uses(&d), [("docker.io/library/golang:1.22".to_owned(), 1)]);
}

#[test]
fn from_names_only_earlier_stages_exactly() {
    // A later stage's name is an image; FROM matches the lowercased name exactly.
    let d = ok("FROM app\nFROM alpine AS app\nFROM app\n");
    assert_eq!(
        d.stages[0].base,
        StageBase::Image(Reference::parse("app").unwrap().with_default_tag())
    );
    assert_eq!(d.stages[2].base, StageBase::Stage(1));
    let e = err("FROM alpine AS app\nFROM App\n");
    assert!(
        matches!(
            e,
            DockerfileError::InvalidReference {
                line: 2,
                source: ReferenceError::Uppercase { .. }
            }
        ),
        "{e}"
    );
}

#[test]
fn registries_with_ports_and_digests() {
    let sha = "sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";
    let d = ok(&format!(
        "FROM localhost:5000/x\nFROM 127.0.0.1:5000/x:tag\nFROM alpine@{sha}\nFROM ghcr.io/o/r:1@{sha}\n"
    ));
    assert_eq!(
        uses(&d).into_iter().map(|u| u.0).collect::<Vec<_>>(),
        [
            "localhost:5000/x:latest".to_owned(),
            "127.0.0.1:5000/x:tag".to_owned(),
            format!("docker.io/library/alpine@{sha}"),
            format!("ghcr.io/o/r:1@{sha}"),
        ]
    );
}

#[test]
fn invalid_reference_names_the_line_and_input() {
    let e = err("FROM alpine\n\nFROM Ubuntu:22.04\n");
    assert!(matches!(
        e,
        DockerfileError::InvalidReference { line: 3, .. }
    ));
    assert!(e.to_string().starts_with("line 3: "), "{e}");
    assert!(e.to_string().contains("Ubuntu:22.04"), "{e}");
}

#[test]
fn instruction_before_from() {
    assert_eq!(
        err("RUN echo\nFROM alpine\n"),
        DockerfileError::NoBuildStage {
            line: 1,
            instruction: "RUN".into()
        }
    );
    // Unknown instructions are not judged (a custom frontend may define them).
    assert_eq!(ok("FOO bar\nFROM alpine\n").stages.len(), 1);
}

#[test]
fn empty_and_stageless_files() {
    assert_eq!(err(""), DockerfileError::NoInstructions);
    assert_eq!(err("# only a comment\n\n"), DockerfileError::NoInstructions);
    assert_eq!(err("ARG A=1\n"), DockerfileError::NoStages);
}

// ---- convert.go: meta ARGs, build args, platform args ----

#[test]
fn meta_arg_defaults_and_build_args() {
    let content = "ARG BASE=alpine\nARG VERSION=3.20\nFROM ${BASE}:${VERSION}\n";
    assert_eq!(uses(&ok(content))[0].0, "docker.io/library/alpine:3.20");
    let d = parse_with(content, &[("VERSION", "3.19")]).unwrap();
    assert_eq!(d.images[0].raw, "alpine:3.19");
}

#[test]
fn build_arg_applies_only_to_declared_args() {
    let content = "ARG VERSION=1\nFROM app:${VERSION}${SUFFIX}\n";
    let d = parse_with(content, &[("VERSION", "2"), ("SUFFIX", "-x")]).unwrap();
    assert_eq!(d.images[0].raw, "app:2");
}

#[test]
fn arg_without_default_is_unset() {
    let content = "ARG TAG\nFROM app:${TAG-unset}${TAG:-}x\n";
    assert_eq!(ok(content).images[0].raw, "app:unsetx");
    let d = parse_with(content, &[("TAG", "")]).unwrap();
    assert_eq!(d.images[0].raw, "app:x");
}

#[test]
fn meta_args_expand_earlier_args_and_build_args_are_verbatim() {
    let content = "ARG REGISTRY=ghcr.io\nARG IMAGE=${REGISTRY}/org/app\nFROM $IMAGE\n";
    assert_eq!(ok(content).images[0].raw, "ghcr.io/org/app");
    let d = parse_with(content, &[("IMAGE", "quay.io/x/$y")]);
    assert!(matches!(
        d,
        Err(DockerfileError::InvalidReference { line: 3, .. })
    ));
}

#[test]
fn several_args_per_line_and_quotes() {
    let content = "ARG A=\"my app\" B='x' C\nFROM alpine:${B}${C:-c}\n";
    assert_eq!(ok(content).images[0].raw, "alpine:xc");
    assert_eq!(
        err("ARG =1\nFROM a\n"),
        DockerfileError::BlankArgName { line: 1 }
    );
}

#[test]
fn args_after_from_do_not_affect_later_froms() {
    let d = ok("ARG V=1\nFROM a:$V\nARG V=2\nFROM b:$V\n");
    assert_eq!(d.images[1].raw, "b:1");
}

#[test]
fn automatic_platform_args_need_no_declaration() {
    let map = BTreeMap::new();
    let ctx = BuildContextArgs {
        build_args: &map,
        target_platform: "linux/arm64/v8".parse().unwrap(),
        build_platform: Platform::default(),
    };
    let d = parse(
        "FROM --platform=$BUILDPLATFORM golang:1.22 AS build\nFROM app-${TARGETOS}-${TARGETARCH}${TARGETVARIANT:+-}${TARGETVARIANT}:${TARGETPLATFORM//\\//_}\n",
        &ctx,
    )
    .unwrap();
    assert_eq!(d.stages[0].platform.as_deref(), Some("linux/amd64"));
    assert_eq!(d.images[0].platform.as_deref(), Some("linux/amd64"));
    assert_eq!(d.images[1].raw, "app-linux-arm64-v8:linux_arm64_v8");
    assert_eq!(d.images[1].platform, None);
}

#[test]
fn platform_args_are_overridden_by_build_args_and_meta_args() {
    let d = parse_with("FROM x:$TARGETARCH\n", &[("TARGETARCH", "riscv64")]).unwrap();
    assert_eq!(d.images[0].raw, "x:riscv64");
    let d = ok("ARG TARGETARCH\nFROM x:$TARGETARCH\n");
    assert_eq!(d.images[0].raw, "x:amd64");
    let d = ok("ARG TARGETARCH=s390x\nFROM x:$TARGETARCH\n");
    assert_eq!(d.images[0].raw, "x:s390x");
}

#[test]
fn required_arg_error_says_what_to_pass() {
    let e = err("FROM alpine\nARG X\nFROM ${BASE:?must_be_set}\n");
    assert_eq!(
        e.to_string(),
        "line 3: ${BASE:?must_be_set}: BASE is unset: must_be_set (pass --build-arg BASE=...)"
    );
    // In a quoted ARG default the message may have spaces...
    let e = err("ARG IMAGE=\"${BASE:?must be set}\"\nFROM $IMAGE\n");
    assert_eq!(
        e.to_string(),
        "line 1: ${BASE:?must be set}: BASE is unset: must be set (pass --build-arg BASE=...)"
    );
    // ...but FROM splits its words on whitespace before expanding, as BuildKit does.
    assert!(matches!(
        err("FROM ${BASE:?must be set}\n"),
        DockerfileError::FromArguments { line: 1, .. }
    ));
    let e = parse_with("ARG BASE\nFROM ${BASE:?}\n", &[("BASE", "")]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "line 2: ${BASE:?}: BASE is empty (pass --build-arg BASE=...)"
    );
}

#[test]
fn expansion_errors_carry_the_line() {
    let e = err("ARG A=1\n\nFROM ${A\n");
    assert!(
        matches!(
            e,
            DockerfileError::Expansion {
                line: 3,
                source: ExpansionError::MissingBrace,
                ..
            }
        ),
        "{e}"
    );
    let e = err("ARG A=${B\nFROM a\n");
    assert!(
        matches!(e, DockerfileError::Expansion { line: 1, .. }),
        "{e}"
    );
}

#[test]
fn blank_base_and_platform() {
    assert_eq!(
        err("ARG BASE\nFROM $BASE\n"),
        DockerfileError::BlankBaseName {
            line: 2,
            word: "$BASE".into()
        }
    );
    assert!(matches!(
        err("FROM --platform=$NOPE alpine\n"),
        DockerfileError::EmptyPlatform { line: 1, .. }
    ));
    // `--platform alpine`: the flag has no value (only `=` gives one), `alpine` is the image.
    assert_eq!(
        err("FROM --platform alpine\n"),
        DockerfileError::FlagWithoutValue {
            line: 1,
            instruction: "FROM".into(),
            flag: "platform".into()
        }
    );
    assert!(matches!(
        err("FROM --platform=linux/amd64\n"),
        DockerfileError::FromWithoutImage { .. }
    ));
    assert!(matches!(
        err("FROM --platform=a --platform=b alpine\n"),
        DockerfileError::DuplicateFlag { .. }
    ));
}

#[test]
fn escaped_dollar_is_literal() {
    let e = err("FROM app:\\$TAG\n");
    assert!(matches!(e, DockerfileError::InvalidReference { .. }), "{e}");
    assert!(e.to_string().contains("app:$TAG"), "{e}");
}

// ---- toCommand: COPY --from, RUN --mount from= ----

#[test]
fn copy_from_stage_index_and_image() {
    let d = ok(
        "FROM golang:1.22 AS build\nFROM alpine\nCOPY --from=build /a /a\nCOPY --from=0 /b /b\nCOPY --from=nginx:1.27 /c /c\nCOPY --from=scratch /d /d\n",
    );
    assert_eq!(
        uses(&d),
        [
            ("docker.io/library/golang:1.22".to_owned(), 1),
            ("docker.io/library/alpine:latest".to_owned(), 2),
            ("docker.io/library/nginx:1.27".to_owned(), 5),
        ]
    );
    assert_eq!(d.images[2].kind, UseKind::CopyFrom);
    assert_eq!(d.images[2].platform, None);
}

#[test]
fn copy_from_any_stage_case_insensitive() {
    // toCommand looks names up among all stages, lowercased.
    let d = ok("FROM alpine\nCOPY --from=Later /a /a\nFROM debian AS later\n");
    assert_eq!(d.images.len(), 2);
}

#[test]
fn copy_from_variables_are_refused_like_buildkit() {
    let e = err("ARG IMG=nginx\nFROM alpine\nCOPY --from=${IMG} /a /b\n");
    assert!(
        matches!(e, DockerfileError::FromFlagExpansion { line: 3, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("FROM <image> AS <alias>"), "{e}");
}

#[test]
fn copy_from_index_out_of_range() {
    assert_eq!(
        err("FROM alpine\nCOPY --from=1 /a /b\n"),
        DockerfileError::InvalidStageIndex {
            line: 2,
            index: 1,
            stages: 1
        }
    );
    assert!(matches!(
        err("FROM alpine\nCOPY --from=-1 /a /b\n"),
        DockerfileError::InvalidStageIndex { .. }
    ));
}

#[test]
fn copy_flag_forms() {
    // `--from value` (no `=`) is a flag without a value: BuildKit's "missing a value on flag".
    assert!(matches!(
        err("FROM alpine\nCOPY --from python:3.12 --chown=1:1 /a /b\n"),
        DockerfileError::FlagWithoutValue { line: 2, .. }
    ));
    assert!(matches!(
        err("FROM alpine\nCOPY --chown=1:1 --from python:3.12 /a /b\n"),
        DockerfileError::FlagWithoutValue { line: 2, .. }
    ));
    let d = ok("FROM alpine\nCOPY --from=\"redis:7\" /a /b\n");
    assert_eq!(d.images[1].raw, "redis:7");
    assert!(matches!(
        err("FROM alpine\nCOPY --from=a --from=b /x /y\n"),
        DockerfileError::DuplicateFlag { .. }
    ));
}

#[test]
fn run_mount_from() {
    let d = ok(
        "FROM alpine AS deps\nFROM alpine\nRUN --mount=type=cache,target=/c --mount=from=DEPS,target=/d \\\n    --mount=type=bind,from=busybox:1.36,source=/bin,target=/b make\n",
    );
    assert_eq!(
        uses(&d).into_iter().map(|u| u.0).collect::<Vec<_>>(),
        [
            "docker.io/library/alpine:latest",
            "docker.io/library/alpine:latest",
            "docker.io/library/busybox:1.36",
        ]
    );
    assert_eq!(d.images[2].kind, UseKind::MountFrom);
    assert_eq!(d.images[2].line, 3);
}

#[test]
fn run_mount_from_quoted_csv_and_errors() {
    // Quotes of the flag word are removed before the CSV is read.
    let d = ok("FROM alpine\nRUN --mount=\"type=bind,from=node:20\",target=/n x\n");
    assert_eq!(d.images[1].raw, "node:20");
    let d = ok("FROM alpine\nRUN --mount='\"from=node:20\",target=/n' x\n");
    assert_eq!(d.images[1].raw, "node:20");
    assert!(matches!(
        err("FROM alpine\nRUN --mount=type=bind,from=$IMG x\n"),
        DockerfileError::FromFlagExpansion { line: 2, .. }
    ));
    let e = err("FROM alpine\nRUN --mount=from=a\\\"b x\n");
    assert!(
        matches!(
            e,
            DockerfileError::InvalidMount {
                line: 2,
                source: MountError::BareQuote,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "line 2: cannot parse `--mount=from=a\"b`: failed to parse csv mounts: bare \" in non-quoted-field"
    );
    assert!(matches!(
        err("FROM alpine\nRUN --mount='\"from=a' x\n"),
        DockerfileError::InvalidMount {
            source: MountError::ExtraneousQuote,
            ..
        }
    ));
    assert!(matches!(
        err("FROM alpine\nRUN --mount\n"),
        DockerfileError::FlagWithoutValue { .. }
    ));
}

#[test]
fn unique_references_dedups_in_order() {
    let d = ok("FROM alpine\nFROM debian\nCOPY --from=alpine /a /b\n");
    let refs: Vec<String> = d.unique_references().iter().map(|r| r.familiar()).collect();
    assert_eq!(refs, ["alpine:latest", "debian:latest"]);
    assert_eq!(d.images.len(), 3);
}

#[test]
fn realistic_multi_stage_file() {
    let content = r#"# syntax=docker/dockerfile:1.7
# escape=\
ARG GO_VERSION=1.22
ARG ALPINE_VERSION=3.20

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION}-alpine${ALPINE_VERSION} AS build
WORKDIR /src
RUN --mount=type=cache,target=/go/pkg/mod \
--mount=type=bind,source=go.mod,target=go.mod \
go mod download
COPY <<EOF /src/main.go
package main
FROM this-is-not-an-instruction
EOF
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -o /out/app .

FROM gcr.io/distroless/static-debian12:nonroot AS final
COPY --from=build /out/app /app
COPY --from=docker.io/library/busybox:1.36 /bin/busybox /busybox
ENTRYPOINT ["/app"]
"#;
    let d = ok(content);
    assert_eq!(
        uses(&d),
        [
            ("docker.io/docker/dockerfile:1.7".to_owned(), 1),
            ("docker.io/library/golang:1.22-alpine3.20".to_owned(), 6),
            ("gcr.io/distroless/static-debian12:nonroot".to_owned(), 17),
            ("docker.io/library/busybox:1.36".to_owned(), 19),
        ]
    );
    assert_eq!(d.stages[1].name.as_deref(), Some("final"));
}

#[test]
fn platform_parsing_and_display() {
    let p: Platform = "linux/arm/v7".parse().unwrap();
    assert_eq!(p.to_string(), "linux/arm/v7");
    assert_eq!(Platform::default().to_string(), "linux/amd64");
    assert!("linux".parse::<Platform>().is_err());
    assert!("linux//x".parse::<Platform>().is_err());
}

#[test]
fn extract_builder_flags_like_upstream() {
    let f = |s: &str| instructions::extract_builder_flags(s, '\\');
    assert_eq!(f("--a=b rest"), ("rest".into(), vec!["--a=b".into()]));
    // A value only ever follows `=` (moby/buildkit#562, which would have taken the next word,
    // was not merged).
    assert_eq!(f("--a b rest"), ("b rest".into(), vec!["--a".into()]));
    assert_eq!(
        f("--a --b=c rest"),
        ("rest".into(), vec!["--a".into(), "--b=c".into()])
    );
    // The escape token is the file's: with `# escape=``, a backslash is just a character.
    assert_eq!(
        instructions::extract_builder_flags("--src=C:\\x`=y rest", '`'),
        ("rest".into(), vec!["--src=C:\\x=y".into()])
    );
    assert_eq!(
        f("--src=a\\=b rest"),
        ("rest".into(), vec!["--src=a=b".into()])
    );
    assert_eq!(
        f("--a=\"x y\" rest"),
        ("rest".into(), vec!["--a=x y".into()])
    );
    assert_eq!(f("-- --a=b"), (" --a=b".into(), vec![]));
    assert_eq!(f("--a"), (String::new(), vec!["--a".into()]));
    assert_eq!(f("plain --a=b"), ("plain --a=b".into(), vec![]));
}

// parser_test.go TestParseWords.
#[test]
fn upstream_parse_words() {
    let w = |s: &str| instructions::parse_words(s, '\\');
    assert_eq!(w("foo"), ["foo"]);
    assert_eq!(w("foo bar"), ["foo", "bar"]);
    assert_eq!(w("foo\\ bar"), ["foo\\ bar"]);
    assert_eq!(w("foo=bar"), ["foo=bar"]);
    assert_eq!(w("foo bar 'abc xyz'"), ["foo", "bar", "'abc xyz'"]);
    assert_eq!(w("foo bar \"abc xyz\""), ["foo", "bar", "\"abc xyz\""]);
    assert_eq!(w("àöû"), ["àöû"]);
    assert_eq!(w("föo bàr \"âbc xÿz\""), ["föo", "bàr", "\"âbc xÿz\""]);
}

// parser_test.go TestParseWarnsOnEmptyContinutationLine, with FROM so the joined words
// are visible: empty lines and comments inside a continuation are skipped.
#[test]
fn upstream_empty_continuation_lines() {
    let content = "\nFROM alpine:3.6\n\nFROM something \\\n\n    following \\\n\n    more\n";
    match err(content) {
        DockerfileError::FromArguments { line, args } => {
            assert_eq!(line, 4);
            assert_eq!(args, ["something", "following", "more"]);
        }
        other => panic!("{other}"),
    }
    let content = "FROM non-indented \\\n# this is a comment\n   AS after-comment\nFROM indented \\\n    # an indented comment\n    AS comment\nFROM after-comment\n";
    let d = ok(content);
    assert_eq!(d.stages[0].name.as_deref(), Some("after-comment"));
    assert_eq!(d.stages[1].name.as_deref(), Some("comment"));
    assert_eq!(
        (d.stages[2].line, &d.stages[2].base),
        (7, &StageBase::Stage(0))
    );
}

#[test]
fn lex_special_parameters() {
    // `$$` is the (never set) special parameter `$`, not a literal dollar.
    assert_eq!(expand("a$$b", &[]).unwrap(), "ab");
    assert_eq!(expand("$1x", &[]).unwrap(), "x");
    assert_eq!(expand("${#}", &[]).unwrap(), "");
}

#[test]
fn syntax_in_json_form() {
    let d = parse_with("{\"syntax\": \"example/frontend:2\", \"steps\": []}", &[]);
    // A JSON file is not a Dockerfile, but its frontend is still found first.
    assert_eq!(d, Err(DockerfileError::NoStages));
    assert_eq!(
        directives::detect_syntax("{\"syntax\": \"example/frontend:2 arg\"}"),
        Some(("example/frontend:2".to_owned(), 1))
    );
}

// ---- never panics ----

fn dockerfile_token() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("FROM ".to_owned()),
        Just("from ".to_owned()),
        Just("ARG ".to_owned()),
        Just("COPY --from=".to_owned()),
        Just("RUN --mount=".to_owned()),
        Just("ONBUILD ".to_owned()),
        Just(" AS ".to_owned()),
        Just("--platform=".to_owned()),
        Just("# syntax=".to_owned()),
        Just("# escape=`".to_owned()),
        Just("\\\n".to_owned()),
        Just("`\n".to_owned()),
        Just("\n".to_owned()),
        Just("\r\n".to_owned()),
        Just("<<EOF".to_owned()),
        Just("<<-'X'".to_owned()),
        Just("<< ".to_owned()),
        Just("<<- ".to_owned()),
        Just("<<\t\"EOF\"".to_owned()),
        Just("<".to_owned()),
        Just("EOF".to_owned()),
        Just("${".to_owned()),
        Just("}".to_owned()),
        Just("$V".to_owned()),
        Just(":-".to_owned()),
        Just(":?".to_owned()),
        Just("##*".to_owned()),
        Just("%%".to_owned()),
        Just("//".to_owned()),
        Just("\"".to_owned()),
        Just("'".to_owned()),
        Just(",from=".to_owned()),
        Just("=".to_owned()),
        Just("scratch".to_owned()),
        Just("alpine:3.20".to_owned()),
        Just("@sha256:".to_owned()),
        Just("localhost:5000/x".to_owned()),
        Just("0".to_owned()),
        Just("\u{feff}".to_owned()),
        "[a-zA-Z0-9 ._:/@$-]{1,6}",
    ]
}

proptest! {
    // `PROPTEST_CASES` (scripts/fuzz) sets how many; 512 by default.
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(512)
    ))]

    #[test]
    fn parse_never_panics_on_arbitrary_text(s in "\\PC{0,200}") {
        let _ = parse_with(&s, &[]);
    }

    #[test]
    fn parse_never_panics_on_dockerfile_like_tokens(
        tokens in proptest::collection::vec(dockerfile_token(), 0..40),
        build_args in proptest::collection::btree_map("[A-Z]{1,3}", "[a-z0-9:$/{}]{0,6}", 0..3),
    ) {
        let content: String = tokens.concat();
        let ctx = BuildContextArgs::new(&build_args);
        if let Ok(d) = parse(&content, &ctx) {
            // Whatever is found is consistent.
            for u in &d.images {
                prop_assert!(u.line <= content.lines().count() + 1);
            }
            for (i, s) in d.stages.iter().enumerate() {
                prop_assert_eq!(s.index, i);
                if let StageBase::Stage(b) = s.base {
                    prop_assert!(b < i);
                }
            }
        }
    }

    #[test]
    fn lexer_never_panics(s in "[-a-zA-Z0-9${}:?#%/*\\\\'\" <\t]{0,60}") {
        let env = args(&[("A", "a.b.c"), ("E", "")]);
        for escape in ['\\', '`'] {
            let _ = shell::process(&s, &env, escape, shell::Options::default());
            let _ = shell::process(&s, &env, escape, shell::Options { raw_quotes: true, raw_escapes: true, skip_unset_env: true });
        }
    }

    /// The heredoc rule of the lexer (`<<` keeps the blanks after it) changes word
    /// splitting only: text without `$`, quotes or escapes comes out as it went in.
    #[test]
    fn lexer_keeps_text_without_substitutions(s in "[a-z0-9 <\t\r-]{0,40}") {
        for opts in [
            shell::Options::default(),
            shell::Options { raw_quotes: true, raw_escapes: true, skip_unset_env: true },
        ] {
            let out = shell::process(&s, &args(&[]), '\\', opts).unwrap();
            prop_assert_eq!(&out.result, &s);
            let joined: String = out.words.concat();
            let without_blanks: String = s.chars().filter(|c| !c.is_whitespace()).collect();
            prop_assert_eq!(joined.chars().filter(|c| !c.is_whitespace()).collect::<String>(), without_blanks);
        }
    }

    /// Whatever a heredoc body holds, it is not parsed: the file has exactly the stages and
    /// images outside it.
    #[test]
    fn heredoc_bodies_never_add_stages_or_images(
        tokens in proptest::collection::vec(dockerfile_token(), 0..30),
        operator in prop_oneof![Just("<<"), Just("<< "), Just("<<  "), Just("<<\t"), Just("<<-"), Just("<< \"")],
    ) {
        let body: String = tokens.concat();
        prop_assume!(!body.split('\n').any(|l| l.trim_end_matches('\r').trim_start_matches('\t') == "END"));
        let close = if operator.ends_with('"') { "END\"" } else { "END" };
        let content = format!("FROM alpine\nRUN {operator}{close} sh\n{body}\nEND\nFROM debian AS last\n");
        let d = parse_with(&content, &[]).map_err(|e| TestCaseError::fail(format!("{e}\n{content}")))?;
        prop_assert_eq!(d.stages.len(), 2, "{}", content);
        prop_assert_eq!(d.images.len(), 2, "{}", content);
        prop_assert_eq!(d.stages[1].name.as_deref(), Some("last"));
    }
}
