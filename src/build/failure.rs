//! Why a build failed: a transient network problem inside the build (retry it) or the
//! build's own fault (do not), and which Dockerfile line failed.

use serde::{Deserialize, Serialize};

use crate::retry::ErrorClass;

/// The class of a failed build, as the report names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BuildFailureClass {
    /// The network failed inside the build (base image resolution, package downloads).
    Network,
    /// The Dockerfile itself is invalid.
    Syntax,
    /// A RUN step exited non-zero for its own reasons.
    RunFailed,
    /// A file the Dockerfile copies is missing, or another build input problem.
    Input,
    /// The build was cut by the idle timeout (`--build-idle-timeout`).
    Stalled,
    /// The build ran longer than `--build-timeout` and was stopped. Never retried.
    TimedOut,
    /// A base image the build needs was had from no source in the prefetch (not found,
    /// refused, unreachable): the build's own pull failing too is no news. Never retried.
    BaseImage,
    /// A registry refused the build's pull (`pull access denied`, `failed to authorize`):
    /// credentials are missing, wrong or lack a scope. Never retried.
    Auth,
    /// The builder itself failed under load, not the build (the 20.10 engine's BuildKit:
    /// `flightcontrol: exceeded retry timeout`, `no such job`): retried.
    Builder,
    Other,
}

impl BuildFailureClass {
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            BuildFailureClass::Network | BuildFailureClass::Stalled | BuildFailureClass::Builder
        )
    }
}

/// `45m`, `1h30m`, `90s`: a limit as the user wrote it.
pub fn human_duration(d: std::time::Duration) -> String {
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

/// Messages that mean the network failed inside a build, in the builder's (BuildKit's or the
/// daemon's) own error: registry resolution, token fetches, transport errors. Lowercase.
const NETWORK_FRAGMENTS: &[&str] = &[
    "failed to resolve reference",
    "failed to do request",
    "failed to fetch oauth token",
    "failed to fetch anonymous token",
    "failed to authorize",
    "tls handshake timeout",
    "i/o timeout",
    "connection reset by peer",
    "connection refused",
    "unexpected eof",
    "temporary failure in name resolution",
    "toomanyrequests",
    "429 too many requests",
    "503 service unavailable",
    "502 bad gateway",
    "504 gateway timeout",
    ": eof",
];

/// A download tool's own report of a network failure, as apt, apk, pip, curl and wget print
/// it: the one kind of a RUN's output that makes its failure transient. (Bare phrases such as
/// "connection refused" are not: a test the RUN runs may print them.) Lowercase.
const DOWNLOAD_TOOL_FRAGMENTS: &[&str] = &[
    "w: failed to fetch http",
    "e: failed to fetch http",
    "temporary failure resolving",
    "could not resolve host",
    "temporary error (try again later)",
    "readtimeouterror",
    "newconnectionerror",
    "curl: (6)",
    "curl: (7)",
    "curl: (28)",
    "curl: (35)",
    "curl: (52)",
    "curl: (56)",
    "wget: error getting response",
    "wget: can't connect to remote host",
    "wget: bad address",
];

/// Messages that mean a registry refused the build's credentials (or their absence): checked
/// before the network fragments, because "failed to authorize: failed to fetch oauth token"
/// is an auth failure, not a network one. Lowercase.
const AUTH_FRAGMENTS: &[&str] = &[
    "pull access denied",
    "insufficient_scope",
    "unauthorized: authentication required",
    "unauthorized: incorrect username or password",
    "denied: requested access to the resource is denied",
];

/// Whether the builder says a RUN's process exited non-zero (its error then quotes the
/// command, which is the Dockerfile's text, not the builder's).
fn is_run_failure(lower: &str) -> bool {
    lower.contains("returned a non-zero code")
        || lower.contains("exit code:")
        || lower.contains("did not complete successfully")
}

/// Errors of the builder itself, which another attempt does not meet: the 20.10 engine's
/// BuildKit (v0.8) gives up waiting on its own shared work (`flightcontrol`) and loses track
/// of jobs when many builds run at once.
const BUILDER_FRAGMENTS: &[&str] = &[
    "flightcontrol: exceeded retry timeout",
    "no such job",
    // Two builds exporting the same layer into the cache directory's one local cache store at
    // once (buildx's local cache exporter): the other one's rename won the race.
    "error writing layer blob: rename tmp file",
];

/// Classifies a failed build from the builder's error message and the last lines of its log.
/// The builder's error decides; a RUN that exited non-zero is a network failure only when a
/// download tool reported one in the log's last lines ([`DOWNLOAD_TOOL_FRAGMENTS`]), never
/// from what else the program printed, nor from its command text.
pub fn classify(error: &str, log_tail: &[String]) -> (BuildFailureClass, Option<ErrorClass>) {
    let lower = error.to_ascii_lowercase();
    if lower.contains("dockerfile parse error")
        || lower.contains("unknown instruction")
        || lower.contains("unknown flag")
    {
        return (BuildFailureClass::Syntax, None);
    }
    if lower.contains("no progress for") {
        return (BuildFailureClass::Stalled, Some(ErrorClass::Stalled));
    }
    // BuildKit's own failures under many concurrent builds, whatever step they hit.
    if BUILDER_FRAGMENTS.iter().any(|f| lower.contains(f)) {
        return (BuildFailureClass::Builder, None);
    }
    // "failed to authorize" alone (BuildKit's token step refused) is an auth failure; with a
    // transport fault under it ("failed to authorize: … unexpected EOF") it stays network.
    let refused_token = lower.contains("failed to authorize")
        && !NETWORK_FRAGMENTS
            .iter()
            .filter(|f| !f.starts_with("failed to"))
            .any(|f| lower.contains(f));
    if refused_token || AUTH_FRAGMENTS.iter().any(|f| lower.contains(f)) {
        return (BuildFailureClass::Auth, Some(ErrorClass::AuthRejected));
    }
    let network = |haystack: &str| {
        let class = crate::retry::classify_message(haystack);
        (
            BuildFailureClass::Network,
            Some(if class == ErrorClass::Other {
                ErrorClass::Eof
            } else {
                class
            }),
        )
    };
    if is_run_failure(&lower) {
        let tail = log_tail
            .iter()
            .rev()
            .take(30)
            .map(|l| l.to_ascii_lowercase())
            .collect::<Vec<_>>()
            .join("\n");
        if DOWNLOAD_TOOL_FRAGMENTS.iter().any(|f| tail.contains(f)) {
            return network(&tail);
        }
        return (BuildFailureClass::RunFailed, None);
    }
    if NETWORK_FRAGMENTS
        .iter()
        .chain(DOWNLOAD_TOOL_FRAGMENTS)
        .any(|f| lower.contains(f))
    {
        return network(&lower);
    }
    if lower.contains("not found")
        || lower.contains("no such file")
        || lower.contains("failed to compute cache key")
    {
        return (BuildFailureClass::Input, None);
    }
    (BuildFailureClass::Other, None)
}

/// One instruction of a Dockerfile: its first line (1-based) and its text with continuations
/// joined, as the builders show it in their progress ("Step 3/5 : RUN …", "[2/3] RUN …").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    pub line: usize,
    pub text: String,
}

/// Splits a Dockerfile into instructions (comments and blank lines skipped, `\` continuations
/// joined, the `# escape=` directive honoured).
pub fn instructions(content: &str) -> Vec<Instruction> {
    let escape = content
        .lines()
        .take_while(|l| l.trim_start().starts_with('#'))
        .find_map(|l| {
            let d = l.trim_start().trim_start_matches('#').trim();
            let (k, v) = d.split_once('=')?;
            (k.trim().eq_ignore_ascii_case("escape"))
                .then(|| v.trim().chars().next())
                .flatten()
        })
        .unwrap_or('\\');
    let mut out = Vec::new();
    let mut current: Option<Instruction> = None;
    for (i, raw) in content.lines().enumerate() {
        let trimmed = raw.trim();
        if current.is_none() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if current.is_some() && trimmed.starts_with('#') {
            continue; // comments inside a continued instruction are dropped
        }
        let (body, continues) = match trimmed.strip_suffix(escape) {
            Some(body) => (body.trim_end(), true),
            None => (trimmed, false),
        };
        let inst = current.get_or_insert_with(|| Instruction {
            line: i + 1,
            text: String::new(),
        });
        if !inst.text.is_empty() && !body.is_empty() {
            inst.text.push(' ');
        }
        inst.text.push_str(body);
        if !continues {
            out.extend(current.take());
        }
    }
    out.extend(current);
    out
}

fn squash(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_ascii_lowercase()
}

/// The Dockerfile line that failed, from the builders' own words:
/// BuildKit/buildx `Dockerfile:12`, `dockerfile parse error line 3`, the classic builder's
/// last `Step N/M : …`, or the failing BuildKit vertex `[stage 2/3] RUN …` matched to its
/// instruction.
pub fn failing_line(dockerfile: &str, error: &str, log: &[String]) -> Option<usize> {
    let all = || std::iter::once(error).chain(log.iter().rev().map(String::as_str));
    for text in all() {
        if let Some(n) = number_after(text, "dockerfile parse error line ") {
            return Some(n);
        }
    }
    for text in all() {
        for marker in ["Dockerfile:", "dockerfile:"] {
            if let Some(n) = number_after(text.trim_start(), marker)
                .filter(|_| text.trim_start().starts_with(marker))
            {
                return Some(n);
            }
        }
    }
    let insts = instructions(dockerfile);
    // Classic builder: "Step 3/5 : RUN exit 3" (the last step shown is the one that failed).
    if let Some(step) = log.iter().rev().find_map(|l| {
        number_after(l.trim_start(), "Step ").filter(|_| l.trim_start().starts_with("Step "))
    }) {
        return insts.get(step.checked_sub(1)?).map(|i| i.line);
    }
    // BuildKit: the failing vertex "[2/3] RUN exit 3 ERROR: …", else the command of
    // "executor failed running [/bin/sh -c exit 3]", else the last vertex shown.
    let vertex_of = |t: &str| -> Option<String> {
        let t = t.trim_start();
        let t = t.strip_prefix('#').map_or(t, |rest| {
            rest.trim_start_matches(|c: char| c.is_ascii_digit())
                .trim_start()
        });
        let close = t.find("] ")?;
        let head = &t[..close];
        if !(head.starts_with('[') && head.contains('/')) {
            return None;
        }
        let body = &t[close + 2..];
        let body = body.split(" ERROR:").next().unwrap_or(body);
        let body = body
            .trim_end_matches(" DONE")
            .trim_end_matches(" CACHED")
            .trim_end_matches(':');
        Some(body.to_string())
    };
    let failed_vertex = all().filter(|t| t.contains("ERROR:")).find_map(vertex_of);
    let command = all().find_map(|t| {
        let start = t.find("running [")? + "running [".len();
        let end = t[start..].find(']')? + start;
        Some(format!(
            "RUN {}",
            t[start..end].trim_start_matches("/bin/sh -c ")
        ))
    });
    let any_vertex = log.iter().rev().find_map(|l| vertex_of(l));
    for want in [failed_vertex, command, any_vertex].into_iter().flatten() {
        let want = squash(&want);
        let found = insts.iter().find(|i| {
            squash(&i.text) == want || (want.len() > 8 && squash(&i.text).starts_with(&want))
        });
        if let Some(inst) = found {
            return Some(inst.line);
        }
    }
    None
}

fn number_after(text: &str, marker: &str) -> Option<usize> {
    let start = text.find(marker)? + marker.len();
    let digits: String = text[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn issue12_refused_pulls_are_auth_failures_never_network() {
        use super::*;
        for message in [
            "pull access denied for 127.0.0.1:5000/private/x, repository does not exist or may require 'docker login': denied: requested access to the resource is denied",
            "failed to solve: 127.0.0.1:5000/private/x:1.0: failed to authorize: failed to fetch oauth token: unexpected status: 401 Unauthorized",
            "failed to solve: failed to authorize: rpc error: code = Unknown desc = failed to fetch anonymous token: unexpected status: 403 Forbidden",
            "failed to solve: ghcr.io/org/x:1: failed to authorize",
        ] {
            let (class, error) = classify(message, &[]);
            assert_eq!(class, BuildFailureClass::Auth, "{message}");
            assert!(!class.is_transient());
            assert_eq!(error, Some(ErrorClass::AuthRejected));
        }
        let (class, _) = classify(
            "failed to solve: failed to authorize: failed to fetch anonymous token: Get \"http://x/token\": unexpected EOF",
            &[],
        );
        assert_eq!(class, BuildFailureClass::Network);
    }

    use super::*;

    const DOCKERFILE: &str = "# syntax=docker/dockerfile:1\nARG BASE=ubuntu:22.04\nFROM ${BASE}\n\n# install\nRUN apt-get update && \\\n    apt-get install -y curl\nRUN exit 3\nCOPY . /app\n";

    fn lines(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn instructions_join_continuations_and_keep_first_lines() {
        let insts = instructions(DOCKERFILE);
        let got: Vec<(usize, &str)> = insts.iter().map(|i| (i.line, i.text.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (2, "ARG BASE=ubuntu:22.04"),
                (3, "FROM ${BASE}"),
                (6, "RUN apt-get update && apt-get install -y curl"),
                (8, "RUN exit 3"),
                (9, "COPY . /app")
            ]
        );
    }

    #[test]
    fn escape_directive_changes_the_continuation_character() {
        let insts = instructions("# escape=`\nFROM x\nRUN a `\n  b\n");
        assert_eq!(
            insts[1],
            Instruction {
                line: 3,
                text: "RUN a b".into()
            }
        );
    }

    #[test]
    fn syntax_errors_point_at_their_line() {
        let err = "failed to solve with frontend dockerfile.v0: failed to create LLB definition: dockerfile parse error line 3: unknown instruction: BOGUSINSTR";
        assert_eq!(failing_line(DOCKERFILE, err, &[]), Some(3));
        assert_eq!(classify(err, &[]).0, BuildFailureClass::Syntax);
        let classic = "dockerfile parse error line 7: unknown instruction: BOGUS";
        assert_eq!(failing_line(DOCKERFILE, classic, &[]), Some(7));
    }

    #[test]
    fn buildx_names_the_dockerfile_line() {
        let log = lines(&[
            "#6 ERROR: process \"/bin/sh -c exit 3\" did not complete successfully: exit code: 3",
            "------",
            "Dockerfile:8",
            "--------------------",
        ]);
        assert_eq!(
            failing_line(
                DOCKERFILE,
                "ERROR: failed to solve: process \"/bin/sh -c exit 3\" did not complete successfully: exit code: 3",
                &log
            ),
            Some(8)
        );
    }

    #[test]
    fn classic_builder_steps_map_to_instructions() {
        let log = lines(&[
            "Step 1/5 : ARG BASE=ubuntu:22.04",
            "Step 2/5 : FROM ${BASE}",
            "Step 3/5 : RUN apt-get update && apt-get install -y curl",
            "Step 4/5 : RUN exit 3",
            " ---> Running in abc",
        ]);
        let err = "The command '/bin/sh -c exit 3' returned a non-zero code: 3";
        assert_eq!(failing_line(DOCKERFILE, err, &log), Some(8));
        assert_eq!(classify(err, &log).0, BuildFailureClass::RunFailed);
    }

    #[test]
    fn buildkit_engine_errors_map_through_the_command() {
        let err = "executor failed running [/bin/sh -c exit 3]: exit code: 3";
        assert_eq!(failing_line(DOCKERFILE, err, &[]), Some(8));
        let vertex = lines(&["[2/3] RUN exit 3"]);
        assert_eq!(failing_line(DOCKERFILE, "exit code: 3", &vertex), Some(8));
        let logged = lines(&[
            "[3/3] RUN exit 3",
            "[3/3] RUN exit 3 ERROR: executor failed running [/bin/sh -c exit 3]: exit code: 3",
            "=== failed",
        ]);
        assert_eq!(failing_line(DOCKERFILE, "exit code: 3", &logged), Some(8));
        let buildx = lines(&[
            "#6 [2/3] RUN apt-get update &&     apt-get install -y curl",
            "#6 DONE 0.1s",
            "#7 [3/3] RUN exit 3",
            "#7 ERROR: process did not complete successfully: exit code: 3",
        ]);
        assert_eq!(
            failing_line(DOCKERFILE, "process did not complete", &buildx),
            Some(8)
        );
    }

    #[test]
    fn network_failures_inside_builds_are_transient() {
        let cases = [
            (
                "failed to solve: failed to resolve reference \"docker.io/library/ubuntu:22.04\": failed to do request: Head \"https://registry-1.docker.io/v2/library/ubuntu/manifests/22.04\": EOF",
                vec![],
            ),
            (
                "The command '/bin/sh -c apt-get update' returned a non-zero code: 100",
                lines(&[
                    "W: Failed to fetch http://deb.debian.org/debian/dists/bookworm/InRelease  Temporary failure resolving 'deb.debian.org'",
                ]),
            ),
            (
                "The command '/bin/sh -c wget -q http://127.0.0.1:1/x' returned a non-zero code: 1",
                lines(&["wget: error getting response: Connection reset by peer"]),
            ),
            (
                "executor failed running [/bin/sh -c apk add curl]: exit code: 1",
                lines(&[
                    "ERROR: http://dl-cdn.alpinelinux.org/alpine/v3.19/main: temporary error (try again later)",
                ]),
            ),
            (
                "exit code: 1",
                lines(&[
                    "pip._vendor.urllib3.exceptions.ReadTimeoutError: HTTPSConnectionPool(host='pypi.org', port=443): Read timed out.",
                ]),
            ),
            (
                "exit code: 6",
                lines(&["curl: (6) Could not resolve host: example.com"]),
            ),
        ];
        for (err, log) in cases {
            let (class, _) = classify(err, &log);
            assert_eq!(class, BuildFailureClass::Network, "{err} / {log:?}");
            assert!(class.is_transient());
        }
    }

    #[test]
    fn a_run_that_fails_on_its_own_is_not_retried() {
        let (class, _) = classify(
            "The command '/bin/sh -c exit 3' returned a non-zero code: 3",
            &lines(&["Step 4/5 : RUN exit 3"]),
        );
        assert_eq!(class, BuildFailureClass::RunFailed);
        assert!(!class.is_transient());
        let (class, _) = classify(
            "COPY failed: file not found in build context or excluded by .dockerignore: stat missing.txt: file does not exist",
            &[],
        );
        assert_eq!(class, BuildFailureClass::Input);
    }

    #[test]
    fn issue17_a_programs_own_network_words_do_not_make_a_network_failure() {
        // BuildKit quotes the command; the program printed the words itself.
        for err in [
            "process \"/bin/sh -c echo 'dial tcp: connection refused' && exit 1\" did not complete successfully: exit code: 1",
            "The command '/bin/sh -c ./run-tests' returned a non-zero code: 1",
        ] {
            let log = lines(&[
                "test_db ... FAILED: connection refused",
                "i/o timeout: unexpected EOF",
                "network error",
            ]);
            let (class, net) = classify(err, &log);
            assert_eq!(class, BuildFailureClass::RunFailed, "{err}");
            assert_eq!(net, None);
        }
        // The builder's own transport error still is one.
        let (class, _) = classify(
            "failed to solve: failed to copy: read tcp 127.0.0.1:1->127.0.0.1:2: read: connection reset by peer",
            &[],
        );
        assert_eq!(class, BuildFailureClass::Network);
    }
    /// BuildKit failing under load (seen at 120 concurrent builds on the 20.10 engine) is
    /// retried, even inside a RUN step's error.
    #[test]
    fn builder_failures_under_load_are_retried() {
        for error in [
            "executor failed running [/bin/sh -c sleep 1 && cat /src/*.txt | sha256sum > /digest]: flightcontrol: exceeded retry timeout",
            "failed to receive status: rpc error: code = Unknown desc = no such job sos03jlikbx8p6rbrub45afuu",
            "failed to solve: error writing layer blob: rename tmp file: rename /c/buildx-new/ingest/77c0/startedat.tmp /c/buildx-new/ingest/77c0/startedat: no such file or directory",
        ] {
            let (class, _) = classify(error, &[]);
            assert_eq!(class, BuildFailureClass::Builder, "{error}");
            assert!(class.is_transient());
        }
    }
}
