//! What the GitHub Actions runner tells a step through its environment: the one reader of
//! the `GITHUB_*` and `RUNNER_*` variables. (The action's inputs, `INPUT_*`, are declared
//! beside their flags in [`crate::cli`], where clap reads them.)

use std::path::PathBuf;

/// The runner's variables that matter to us, read once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActionsEnv {
    /// `GITHUB_ACTIONS=true`: workflow commands are understood.
    pub in_actions: bool,
    /// `RUNNER_DEBUG=1`.
    pub debug: bool,
    /// `GITHUB_WORKSPACE`.
    pub workspace: Option<PathBuf>,
    /// `GITHUB_STEP_SUMMARY`.
    pub step_summary: Option<PathBuf>,
    /// `GITHUB_OUTPUT`.
    pub output: Option<PathBuf>,
    /// `GITHUB_SERVER_URL/GITHUB_REPOSITORY/actions/runs/GITHUB_RUN_ID`.
    pub run_url: Option<String>,
    /// `GITHUB_REPOSITORY` (`OWNER/REPO`).
    pub repository: Option<String>,
    /// `GITHUB_SHA`.
    pub sha: Option<String>,
    /// `GITHUB_REF` (`refs/pull/N/merge` on pull requests).
    pub git_ref: Option<String>,
    /// `GITHUB_EVENT_PATH`: the event's JSON payload.
    pub event_path: Option<PathBuf>,
    /// `GITHUB_API_URL` (GitHub Enterprise Server: `https://HOST/api/v3`).
    pub api_url: Option<String>,
    /// `GITHUB_SERVER_URL`.
    pub server_url: Option<String>,
    /// `GITHUB_RUN_ID`.
    pub run_id: Option<String>,
    /// `GITHUB_RUN_ATTEMPT`.
    pub run_attempt: Option<String>,
    /// `GITHUB_JOB`.
    pub job: Option<String>,
    /// On `pull_request` / `pull_request_target` events: the event payload's
    /// `pull_request.base.sha` (the default of `--changed-since`).
    pub pull_request_base_sha: Option<String>,
}

impl ActionsEnv {
    /// From the process environment.
    pub fn from_env() -> ActionsEnv {
        ActionsEnv::from_lookup(&|k| std::env::var(k).ok())
    }

    /// From `lookup`, which reads one variable (empty values count as unset).
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> ActionsEnv {
        let var = |k: &str| lookup(k).filter(|v| !v.is_empty());
        let run_url = match (
            var("GITHUB_SERVER_URL"),
            var("GITHUB_REPOSITORY"),
            var("GITHUB_RUN_ID"),
        ) {
            (Some(server), Some(repo), Some(id)) => Some(format!(
                "{}/{repo}/actions/runs/{id}",
                server.trim_end_matches('/')
            )),
            _ => None,
        };
        ActionsEnv {
            in_actions: var("GITHUB_ACTIONS").as_deref() == Some("true"),
            debug: var("RUNNER_DEBUG").as_deref() == Some("1"),
            workspace: var("GITHUB_WORKSPACE").map(PathBuf::from),
            step_summary: var("GITHUB_STEP_SUMMARY").map(PathBuf::from),
            output: var("GITHUB_OUTPUT").map(PathBuf::from),
            run_url,
            repository: var("GITHUB_REPOSITORY"),
            sha: var("GITHUB_SHA"),
            git_ref: var("GITHUB_REF"),
            event_path: var("GITHUB_EVENT_PATH").map(PathBuf::from),
            api_url: var("GITHUB_API_URL"),
            server_url: var("GITHUB_SERVER_URL"),
            run_id: var("GITHUB_RUN_ID"),
            run_attempt: var("GITHUB_RUN_ATTEMPT"),
            job: var("GITHUB_JOB"),
            pull_request_base_sha: var("GITHUB_EVENT_NAME")
                .filter(|e| e.starts_with("pull_request"))
                .and(var("GITHUB_EVENT_PATH"))
                .and_then(|p| std::fs::read_to_string(p).ok())
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .and_then(|e| {
                    e.pointer("/pull_request/base/sha")
                        .and_then(serde_json::Value::as_str)
                        .map(str::to_string)
                })
                .filter(|sha| !sha.is_empty() && sha.bytes().all(|b| b.is_ascii_hexdigit())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_values_count_as_unset_and_the_run_url_needs_all_three_parts() {
        let vars = [
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_SERVER_URL", "https://github.com/"),
            ("GITHUB_REPOSITORY", "acme/shop"),
            ("GITHUB_RUN_ID", "7"),
            ("GITHUB_OUTPUT", ""),
        ];
        let env = ActionsEnv::from_lookup(&|k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        });
        assert!(env.in_actions);
        assert_eq!(env.output, None);
        assert_eq!(
            env.run_url.as_deref(),
            Some("https://github.com/acme/shop/actions/runs/7")
        );
        let none = ActionsEnv::from_lookup(&|k| (k == "GITHUB_RUN_ID").then(|| "7".into()));
        assert_eq!(none.run_url, None);
        assert!(!none.in_actions);
    }

    #[test]
    fn issue15_the_pull_request_base_sha_comes_from_the_event_payload() {
        let dir = tempfile::tempdir().unwrap();
        let event = dir.path().join("event.json");
        std::fs::write(
            &event,
            r#"{"pull_request":{"number":3,"base":{"sha":"0123abcd"}}}"#,
        )
        .unwrap();
        let path = event.display().to_string();
        let with = |name: &'static str| {
            let path = path.clone();
            ActionsEnv::from_lookup(&move |k| match k {
                "GITHUB_EVENT_NAME" => Some(name.to_string()),
                "GITHUB_EVENT_PATH" => Some(path.clone()),
                _ => None,
            })
        };
        assert_eq!(
            with("pull_request").pull_request_base_sha.as_deref(),
            Some("0123abcd")
        );
        assert_eq!(
            with("pull_request_target").pull_request_base_sha.as_deref(),
            Some("0123abcd")
        );
        assert_eq!(with("push").pull_request_base_sha, None);
        std::fs::write(&event, r#"{"pull_request":{"base":{"sha":"--output=x"}}}"#).unwrap();
        assert_eq!(
            with("pull_request").pull_request_base_sha,
            None,
            "not a SHA"
        );
    }
}
