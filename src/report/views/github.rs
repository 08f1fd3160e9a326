//! The GitHub API views of a run (only when a token is given): one check run per service,
//! named `build (SERVICE)`, created `in_progress` when its build starts and completed with
//! its conclusion, summary and annotations (50 per request, the API's limit); and one PR
//! comment with the summary, found again by a hidden marker and updated in place.
//!
//! Permissions the job's token needs (least privilege):
//!
//! ```yaml
//! permissions:
//!   contents: read        # checkout
//!   checks: write         # the per-service check runs
//!   pull-requests: write  # the PR comment
//! ```
//!
//! A token without them (a pull request from a fork gets a read-only one) makes the API answer
//! 403: that becomes one warning, and the run's result is not affected. Honours
//! `GITHUB_API_URL` (GitHub Enterprise Server: `https://HOST/api/v3`), and `HTTPS_PROXY` /
//! `HTTP_PROXY` / `NO_PROXY` by the rules the relay and the probes follow
//! ([`crate::registry_trust::ProxyEnv`]).
//!
//! Retries are ours, never octocrab's (its retry layer re-sends POSTs blindly): transient
//! failures (5xx, 429, connection errors, timeouts) are retried a few times, and every retry is
//! idempotent: before re-sending a create, we look whether the first one arrived (check runs
//! by `external_id`, comments by the marker); before re-sending an annotation batch, whether
//! the check run already counts it. Every retry goes through the crate's one retry runner
//! ([`crate::retry::RetryPolicy::retry`]; the policy from [`ApiSettings::policy`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use octocrab::Octocrab;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::annotations::{self, Annotation, PathMapper};
use super::summary::{self, SummaryOptions};
use crate::actions_env::ActionsEnv;
use crate::registry_trust::ProxyEnv;
use crate::report::{Report, ServiceResult, ServiceStatus};
use crate::retry::{ErrorClass, RetryHint, RetryPolicy, classify_status};

/// The API takes at most this many annotations per request.
pub const ANNOTATIONS_PER_REQUEST: usize = 50;
/// A check run's `output.summary` and a comment's body are limited to 65 535 characters.
const OUTPUT_LIMIT: usize = 60_000;

/// Where the API calls go and what they are about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitHubTarget {
    /// `https://api.github.com`, or `https://HOST/api/v3` on GitHub Enterprise Server.
    pub api_url: String,
    pub owner: String,
    pub repo: String,
    /// The commit the check runs belong to (a pull request's head, not its merge commit).
    pub head_sha: String,
    /// The pull request to comment on, if the run is for one.
    pub pull_request: Option<u64>,
    /// Link from each check run to the workflow run.
    pub details_url: Option<String>,
    /// Identifies this run's check runs (their `external_id` is `RUN_KEY/SERVICE`), so that a
    /// create that is retried finds the first one instead of making a second.
    pub run_key: String,
}

impl GitHubTarget {
    /// From the runner's environment: `GITHUB_API_URL`, `GITHUB_REPOSITORY`, `GITHUB_SHA`,
    /// `GITHUB_EVENT_PATH` (a pull request's number and head commit), `GITHUB_SERVER_URL`,
    /// `GITHUB_RUN_ID` and `GITHUB_RUN_ATTEMPT`.
    pub fn from_actions(env: &ActionsEnv) -> Result<GitHubTarget, TargetError> {
        let repository = env
            .repository
            .clone()
            .ok_or(TargetError::Missing("GITHUB_REPOSITORY"))?;
        let (owner, repo) = repository
            .split_once('/')
            .filter(|(o, r)| !o.is_empty() && !r.is_empty() && !r.contains('/'))
            .ok_or_else(|| TargetError::Repository(repository.clone()))?;
        let event: Option<Value> = env
            .event_path
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|t| serde_json::from_str(&t).ok());
        let pr = event.as_ref().and_then(|e| e.get("pull_request"));
        let pull_request = pr
            .and_then(|p| p.get("number"))
            .and_then(Value::as_u64)
            .or_else(|| {
                // `refs/pull/N/merge` when the event file says nothing.
                env.git_ref
                    .as_deref()?
                    .strip_prefix("refs/pull/")?
                    .split('/')
                    .next()?
                    .parse()
                    .ok()
            });
        let head_sha = pr
            .and_then(|p| p.pointer("/head/sha"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| env.sha.clone())
            .ok_or(TargetError::Missing("GITHUB_SHA"))?;
        let run_id = env.run_id.clone();
        let details_url = match (&run_id, &env.server_url) {
            (Some(id), Some(server)) => Some(format!(
                "{}/{repository}/actions/runs/{id}",
                server.trim_end_matches('/')
            )),
            _ => None,
        };
        Ok(GitHubTarget {
            api_url: env
                .api_url
                .clone()
                .unwrap_or_else(|| "https://api.github.com".into()),
            owner: owner.to_string(),
            repo: repo.to_string(),
            head_sha,
            pull_request,
            details_url,
            run_key: format!(
                "ai-infra-build/{}/{}{}",
                run_id.unwrap_or_else(|| "local".into()),
                env.run_attempt.clone().unwrap_or_else(|| "1".into()),
                env.job
                    .as_ref()
                    .map(|j| format!("/{j}"))
                    .unwrap_or_default()
            ),
        })
    }
}

/// Why the environment names no repository and commit for the GitHub API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("{0} is not set")]
    Missing(&'static str),
    #[error("GITHUB_REPOSITORY {0:?} is not OWNER/REPO")]
    Repository(String),
}

/// How hard we try.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Tries of one request (first try included) on transient failures.
    pub attempts: u32,
    /// The ceiling of the wait before the first retry (full jitter); doubled for each further
    /// one.
    pub backoff: Duration,
    /// Bound on one request, response included.
    pub timeout: Duration,
    /// At most this many check runs per run (the token's API budget is ~1000 requests an hour).
    pub max_check_runs: usize,
    /// Post (or update) the PR comment.
    pub comment: bool,
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            attempts: 3,
            backoff: Duration::from_secs(2),
            timeout: Duration::from_secs(30),
            max_check_runs: 100,
            comment: true,
        }
    }
}

impl ApiSettings {
    /// The retry policy of one API call: `attempts` tries, `backoff` doubling, and no retry
    /// starting more than [`API_RETRY_DEADLINE`] after the first try.
    pub fn policy(&self) -> RetryPolicy {
        let retries = self.attempts.saturating_sub(1);
        RetryPolicy {
            max_retries: retries,
            base_delay: self.backoff,
            max_delay: self.backoff.saturating_mul(1u32 << retries.min(20)),
            deadline: API_RETRY_DEADLINE,
        }
    }
}

/// How long one API call may be retried.
pub const API_RETRY_DEADLINE: Duration = Duration::from_secs(300);

/// A failed API call.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{method} {route}: GitHub answered {status}: {message}")]
    Status {
        method: &'static str,
        route: String,
        status: u16,
        message: String,
    },
    #[error("{method} {route}: {source}")]
    Transport {
        method: &'static str,
        route: String,
        #[source]
        source: Box<octocrab::Error>,
    },
    #[error("{method} {route}: no answer within {}s", timeout.as_secs())]
    Timeout {
        method: &'static str,
        route: String,
        timeout: Duration,
    },
    #[error("{method} {route}: unexpected answer: {reason}")]
    Answer {
        method: &'static str,
        route: String,
        reason: String,
    },
    #[error("cannot set up the GitHub API client for {api_url}: {source}")]
    Client {
        api_url: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl ApiError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Worth another try: server errors, rate limiting, lost connections, timeouts.
    pub fn is_transient(&self) -> bool {
        match self {
            ApiError::Status { status, .. } => *status >= 500 || *status == 429,
            ApiError::Transport { .. } | ApiError::Timeout { .. } => true,
            ApiError::Answer { .. } | ApiError::Client { .. } => false,
        }
    }

    /// The token may not do this (401, 403; 404 is what GitHub answers for a resource the
    /// token cannot see).
    pub fn is_forbidden(&self) -> bool {
        matches!(self.status(), Some(401 | 403 | 404))
    }
}

impl RetryHint for ApiError {
    fn class(&self) -> ErrorClass {
        match self {
            ApiError::Status { status, .. } => {
                classify_status(*status).unwrap_or(ErrorClass::Other)
            }
            ApiError::Transport { .. } => ErrorClass::ConnectionReset,
            ApiError::Timeout { .. } => ErrorClass::Timeout,
            ApiError::Answer { .. } | ApiError::Client { .. } => ErrorClass::Other,
        }
    }

    fn is_transient(&self) -> bool {
        ApiError::is_transient(self)
    }

    /// API calls wait the full backoff whatever the class.
    fn backoff_scale(&self) -> f64 {
        1.0
    }
}

/// The error of one try of a create or an append: the request's own (retried when
/// transient), or that of the look-up before a re-send (which retried itself and ends the
/// loop).
#[derive(Debug)]
enum TryError {
    Send(ApiError),
    Lookup(ApiError),
}

impl TryError {
    fn into_inner(self) -> ApiError {
        match self {
            TryError::Send(e) | TryError::Lookup(e) => e,
        }
    }
}

impl RetryHint for TryError {
    fn class(&self) -> ErrorClass {
        match self {
            TryError::Send(e) | TryError::Lookup(e) => e.class(),
        }
    }

    fn is_transient(&self) -> bool {
        matches!(self, TryError::Send(e) if e.is_transient())
    }

    fn backoff_scale(&self) -> f64 {
        1.0
    }
}

/// A check run's conclusion.
pub fn conclusion(status: ServiceStatus) -> &'static str {
    match status {
        ServiceStatus::Success => "success",
        ServiceStatus::Failed => "failure",
        ServiceStatus::Skipped => "skipped",
        ServiceStatus::Cancelled => "cancelled",
    }
}

/// One annotation as the check-runs API takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckAnnotation {
    pub path: String,
    pub start_line: usize,
    pub end_line: usize,
    pub annotation_level: &'static str,
    pub title: String,
    pub message: String,
}

impl CheckAnnotation {
    /// Annotations without a file have no place in a check run: `None`.
    pub fn from_annotation(a: &Annotation) -> Option<CheckAnnotation> {
        let path = a.file.clone()?;
        let line = a.line.unwrap_or(1).max(1);
        Some(CheckAnnotation {
            path,
            start_line: line,
            end_line: line,
            annotation_level: a.level.check_run_level(),
            title: a.title.clone(),
            message: a.message.clone(),
        })
    }
}

/// The finished state of one check run.
#[derive(Debug, Clone)]
pub struct CheckCompletion {
    pub conclusion: &'static str,
    pub title: String,
    pub summary: String,
    pub annotations: Vec<CheckAnnotation>,
}

impl CheckCompletion {
    /// What a service's check run says at the end; `all` is [`annotations::collect`] of the
    /// report.
    pub fn for_service(report: &Report, s: &ServiceResult, all: &[Annotation]) -> CheckCompletion {
        let title = match (&s.status, &s.failure) {
            (ServiceStatus::Failed, Some(f)) => {
                format!("failed: {}", annotations::failure_label(f.class).1)
            }
            (ServiceStatus::Failed, None) => "failed".into(),
            (ServiceStatus::Success, _) => {
                format!("built in {}", crate::report::text::duration(s.duration_ms))
            }
            (ServiceStatus::Skipped, _) => format!(
                "skipped: {}",
                s.skipped_reason.as_deref().unwrap_or("not built")
            ),
            (ServiceStatus::Cancelled, _) => "cancelled".into(),
        };
        let annotations = all
            .iter()
            .filter(|a| a.services.contains(&s.name))
            .filter_map(CheckAnnotation::from_annotation)
            .collect();
        CheckCompletion {
            conclusion: conclusion(s.status),
            title: crate::report::text::truncate(&title, 200),
            summary: summary::render_service(report, s, OUTPUT_LIMIT),
            annotations,
        }
    }
}

/// The API client for one run. Cheap to share (`Arc`); all methods take `&self`.
pub struct GitHub {
    client: Octocrab,
    target: GitHubTarget,
    settings: ApiSettings,
    /// Service → check run id.
    check_runs: tokio::sync::Mutex<HashMap<String, u64>>,
    forbidden: AtomicBool,
    limit_warned: AtomicBool,
    warnings: Mutex<Vec<String>>,
    /// The login the token acts as (see [`GitHub::login`]), asked once.
    login: tokio::sync::OnceCell<String>,
}

/// Who comments with a workflow's `GITHUB_TOKEN` (which may not ask `GET /user`).
pub const ACTIONS_BOT: &str = "github-actions[bot]";

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl GitHub {
    /// A client for `target` with `token`, through the proxy the environment names
    /// (`HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY`, see [`ProxyEnv`]). octocrab's own retries are off
    /// (not compiled in).
    pub fn new(
        token: &str,
        target: GitHubTarget,
        settings: ApiSettings,
    ) -> Result<GitHub, ApiError> {
        GitHub::with_proxies(token, target, settings, ProxyEnv::from_env())
    }

    /// [`GitHub::new`] with the proxy settings given instead of read from the environment.
    pub fn with_proxies(
        token: &str,
        target: GitHubTarget,
        settings: ApiSettings,
        proxies: ProxyEnv,
    ) -> Result<GitHub, ApiError> {
        let client = super::github_http::client(token, &target.api_url, settings.timeout, proxies)
            .map_err(|source| ApiError::Client {
                api_url: target.api_url.clone(),
                source,
            })?;
        Ok(GitHub {
            client,
            target,
            settings,
            check_runs: tokio::sync::Mutex::new(HashMap::new()),
            forbidden: AtomicBool::new(false),
            login: tokio::sync::OnceCell::new(),
            limit_warned: AtomicBool::new(false),
            warnings: Mutex::new(Vec::new()),
        })
    }

    pub fn target(&self) -> &GitHubTarget {
        &self.target
    }

    /// Warnings so far (a refused token, failed calls): for the step's log, never fatal.
    pub fn warnings(&self) -> Vec<String> {
        self.warnings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn warn(&self, text: String) {
        self.warnings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(text);
    }

    /// Records a failed call: the first refusal disables all further calls with one warning.
    fn failed(&self, what: &str, err: &ApiError) {
        if err.is_forbidden() {
            if !self.forbidden.swap(true, Ordering::SeqCst) {
                self.warn(format!(
                    "the GitHub token may not {what} ({err}); check runs and the PR comment are skipped. \
                     Give the job `permissions: checks: write, pull-requests: write` \
                     (a pull request from a fork only gets a read-only token)"
                ));
            }
        } else {
            self.warn(format!("could not {what}: {err}"));
        }
    }

    fn disabled(&self) -> bool {
        self.forbidden.load(Ordering::SeqCst)
    }

    fn repo_route(&self, rest: &str) -> String {
        format!("/repos/{}/{}{rest}", self.target.owner, self.target.repo)
    }

    /// One request, no retries.
    async fn call(
        &self,
        method: &'static str,
        route: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Value, ApiError> {
        let fut = async {
            match method {
                "GET" if query.is_empty() => self.client.get::<Value, _, ()>(route, None).await,
                "GET" => self.client.get::<Value, _, _>(route, Some(query)).await,
                "POST" => self.client.post::<_, Value>(route, body).await,
                "PATCH" => self.client.patch::<Value, _, _>(route, body).await,
                _ => unreachable!("only GET, POST and PATCH are used"),
            }
        };
        match tokio::time::timeout(self.settings.timeout, fut).await {
            Err(_) => Err(ApiError::Timeout {
                method,
                route: route.to_string(),
                timeout: self.settings.timeout,
            }),
            Ok(Ok(v)) => Ok(v),
            Ok(Err(octocrab::Error::GitHub { source, .. })) => Err(ApiError::Status {
                method,
                route: route.to_string(),
                status: source.status_code.as_u16(),
                message: source.message.clone(),
            }),
            Ok(Err(source)) => Err(ApiError::Transport {
                method,
                route: route.to_string(),
                source: Box::new(source),
            }),
        }
    }

    /// Runs one try after another through the retry runner; `attempt` gets the try's number
    /// (1 for the first).
    async fn retrying<T, Fut>(&self, attempt: impl Fn(u32) -> Fut) -> Result<T, ApiError>
    where
        Fut: std::future::Future<Output = Result<T, TryError>>,
    {
        let tries = std::sync::atomic::AtomicU32::new(0);
        self.settings
            .policy()
            .run(
                || attempt(tries.fetch_add(1, Ordering::SeqCst) + 1),
                |_, _| {},
            )
            .await
            .map_err(TryError::into_inner)
    }

    /// GET/PATCH with retries (both are idempotent as they are).
    async fn call_idempotent(
        &self,
        method: &'static str,
        route: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Value, ApiError> {
        self.settings
            .policy()
            .run(|| self.call(method, route, query, body), |_, _| {})
            .await
    }

    fn external_id(&self, service: &str) -> String {
        format!("{}/{service}", self.target.run_key)
    }

    /// The check run this run made for `service`, if one exists (after a create whose answer
    /// was lost).
    async fn find_check_run(&self, service: &str) -> Result<Option<u64>, ApiError> {
        let route = self.repo_route(&format!("/commits/{}/check-runs", self.target.head_sha));
        let query = [
            ("check_name", check_name(service)),
            ("filter", "all".to_string()),
            ("per_page", "100".to_string()),
        ];
        let found = self.call_idempotent("GET", &route, &query, None).await?;
        let external_id = self.external_id(service);
        Ok(found
            .get("check_runs")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|r| r.get("external_id").and_then(Value::as_str) == Some(external_id.as_str()))
            .and_then(|r| r.get("id"))
            .and_then(Value::as_u64))
    }

    /// Creates a check run; a retry first looks for the one a lost answer may have created.
    async fn create_check_run(&self, service: &str, body: Value) -> Result<u64, ApiError> {
        let route = self.repo_route("/check-runs");
        self.retrying(|try_number| {
            let (route, body) = (&route, &body);
            async move {
                if try_number > 1
                    && let Some(id) = self
                        .find_check_run(service)
                        .await
                        .map_err(TryError::Lookup)?
                {
                    return Ok(id);
                }
                let v = self
                    .call("POST", route, &[], Some(body))
                    .await
                    .map_err(TryError::Send)?;
                v.get("id").and_then(Value::as_u64).ok_or_else(|| {
                    TryError::Lookup(ApiError::Answer {
                        method: "POST",
                        route: route.clone(),
                        reason: "no check run id".into(),
                    })
                })
            }
        })
        .await
    }

    fn may_create_check_run(&self, runs: &HashMap<String, u64>) -> bool {
        if runs.len() < self.settings.max_check_runs {
            return true;
        }
        if !self.limit_warned.swap(true, Ordering::SeqCst) {
            self.warn(format!(
                "check runs are made for the first {} services only (the token's API budget is about 1000 requests an hour); the step summary lists all",
                self.settings.max_check_runs
            ));
        }
        false
    }

    /// Creates `build (SERVICE)` as `in_progress`. Does nothing if it exists already.
    pub async fn start_check(&self, service: &str) {
        if self.disabled() {
            return;
        }
        let mut runs = self.check_runs.lock().await;
        if runs.contains_key(service) || !self.may_create_check_run(&runs) {
            return;
        }
        let mut body = json!({
            "name": check_name(service),
            "head_sha": self.target.head_sha,
            "status": "in_progress",
            "started_at": now(),
            "external_id": self.external_id(service),
        });
        if let Some(url) = &self.target.details_url {
            body["details_url"] = json!(url);
        }
        match self.create_check_run(service, body).await {
            Ok(id) => {
                runs.insert(service.to_string(), id);
            }
            Err(e) => self.failed(&format!("create the check run for {service}"), &e),
        }
    }

    /// Completes the check run of `service` (creating it first if its build never started):
    /// the annotations go in batches of [`ANNOTATIONS_PER_REQUEST`], the last batch together
    /// with `status: completed` and the conclusion.
    pub async fn complete_check(&self, service: &str, done: &CheckCompletion) {
        if self.disabled() {
            return;
        }
        let existing = self.check_runs.lock().await.get(service).copied();
        let id = match existing {
            Some(id) => id,
            None => {
                self.start_check(service).await;
                match self.check_runs.lock().await.get(service).copied() {
                    Some(id) => id,
                    None => return,
                }
            }
        };
        let route = self.repo_route(&format!("/check-runs/{id}"));
        let batches: Vec<&[CheckAnnotation]> = if done.annotations.is_empty() {
            vec![&[]]
        } else {
            done.annotations.chunks(ANNOTATIONS_PER_REQUEST).collect()
        };
        let mut sent = 0usize;
        for (i, batch) in batches.iter().enumerate() {
            let mut body = json!({
                "output": { "title": done.title, "summary": done.summary, "annotations": batch },
            });
            if i + 1 == batches.len() {
                body["status"] = json!("completed");
                body["conclusion"] = json!(done.conclusion);
                body["completed_at"] = json!(now());
            }
            if let Err(e) = self.append_batch(&route, &body, sent, batch.len()).await {
                self.failed(&format!("complete the check run for {service}"), &e);
                return;
            }
            sent += batch.len();
        }
    }

    /// PATCHes a batch; a retry first asks the check run whether the batch already counts
    /// (annotations are appended, so a blind re-send would duplicate them).
    async fn append_batch(
        &self,
        route: &str,
        body: &Value,
        sent_before: usize,
        batch: usize,
    ) -> Result<(), ApiError> {
        self.retrying(|try_number| async move {
            if try_number > 1 && batch > 0 {
                let run = self
                    .call_idempotent("GET", route, &[], None)
                    .await
                    .map_err(TryError::Lookup)?;
                let count = run
                    .pointer("/output/annotations_count")
                    .and_then(Value::as_u64)
                    .unwrap_or(0) as usize;
                if count >= sent_before + batch {
                    return Ok(());
                }
            }
            self.call("PATCH", route, &[], Some(body))
                .await
                .map(|_| ())
                .map_err(TryError::Send)
        })
        .await
    }

    /// The login our comments are written by: `GET /user`'s for a personal token, else (an
    /// app's installation token such as `GITHUB_TOKEN` may not ask) [`ACTIONS_BOT`]. Asked
    /// once per client.
    async fn login(&self) -> &str {
        self.login
            .get_or_init(|| async {
                self.call_idempotent("GET", "/user", &[], None)
                    .await
                    .ok()
                    .and_then(|u| u.get("login").and_then(Value::as_str).map(str::to_string))
                    .unwrap_or_else(|| ACTIONS_BOT.to_string())
            })
            .await
    }

    /// The id of our comment on the pull request, if there is one: it carries the marker
    /// and was written by us ([`GitHub::login`]). A comment with the marker by anyone else
    /// (quoted, or planted) is never updated.
    async fn find_comment(&self, pr: u64) -> Result<Option<u64>, ApiError> {
        let login = self.login().await;
        let route = self.repo_route(&format!("/issues/{pr}/comments"));
        // Bounded: 30 pages of 100 comments.
        for page in 1..=30u32 {
            let query = [("per_page", "100".to_string()), ("page", page.to_string())];
            let comments = self.call_idempotent("GET", &route, &query, None).await?;
            let list = comments.as_array().cloned().unwrap_or_default();
            if let Some(id) = list
                .iter()
                .find(|c| {
                    c.get("body")
                        .and_then(Value::as_str)
                        .is_some_and(|b| b.starts_with(summary::COMMENT_MARKER))
                        && c.pointer("/user/login").and_then(Value::as_str) == Some(login)
                })
                .and_then(|c| c.get("id"))
                .and_then(Value::as_u64)
            {
                return Ok(Some(id));
            }
            if list.len() < 100 {
                break;
            }
        }
        Ok(None)
    }

    /// Creates our PR comment, or updates it in place when it exists (never a second one).
    /// `body` must contain [`summary::COMMENT_MARKER`].
    pub async fn upsert_comment(&self, body: &str) {
        let Some(pr) = self.target.pull_request else {
            return;
        };
        if self.disabled() || !self.settings.comment {
            return;
        }
        if let Err(e) = self.try_upsert_comment(pr, body).await {
            self.failed("comment on the pull request", &e);
        }
    }

    async fn try_upsert_comment(&self, pr: u64, body: &str) -> Result<(), ApiError> {
        let payload = json!({ "body": body });
        // Each try looks first: the POST of an earlier try may have arrived.
        self.retrying(|_| {
            let payload = &payload;
            async move {
                if let Some(id) = self.find_comment(pr).await.map_err(TryError::Lookup)? {
                    let route = self.repo_route(&format!("/issues/comments/{id}"));
                    return self
                        .call_idempotent("PATCH", &route, &[], Some(payload))
                        .await
                        .map(|_| ())
                        .map_err(TryError::Lookup);
                }
                let route = self.repo_route(&format!("/issues/{pr}/comments"));
                self.call("POST", &route, &[], Some(payload))
                    .await
                    .map(|_| ())
                    .map_err(TryError::Send)
            }
        })
        .await
    }

    /// Everything at the end of a run: completes every service's check run and posts the
    /// PR comment.
    /// `comment` is the PR comment's body (the [`GitHubView`]'s text).
    pub async fn publish(&self, report: &Report, paths: &PathMapper, comment: &str) {
        let all = annotations::collect(report, paths);
        futures_util::stream::iter(&report.services)
            .for_each_concurrent(4, |s| {
                let done = CheckCompletion::for_service(report, s, &all);
                async move { self.complete_check(&s.name, &done).await }
            })
            .await;
        if self.target.pull_request.is_some() && self.settings.comment {
            self.upsert_comment(comment).await;
        }
    }
}

/// Check runs and the PR comment. Published through [`GitHub::publish`] (the API is async
/// and needs a token); its text is the PR comment's body.
pub struct GitHubView;

impl super::View for GitHubView {
    fn name(&self) -> &'static str {
        "comment"
    }

    fn about(&self) -> &'static str {
        "the PR comment (Markdown) that a run with a GitHub token posts"
    }

    fn destinations(&self, _: &super::ViewContext) -> Vec<super::Destination> {
        vec![super::Destination::GitHubApi]
    }

    fn render(&self, report: &Report, ctx: &super::ViewContext) -> String {
        summary::render(
            report,
            &SummaryOptions {
                run_url: ctx.actions.run_url.clone(),
                report_path: Some(ctx.report_shown.clone()),
                ..SummaryOptions::comment()
            },
        )
    }
}

/// `build (SERVICE)`.
pub fn check_name(service: &str) -> String {
    format!("build ({service})")
}

/// Feeds [`GitHub::start_check`] from synchronous callbacks (the scheduler's events): calls
/// are queued and sent in order by one task.
pub struct CheckStarter {
    tx: mpsc::UnboundedSender<String>,
    task: tokio::task::JoinHandle<()>,
}

impl CheckStarter {
    /// Needs a Tokio runtime.
    pub fn spawn(github: Arc<GitHub>) -> CheckStarter {
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        let task = tokio::spawn(async move {
            while let Some(service) = rx.recv().await {
                github.start_check(&service).await;
            }
        });
        CheckStarter { tx, task }
    }

    /// Queues the creation of `build (SERVICE)` as `in_progress`.
    pub fn service_started(&self, service: &str) {
        let _ = self.tx.send(service.to_string());
    }

    /// Waits until every queued creation was sent.
    pub async fn drain(self) {
        drop(self.tx);
        let _ = self.task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn target_from_a_pull_request_event_uses_the_head_commit() {
        let dir = tempfile::tempdir().unwrap();
        let event = dir.path().join("event.json");
        std::fs::write(
            &event,
            r#"{"pull_request":{"number":42,"head":{"sha":"abc123"}}}"#,
        )
        .unwrap();
        let lookup = env(&[
            ("GITHUB_REPOSITORY", "acme/shop"),
            ("GITHUB_SHA", "mergecommit"),
            ("GITHUB_EVENT_PATH", event.to_str().unwrap()),
            ("GITHUB_API_URL", "https://ghes.example.com/api/v3"),
            ("GITHUB_SERVER_URL", "https://ghes.example.com"),
            ("GITHUB_RUN_ID", "77"),
            ("GITHUB_RUN_ATTEMPT", "2"),
            ("GITHUB_JOB", "build"),
        ]);
        let t = GitHubTarget::from_actions(&ActionsEnv::from_lookup(&lookup)).unwrap();
        assert_eq!(t.api_url, "https://ghes.example.com/api/v3");
        assert_eq!((t.owner.as_str(), t.repo.as_str()), ("acme", "shop"));
        assert_eq!(t.head_sha, "abc123");
        assert_eq!(t.pull_request, Some(42));
        assert_eq!(
            t.details_url.as_deref(),
            Some("https://ghes.example.com/acme/shop/actions/runs/77")
        );
        assert_eq!(t.run_key, "ai-infra-build/77/2/build");
    }

    #[test]
    fn target_from_a_push_uses_github_sha_and_the_public_api() {
        let lookup = env(&[
            ("GITHUB_REPOSITORY", "acme/shop"),
            ("GITHUB_SHA", "deadbeef"),
        ]);
        let t = GitHubTarget::from_actions(&ActionsEnv::from_lookup(&lookup)).unwrap();
        assert_eq!(t.api_url, "https://api.github.com");
        assert_eq!(t.head_sha, "deadbeef");
        assert_eq!(t.pull_request, None);
        let lookup = env(&[
            ("GITHUB_REPOSITORY", "acme/shop"),
            ("GITHUB_SHA", "x"),
            ("GITHUB_REF", "refs/pull/7/merge"),
        ]);
        assert_eq!(
            GitHubTarget::from_actions(&ActionsEnv::from_lookup(&lookup))
                .unwrap()
                .pull_request,
            Some(7)
        );
    }

    #[test]
    fn target_needs_a_repository() {
        let target = |vars: &[(&str, &str)]| {
            GitHubTarget::from_actions(&ActionsEnv::from_lookup(&env(vars)))
        };
        assert_eq!(
            target(&[("GITHUB_SHA", "x")]),
            Err(TargetError::Missing("GITHUB_REPOSITORY"))
        );
        assert!(target(&[("GITHUB_REPOSITORY", "noslash"), ("GITHUB_SHA", "x")]).is_err());
    }

    #[test]
    fn error_classes_decide_retry_and_warning() {
        let status = |s| ApiError::Status {
            method: "POST",
            route: "/x".into(),
            status: s,
            message: "m".into(),
        };
        assert!(status(502).is_transient() && status(429).is_transient());
        assert!(!status(403).is_transient() && status(403).is_forbidden());
        assert!(status(404).is_forbidden() && !status(422).is_forbidden());
        assert!(
            ApiError::Timeout {
                method: "GET",
                route: "/x".into(),
                timeout: Duration::from_secs(1)
            }
            .is_transient()
        );
    }
}
