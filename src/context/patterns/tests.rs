//! `.dockerignore` patterns: moby/patternmatcher's and buildkit's test tables, Go's
//! `filepath.Match` and `regexp` corners, reading ignore files, and properties.

use super::*;
use crate::context::read_ignore_patterns;
use proptest::prelude::*;

// ---- upstream: moby/patternmatcher patternmatcher_test.go ---------------------------------

#[derive(Debug, Clone, Copy, PartialEq)]
enum Want {
    Fail,
    Exact,
    Inexact,
}
use Want::{Exact as E, Fail as F, Inexact as I};

const WHL: &str = "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl";

/// TestMatches `tests` (with the non-Windows additions).
const MATCHES: &[(&str, &str, Want)] = &[
    ("**", "file", E),
    ("**", "file/", E),
    ("**/", "file", E), // weird one
    ("**/", "file/", E),
    ("**", "/", E),
    ("**/", "/", E),
    ("**", "dir/file", E),
    ("**/", "dir/file", E),
    ("**", "dir/file/", E),
    ("**/", "dir/file/", E),
    ("**/**", "dir/file", E),
    ("**/**", "dir/file/", E),
    ("dir/**", "dir/file", E),
    ("dir/**", "dir/file/", E),
    ("dir/**", "dir/dir2/file", E),
    ("dir/**", "dir/dir2/file/", E),
    ("**/dir", "dir", E),
    ("**/dir", "dir/file", I),
    ("**/dir2/*", "dir/dir2/file", E),
    ("**/dir2/*", "dir/dir2/file/", I),
    ("**/dir2/**", "dir/dir2/dir3/file", E),
    ("**/dir2/**", "dir/dir2/dir3/file/", E),
    ("**file", "file", E),
    ("**file", "dir/file", E),
    ("**/file", "dir/file", E),
    ("**file", "dir/dir/file", E),
    ("**/file", "dir/dir/file", E),
    ("**/file*", "dir/dir/file", E),
    ("**/file*", "dir/dir/file.txt", E),
    ("**/file*txt", "dir/dir/file.txt", E),
    ("**/file*.txt", "dir/dir/file.txt", E),
    ("**/file*.txt*", "dir/dir/file.txt", E),
    ("**/**/*.txt", "dir/dir/file.txt", E),
    ("**/**/*.txt2", "dir/dir/file.txt", F),
    ("**/*.txt", "file.txt", E),
    ("**/**/*.txt", "file.txt", E),
    ("a**/*.txt", "a/file.txt", E),
    ("a**/*.txt", "a/dir/file.txt", E),
    ("a**/*.txt", "a/dir/dir/file.txt", E),
    ("a/*.txt", "a/dir/file.txt", F),
    ("a/*.txt", "a/file.txt", E),
    ("a/*.txt**", "a/file.txt", E),
    ("a[b-d]e", "ae", F),
    ("a[b-d]e", "ace", E),
    ("a[b-d]e", "aae", F),
    ("a[^b-d]e", "aze", E),
    (".*", ".foo", E),
    (".*", "foo", F),
    ("abc.def", "abcdef", F),
    ("abc.def", "abc.def", E),
    ("abc.def", "abcZdef", F),
    ("abc?def", "abcZdef", E),
    ("abc?def", "abcdef", F),
    ("**/foo/bar", "foo/bar", E),
    ("**/foo/bar", "dir/foo/bar", E),
    ("**/foo/bar", "dir/dir2/foo/bar", E),
    ("abc/**", "abc", F),
    ("abc/**", "abc/def", E),
    ("abc/**", "abc/def/ghi", E),
    ("**/.foo", ".foo", E),
    ("**/.foo", "bar.foo", F),
    ("a(b)c/def", "a(b)c/def", E),
    ("a(b)c/def", "a(b)c/xyz", F),
    ("a.|)$(}+{bc", "a.|)$(}+{bc", E),
    (WHL, WHL, E),
    ("dist/*.whl", WHL, E),
    (r"a\\", r"a\", E),
    (r"a\*b", "a*b", E),
];

/// TestMatches `multiPatternTests`.
const MULTI: &[(&[&str], &str, Want)] = &[
    (&["**", "!util/docker/web"], "util/docker/web/foo", F),
    (
        &["**", "!util/docker/web", "util/docker/web/foo"],
        "util/docker/web/foo",
        E,
    ),
    (
        &[
            "**",
            "!dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
        ],
        WHL,
        F,
    ),
    (&["**", "!dist/*.whl"], WHL, F),
];

fn matcher(patterns: &[&str]) -> PatternMatcher {
    PatternMatcher::new(patterns).unwrap_or_else(|e| panic!("{patterns:?}: {e}"))
}

/// The upstream test's walk: match each parent directory in turn, carrying the results.
fn matches_with_parent_chain(pm: &PatternMatcher, text: &str) -> bool {
    let parent = dir(text);
    let mut info = MatchInfo::default();
    if parent != "." {
        let dirs: Vec<&str> = parent.split('/').collect();
        for i in 0..dirs.len() {
            info = pm
                .matches_using_parent_results(&dirs[..=i].join("/"), &info)
                .1;
        }
    }
    pm.matches_using_parent_results(text, &info).0
}

#[test]
fn upstream_matches_table_matches_exact() {
    for &(pattern, text, want) in MATCHES {
        let got = matcher(&[pattern]).matches_exact(text);
        assert_eq!(got, want == E, "pattern={pattern:?} text={text:?}");
    }
}

#[test]
fn upstream_matches_table_matches_or_parent_matches() {
    for &(pattern, text, want) in MATCHES {
        let got = matcher(&[pattern]).matches_or_parent_matches(text);
        assert_eq!(got, want != F, "pattern={pattern:?} text={text:?}");
    }
    for &(patterns, text, want) in MULTI {
        let got = matcher(patterns).matches_or_parent_matches(text);
        assert_eq!(got, want != F, "patterns={patterns:?} text={text:?}");
    }
}

#[test]
fn upstream_matches_table_matches_using_parent_results() {
    for &(pattern, text, want) in MATCHES {
        let got = matches_with_parent_chain(&matcher(&[pattern]), text);
        assert_eq!(got, want != F, "pattern={pattern:?} text={text:?}");
    }
    for &(patterns, text, want) in MULTI {
        let got = matches_with_parent_chain(&matcher(patterns), text);
        assert_eq!(got, want != F, "patterns={patterns:?} text={text:?}");
    }
}

#[test]
fn upstream_matches_table_matches_using_parent_results_no_context() {
    for &(pattern, text, want) in MATCHES {
        let (got, _) =
            matcher(&[pattern]).matches_using_parent_results(text, &MatchInfo::default());
        assert_eq!(got, want != F, "pattern={pattern:?} text={text:?}");
    }
    for &(patterns, text, want) in MULTI {
        let (got, _) = matcher(patterns).matches_using_parent_results(text, &MatchInfo::default());
        assert_eq!(got, want != F, "patterns={patterns:?} text={text:?}");
    }
}

/// The deprecated package-level `Matches` the upstream tests call: New, Clean, "." is
/// never excluded, then the single-parent `PatternMatcher.Matches`.
fn package_matches(file: &str, patterns: &[&str]) -> Result<bool, PatternError> {
    let pm = PatternMatcher::new(patterns)?;
    let file = clean(file);
    if file == "." {
        return Ok(false);
    }
    let parent = dir(&file);
    let parent_dirs: Vec<&str> = parent.split('/').collect();
    let mut matched = false;
    for pattern in pm.patterns() {
        if pattern.exclusion != matched {
            continue;
        }
        let mut hit = pattern.matches(&file);
        let pattern_dirs = pattern.cleaned.split('/').count();
        if !hit && parent != "." && pattern_dirs <= parent_dirs.len() {
            hit = pattern.matches(&parent_dirs[..pattern_dirs].join("/"));
        }
        if hit {
            matched = !pattern.exclusion;
        }
    }
    Ok(matched)
}

#[test]
fn upstream_single_cases() {
    let ok = |file, patterns: &[&str]| package_matches(file, patterns).unwrap();
    // TestWildcardMatches, TestPatternMatches
    assert!(ok("fileutils.go", &["*"]));
    assert!(ok("fileutils.go", &["*.go"]));
    // TestExclusionPatternMatchesPatternBefore
    assert!(ok("fileutils.go", &["!fileutils.go", "*.go"]));
    // TestPatternMatchesFolderExclusions, ...WithSlash..., ...Wildcard...
    assert!(!ok("docs/README.md", &["docs", "!docs/README.md"]));
    assert!(!ok("docs/README.md", &["docs/", "!docs/README.md"]));
    assert!(!ok("docs/README.md", &["docs/*", "!docs/README.md"]));
    // TestExclusionPatternMatchesPatternAfter
    assert!(!ok("fileutils.go", &["*.go", "!fileutils.go"]));
    // TestExclusionPatternMatchesWholeDirectory
    assert!(!ok(".", &["*.go"]));
    // TestSingleExclamationError
    assert!(package_matches("fileutils.go", &["!"]).is_err());
    // TestMatchesWithNoPatterns
    assert!(!ok("/any/path/there", &[]));
    // TestMatchesWithMalformedPatterns
    assert!(package_matches("/any/path/there", &["["]).is_err());
}

/// TestMatch: Go's filepath.Match table, through `Matches`. `None` is ErrBadPattern.
const FILEPATH_MATCH: &[(&str, &str, Option<bool>)] = &[
    ("abc", "abc", Some(true)),
    ("*", "abc", Some(true)),
    ("*c", "abc", Some(true)),
    ("a*", "a", Some(true)),
    ("a*", "abc", Some(true)),
    ("a*", "ab/c", Some(true)),
    ("a*/b", "abc/b", Some(true)),
    ("a*/b", "a/c/b", Some(false)),
    ("a*b*c*d*e*/f", "axbxcxdxe/f", Some(true)),
    ("a*b*c*d*e*/f", "axbxcxdxexxx/f", Some(true)),
    ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", Some(false)),
    ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", Some(false)),
    ("a*b?c*x", "abxbbxdbxebxczzx", Some(true)),
    ("a*b?c*x", "abxbbxdbxebxczzy", Some(false)),
    ("ab[c]", "abc", Some(true)),
    ("ab[b-d]", "abc", Some(true)),
    ("ab[e-g]", "abc", Some(false)),
    ("ab[^c]", "abc", Some(false)),
    ("ab[^b-d]", "abc", Some(false)),
    ("ab[^e-g]", "abc", Some(true)),
    (r"a\*b", "a*b", Some(true)),
    (r"a\*b", "ab", Some(false)),
    ("a?b", "a☺b", Some(true)),
    ("a[^a]b", "a☺b", Some(true)),
    ("a???b", "a☺b", Some(false)),
    ("a[^a][^a][^a]b", "a☺b", Some(false)),
    ("[a-ζ]*", "α", Some(true)),
    ("*[a-ζ]", "A", Some(false)),
    ("a?b", "a/b", Some(false)),
    ("a*b", "a/b", Some(false)),
    (r"[\]a]", "]", Some(true)),
    (r"[\-]", "-", Some(true)),
    (r"[x\-]", "x", Some(true)),
    (r"[x\-]", "-", Some(true)),
    (r"[x\-]", "z", Some(false)),
    (r"[\-x]", "x", Some(true)),
    (r"[\-x]", "-", Some(true)),
    (r"[\-x]", "a", Some(false)),
    ("[]a]", "]", None),
    ("[-]", "-", None),
    ("[x-]", "x", None),
    ("[x-]", "-", None),
    ("[x-]", "z", None),
    ("[-x]", "x", None),
    ("[-x]", "-", None),
    ("[-x]", "a", None),
    (r"\", "a", None),
    ("[a-b-c]", "a", None),
    ("[", "a", None),
    ("[^", "a", None),
    ("[^bc", "a", None),
    ("a[", "a", None),
    ("a[", "ab", None),
    ("*x", "xxx", Some(true)),
];

#[test]
fn upstream_filepath_match_table() {
    for &(pattern, text, want) in FILEPATH_MATCH {
        let got = package_matches(text, &[pattern]).ok();
        assert_eq!(got, want, "pattern={pattern:?} text={text:?}");
    }
}

/// TestCompile (the `/` separator): match type, and the regexp for regexp matches.
const COMPILE: &[(&str, Detected, &str)] = &[
    ("*", Detected::Regexp, r"^[^/]*$"),
    ("file*", Detected::Regexp, r"^file[^/]*$"),
    ("*file", Detected::Regexp, r"^[^/]*file$"),
    ("a*/b", Detected::Regexp, r"^a[^/]*/b$"),
    ("**", Detected::Suffix, ""),
    ("**/**", Detected::Regexp, r"^(.*/)?.*$"),
    ("dir/**", Detected::Prefix, ""),
    ("**/dir", Detected::Suffix, ""),
    ("**/dir2/*", Detected::Regexp, r"^(.*/)?dir2/[^/]*$"),
    ("**/dir2/**", Detected::Regexp, r"^(.*/)?dir2/.*$"),
    ("**file", Detected::Suffix, ""),
    ("**/file*txt", Detected::Regexp, r"^(.*/)?file[^/]*txt$"),
    ("**/**/*.txt", Detected::Regexp, r"^(.*/)?(.*/)?[^/]*\.txt$"),
    ("a[b-d]e", Detected::Regexp, r"^a[b-d]e$"),
    (".*", Detected::Regexp, r"^\.[^/]*$"),
    ("abc.def", Detected::Exact, ""),
    ("abc?def", Detected::Regexp, r"^abc[^/]def$"),
    ("**/foo/bar", Detected::Suffix, ""),
    ("a(b)c/def", Detected::Exact, ""),
    ("a.|)$(}+{bc", Detected::Exact, ""),
    (WHL, Detected::Exact, ""),
];

#[test]
fn upstream_compile_table() {
    for &(pattern, want_type, want_regexp) in COMPILE {
        let (got_type, got_regexp) = regexp_source(&clean(pattern));
        assert_eq!(got_type, want_type, "pattern={pattern:?}");
        if want_type == Detected::Regexp {
            assert_eq!(got_regexp, want_regexp, "pattern={pattern:?}");
        }
        assert!(compile(&clean(pattern)).is_ok(), "pattern={pattern:?}");
    }
}

#[test]
fn upstream_clean_patterns() {
    // TestCleanPatterns, ...StripEmptyPatterns
    assert_eq!(matcher(&["docs", "config"]).patterns().len(), 2);
    assert_eq!(matcher(&["docs", "config", ""]).patterns().len(), 2);
    // TestCleanPatternsExceptionFlag, ...LeadingSpaceTrimmed, ...TrailingSpaceTrimmed
    assert!(matcher(&["docs", "!docs/README.md"]).exclusions());
    assert!(matcher(&["docs", "  !docs/README.md"]).exclusions());
    assert!(matcher(&["docs", "!docs/README.md  "]).exclusions());
    assert!(!matcher(&["docs", "config"]).exclusions());
    // TestCleanPatternsErrorSingleException
    let err = PatternMatcher::new(&["!"]).unwrap_err();
    assert_eq!(
        (err.index, &err.reason),
        (0, &PatternReason::IllegalExclusion)
    );
    assert_eq!(err.reason.to_string(), "illegal exclusion pattern: \"!\"");
    // New cleans: "docs/" and "./docs" are "docs"; the "!" is stripped after cleaning
    let pm = matcher(&["docs/", "./src/../lib", "!./keep"]);
    let texts: Vec<&str> = pm.patterns().iter().map(Pattern::as_str).collect();
    assert_eq!(texts, ["docs", "lib", "./keep"]);
}

/// Regression test for moby/moby#52203: upstream accepts `[Local-Only]/` in New and fails
/// at every match; here it is refused at once (the regexp range `l-O` is invalid).
#[test]
fn moby_52203_malformed_range_is_refused_up_front() {
    let err = PatternMatcher::new(&["[Local-Only]/"]).unwrap_err();
    assert_eq!(
        err.reason,
        PatternReason::Regexp(RegexError::InvalidRange),
        "{err}"
    );
    assert!(
        err.to_string().contains("syntax error in pattern ("),
        "{err}"
    );
    assert!(PatternMatcher::new(&["[z-a]"]).is_err());
    assert!(PatternMatcher::new(&["[a-z]"]).is_ok());
}

// ---- upstream: buildkit dockerignore_test.go / patternmatcher ignorefile_test.go --------

#[test]
fn upstream_read_all() {
    assert!(read_ignore_patterns(b"").is_empty());
    let content =
        "test1\n/test2\n/a/file/here\n\nlastfile\n# this is a comment\n! /inverted/abs/path\n!\n! ";
    let got: Vec<(usize, String)> = read_ignore_patterns(content.as_bytes())
        .into_iter()
        .map(|p| (p.line, p.pattern))
        .collect();
    let want = [
        (1, "test1"),
        (2, "test2"), // /foo/bar is foo/bar
        (3, "a/file/here"),
        (5, "lastfile"),
        (7, "!inverted/abs/path"),
        (8, "!"),
        (9, "!"),
    ];
    let want: Vec<(usize, String)> = want.iter().map(|(l, p)| (*l, p.to_string())).collect();
    assert_eq!(got, want);
}

#[test]
fn read_all_bom_crlf_comments_and_cleaning() {
    let content = b"\xEF\xBB\xBFfirst\r\n  # not a comment\r\n#comment\r\n./a/../b/\r\n/\r\n!/\r\n\t*.log \r\nlast";
    let got: Vec<String> = read_ignore_patterns(content)
        .into_iter()
        .map(|p| p.pattern)
        .collect();
    assert_eq!(
        got,
        ["first", "# not a comment", "b", "/", "!/", "*.log", "last"]
    );
    // a BOM on a later line is not stripped
    let got = read_ignore_patterns(b"a\n\xEF\xBB\xBFb\n");
    assert_eq!(got[1].pattern, "\u{feff}b");
    // "!/" cleans to "!" in New: an illegal exception, reported with its line
    let err = PatternMatcher::new(&["a", "!/"]).unwrap_err();
    assert_eq!(err.index, 1);
}

#[test]
fn clean_and_dir_follow_go() {
    let cases = [
        ("", "."),
        (".", "."),
        ("./", "."),
        ("a/", "a"),
        ("a//b", "a/b"),
        ("a/./b/", "a/b"),
        ("a/../b", "b"),
        ("a/../..", ".."),
        ("../../a", "../../a"),
        ("/..", "/"),
        ("/../a/", "/a"),
        ("//", "/"),
    ];
    for (input, want) in cases {
        assert_eq!(clean(input), want, "clean({input:?})");
    }
    for (input, want) in [
        ("a/b/c", "a/b"),
        ("file", "."),
        ("file/", "file"),
        ("/", "/"),
        ("/x", "/"),
    ] {
        assert_eq!(dir(input), want, "dir({input:?})");
    }
}

// ---- Go regexp semantics that upstream's compiler exposes --------------------------------

#[test]
fn go_regexp_quirks_match_docker() {
    // "[*]" becomes `^[[^/]*]$`: a class of `[`, `^`, `/` repeated, then `]`.
    let pm = matcher(&["[*]"]);
    assert!(pm.matches_exact("]"));
    assert!(pm.matches_exact("[^]"));
    assert!(!pm.matches_exact("*"));
    // "[[:alpha:]]" is one POSIX class in Go's regexp, not a class and a `]`.
    let pm = matcher(&["[[:alpha:]]"]);
    assert!(pm.matches_exact("a"));
    assert!(!pm.matches_exact("a]"));
    assert!(!pm.matches_exact("1"));
    assert!(matcher(&["[[:^alpha:]]"]).matches_exact("1"));
    assert!(PatternMatcher::new(&["[[:nope:]]"]).is_err());
    // A `^` is an anchor once the pattern is a regexp, a literal while it is exact.
    assert!(matcher(&["^a*"]).matches_exact("abc"));
    assert!(!matcher(&["^a*"]).matches_exact("^abc"));
    assert!(matcher(&["^abc"]).matches_exact("^abc"));
    // Escapes keep their Go regexp meaning.
    assert!(matcher(&[r"\d"]).matches_exact("5"));
    assert!(!matcher(&[r"\d"]).matches_exact("d"));
    assert!(matcher(&[r"\x41"]).matches_exact("A"));
    assert!(matcher(&[r"\101"]).matches_exact("A"));
    assert!(matcher(&[r"\bfoo"]).matches_exact("foo"));
    assert!(matcher(&[r"[\w]"]).matches_exact("_"));
    // \Q swallows the closing `$`, so the match is no longer anchored at the end.
    assert!(matcher(&[r"\Qab"]).matches_exact("ab$"));
    assert!(matcher(&[r"\Qab"]).matches_exact("ab$x"));
    assert!(!matcher(&[r"\Qab"]).matches_exact("ab"));
    // Go rejects these escapes; \p is not ported.
    for bad in [r"\e", r"\C", r"\8", r"\xZ1", r"\p{L}", r"[\b]"] {
        assert!(PatternMatcher::new(&[bad]).is_err(), "{bad}");
    }
    // `.` in `(.*/)?` does not cross a newline; `[^/]` does.
    assert!(!matcher(&["**/x*"]).matches_exact("a\nb/xy"));
    assert!(matcher(&["x*"]).matches_exact("x\ny"));
}

#[test]
fn a_bom_before_a_leading_double_star_is_handled_byte_wise() {
    // upstream slices the pattern's bytes; must not panic on the BOM's bytes
    let pm = matcher(&["\u{feff}**foo"]);
    assert!(!pm.matches_or_parent_matches("x/foo"));
}

// ---- properties -------------------------------------------------------------------------

fn pattern_text() -> impl Strategy<Value = String> {
    prop_oneof![
        r"[a-c*?/\[\]!.\\^:{}()$|+ xdQEpPbBz07-]{0,16}",
        r"(\*\*/)?[a-c]{0,2}(/[a-c*?]{1,3}){0,3}",
        any::<String>(),
    ]
}

fn path_text() -> impl Strategy<Value = String> {
    prop_oneof![
        r"[a-c*?/\[\]!.\\^ -]{0,16}",
        r"[a-c]{1,3}(/[a-c.]{1,3}){0,4}",
        any::<String>()
    ]
}

proptest! {
    #[test]
    fn the_matcher_never_panics(patterns in prop::collection::vec(pattern_text(), 0..5),
                                paths in prop::collection::vec(path_text(), 0..5)) {
        if let Ok(pm) = PatternMatcher::new(&patterns) {
            let mut info = MatchInfo::default();
            for path in &paths {
                let _ = pm.matches_exact(path);
                let _ = pm.matches_or_parent_matches(path);
                info = pm.matches_using_parent_results(path, &info).1;
            }
            // a MatchInfo from another matcher is tolerated
            let other = matcher(&["a", "b", "c", "d", "e", "f"]);
            let (_, foreign) = other.matches_using_parent_results("a", &MatchInfo::default());
            let _ = pm.matches_using_parent_results("a/b", &foreign);
        }
    }

    #[test]
    fn reading_any_ignore_file_never_panics(content in prop::collection::vec(any::<u8>(), 0..256)) {
        let lines = read_ignore_patterns(&content);
        let patterns: Vec<&str> = lines.iter().map(|l| l.pattern.as_str()).collect();
        if let Err(e) = PatternMatcher::new(&patterns) {
            prop_assert!(e.index < patterns.len());
        }
    }

    #[test]
    fn clean_is_idempotent(path in path_text()) {
        let once = clean(&path);
        prop_assert_eq!(clean(&once), once);
    }

    /// Without exceptions, carrying the parents' results gives the same answer as
    /// checking the parents by name.
    #[test]
    fn parent_results_agree_with_parent_names_without_exceptions(
        patterns in prop::collection::vec(r"(\*\*/)?[ab*?]{1,2}(/[ab*?]{1,2}){0,2}(/\*\*)?", 1..4),
        path in r"[ab]{1,2}(/[ab]{1,2}){0,4}",
    ) {
        let pm = PatternMatcher::new(&patterns).unwrap();
        prop_assert_eq!(matches_with_parent_chain(&pm, &path), pm.matches_or_parent_matches(&path));
    }
}
