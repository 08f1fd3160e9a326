//! Issue #5: the GitHub API views (check runs, the PR comment) against a local fake of the
//! API on 127.0.0.1 that records every request, and publishing a whole run (files, workflow
//! commands, masks, API) with the environment a runner gives.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ai_infra_build::registry_trust::ProxyEnv;
use ai_infra_build::report::annotations::{Annotation, Level};
use ai_infra_build::report::github::{
    ApiSettings, CheckAnnotation, CheckCompletion, GitHub, GitHubTarget,
};
use ai_infra_build::report::progress::Progress;
use ai_infra_build::report::publish::{PublishContext, Publisher};
use ai_infra_build::report::{REPORT_FILE, Report};
use ai_infra_build::ui::{ColorChoice, MemorySink, OutputFormat, Ui, use_color};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use testbed::forward_proxy::ForwardProxy;
use testbed::netns::Netns;
use testbed::tls::{Front, FrontOptions, TestCa};

// ---------------------------------------------------------------------------------------
// A fake of the parts of the GitHub REST API we use.

#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    path: String,
    query: BTreeMap<String, String>,
    body: Value,
    auth: Option<String>,
}

impl Recorded {
    fn line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// Answer `status` to the next `times` requests matching `method` and a path containing
/// `path`; with `apply`, do what was asked first (the answer is lost, not the request).
#[derive(Debug, Clone)]
struct Fault {
    method: &'static str,
    path: &'static str,
    status: u16,
    apply: bool,
    times: usize,
}

#[derive(Default)]
struct State {
    requests: Vec<Recorded>,
    check_runs: Vec<Value>,
    comments: Vec<Value>,
    next_id: u64,
    faults: Vec<Fault>,
    forbidden: bool,
    /// `GET /user`'s login (a personal token); `None`: 403, as for a `GITHUB_TOKEN`, whose
    /// comments are by `github-actions[bot]`.
    login: Option<String>,
}

struct FakeGitHub {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeGitHub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

impl FakeGitHub {
    async fn start() -> FakeGitHub {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            next_id: 1,
            ..State::default()
        }));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, hyper::Error>(handle(&state, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakeGitHub { addr, state, task }
    }

    fn url(&self, base_path: &str) -> String {
        format!("http://{}{base_path}", self.addr)
    }

    fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    fn lines(&self) -> Vec<String> {
        self.requests().iter().map(Recorded::line).collect()
    }

    fn fault(&self, fault: Fault) {
        self.state.lock().unwrap().faults.push(fault);
    }
}

async fn handle(
    state: &Mutex<State>,
    req: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query: BTreeMap<String, String> = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect();
    let auth = req
        .headers()
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_string());
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).unwrap()
    };
    let mut st = state.lock().unwrap();
    st.requests.push(Recorded {
        method: method.clone(),
        path: path.clone(),
        query: query.clone(),
        body: body.clone(),
        auth,
    });
    let reply = |status: u16, v: Value| {
        Response::builder()
            .status(StatusCode::from_u16(status).unwrap())
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(v.to_string())))
            .unwrap()
    };
    if st.forbidden {
        return reply(
            403,
            json!({"message": "Resource not accessible by integration", "documentation_url": "https://docs.github.com/rest"}),
        );
    }
    let mut fault = None;
    if let Some(f) = st
        .faults
        .iter_mut()
        .find(|f| f.times > 0 && f.method == method && path.contains(f.path))
    {
        f.times -= 1;
        fault = Some(f.clone());
    }
    if let Some(f) = &fault
        && !f.apply
    {
        return reply(f.status, json!({"message": "injected"}));
    }
    // Routes, with any base path (GHES: /api/v3) in front.
    if method == "GET" && path.ends_with("/user") {
        return match &st.login {
            Some(login) => reply(200, json!({"login": login})),
            None => reply(
                403,
                json!({"message": "Resource not accessible by integration"}),
            ),
        };
    }
    let Some(at) = path.find("/repos/acme/shop/") else {
        return reply(404, json!({"message": "Not Found"}));
    };
    let route = &path[at + "/repos/acme/shop".len()..];
    let segments: Vec<&str> = route.trim_start_matches('/').split('/').collect();
    let answer = match (method.as_str(), segments.as_slice()) {
        ("POST", ["check-runs"]) => {
            let id = st.next_id;
            st.next_id += 1;
            let run = json!({
                "id": id, "name": body["name"], "external_id": body["external_id"], "head_sha": body["head_sha"],
                "status": body["status"], "conclusion": Value::Null, "output": {"annotations_count": 0},
            });
            st.check_runs.push(run.clone());
            (201, run)
        }
        ("PATCH", ["check-runs", id]) => {
            let id: u64 = id.parse().unwrap();
            let Some(run) = st.check_runs.iter_mut().find(|r| r["id"] == id) else {
                return reply(404, json!({}));
            };
            let added = body
                .pointer("/output/annotations")
                .and_then(Value::as_array)
                .map_or(0, Vec::len) as u64;
            let count = run["output"]["annotations_count"].as_u64().unwrap() + added;
            run["output"]["annotations_count"] = count.into();
            if let Some(s) = body.get("status") {
                run["status"] = s.clone();
            }
            if let Some(c) = body.get("conclusion") {
                run["conclusion"] = c.clone();
            }
            (200, run.clone())
        }
        ("GET", ["check-runs", id]) => {
            let id: u64 = id.parse().unwrap();
            match st.check_runs.iter().find(|r| r["id"] == id) {
                Some(run) => (200, run.clone()),
                None => (404, json!({})),
            }
        }
        ("GET", ["commits", _sha, "check-runs"]) => {
            let name = query.get("check_name").cloned().unwrap_or_default();
            let runs: Vec<Value> = st
                .check_runs
                .iter()
                .filter(|r| r["name"] == name.as_str())
                .cloned()
                .collect();
            (200, json!({"total_count": runs.len(), "check_runs": runs}))
        }
        ("GET", ["issues", _pr, "comments"]) => {
            let per_page: usize = query.get("per_page").map_or(30, |p| p.parse().unwrap());
            let page: usize = query.get("page").map_or(1, |p| p.parse().unwrap());
            let list: Vec<Value> = st
                .comments
                .iter()
                .skip((page - 1) * per_page)
                .take(per_page)
                .cloned()
                .collect();
            (200, Value::Array(list))
        }
        ("POST", ["issues", _pr, "comments"]) => {
            let id = 1000 + st.next_id;
            st.next_id += 1;
            let login = st.login.clone().unwrap_or("github-actions[bot]".into());
            let c = json!({"id": id, "body": body["body"], "user": {"login": login}});
            st.comments.push(c.clone());
            (201, c)
        }
        ("PATCH", ["issues", "comments", id]) => {
            let id: u64 = id.parse().unwrap();
            let Some(c) = st.comments.iter_mut().find(|c| c["id"] == id) else {
                return reply(404, json!({}));
            };
            c["body"] = body["body"].clone();
            (200, c.clone())
        }
        _ => (404, json!({"message": "Not Found"})),
    };
    match fault {
        Some(f) => reply(f.status, json!({"message": "injected after applying"})),
        None => reply(answer.0, answer.1),
    }
}

// ---------------------------------------------------------------------------------------

fn target(api_url: String, pr: Option<u64>) -> GitHubTarget {
    GitHubTarget {
        api_url,
        owner: "acme".into(),
        repo: "shop".into(),
        head_sha: "0123456789abcdef0123456789abcdef01234567".into(),
        pull_request: pr,
        details_url: Some("https://github.com/acme/shop/actions/runs/42".into()),
        run_key: "ai-infra-build/42/1".into(),
    }
}

fn fast() -> ApiSettings {
    ApiSettings {
        attempts: 3,
        backoff: Duration::from_millis(10),
        timeout: Duration::from_secs(10),
        ..ApiSettings::default()
    }
}

fn completion(annotations: usize) -> CheckCompletion {
    CheckCompletion {
        conclusion: "failure",
        title: "failed: a RUN step failed".into(),
        summary: "### ❌ api failed".into(),
        annotations: (0..annotations)
            .map(|i| {
                CheckAnnotation::from_annotation(&Annotation {
                    level: Level::Error,
                    file: Some("api/Dockerfile".into()),
                    line: Some(i + 1),
                    title: format!("a{i}"),
                    message: "m".into(),
                    services: vec!["api".into()],
                    rank: (0, 0, i),
                })
                .unwrap()
            })
            .collect(),
    }
}

#[tokio::test]
async fn check_run_is_created_in_progress_then_completed() {
    let fake = FakeGitHub::start().await;
    let gh = GitHub::new("tok-123", target(fake.url(""), None), fast()).unwrap();
    gh.start_check("api").await;
    gh.complete_check("api", &completion(1)).await;
    assert_eq!(
        fake.lines(),
        [
            "POST /repos/acme/shop/check-runs",
            "PATCH /repos/acme/shop/check-runs/1"
        ]
    );
    let r = fake.requests();
    assert_eq!(r[0].auth.as_deref(), Some("Bearer tok-123"));
    assert_eq!(r[0].body["name"], "build (api)");
    assert_eq!(r[0].body["status"], "in_progress");
    assert_eq!(
        r[0].body["head_sha"],
        "0123456789abcdef0123456789abcdef01234567"
    );
    assert_eq!(r[0].body["external_id"], "ai-infra-build/42/1/api");
    assert_eq!(
        r[0].body["details_url"],
        "https://github.com/acme/shop/actions/runs/42"
    );
    assert_eq!(r[1].body["status"], "completed");
    assert_eq!(r[1].body["conclusion"], "failure");
    assert_eq!(r[1].body["output"]["title"], "failed: a RUN step failed");
    assert_eq!(r[1].body["output"]["summary"], "### ❌ api failed");
    assert_eq!(
        r[1].body["output"]["annotations"][0],
        json!({"path": "api/Dockerfile", "start_line": 1, "end_line": 1, "annotation_level": "failure", "title": "a0", "message": "m"})
    );
    // Starting twice does not create a second run.
    gh.start_check("api").await;
    assert_eq!(fake.requests().len(), 2);
    assert!(gh.warnings().is_empty());
}

#[tokio::test]
async fn one_hundred_twenty_annotations_go_in_three_batches_the_last_completing() {
    let fake = FakeGitHub::start().await;
    let gh = GitHub::new("tok", target(fake.url(""), None), fast()).unwrap();
    gh.start_check("api").await;
    gh.complete_check("api", &completion(120)).await;
    let r = fake.requests();
    assert_eq!(
        fake.lines(),
        [
            "POST /repos/acme/shop/check-runs",
            "PATCH /repos/acme/shop/check-runs/1",
            "PATCH /repos/acme/shop/check-runs/1",
            "PATCH /repos/acme/shop/check-runs/1"
        ]
    );
    let sizes: Vec<usize> = r[1..]
        .iter()
        .map(|x| x.body["output"]["annotations"].as_array().unwrap().len())
        .collect();
    assert_eq!(sizes, [50, 50, 20]);
    let statuses: Vec<&Value> = r[1..].iter().map(|x| &x.body["status"]).collect();
    assert_eq!(statuses, [&Value::Null, &Value::Null, &json!("completed")]);
    assert_eq!(r[3].body["output"]["annotations"][19]["title"], "a119");
    let st = fake.state.lock().unwrap();
    assert_eq!(st.check_runs[0]["output"]["annotations_count"], 120);
    assert_eq!(st.check_runs[0]["conclusion"], "failure");
}

#[tokio::test]
async fn a_service_that_never_started_gets_its_check_run_at_the_end() {
    let fake = FakeGitHub::start().await;
    let gh = GitHub::new("tok", target(fake.url(""), None), fast()).unwrap();
    gh.complete_check(
        "skipped-one",
        &CheckCompletion {
            conclusion: "skipped",
            annotations: vec![],
            ..completion(0)
        },
    )
    .await;
    assert_eq!(
        fake.lines(),
        [
            "POST /repos/acme/shop/check-runs",
            "PATCH /repos/acme/shop/check-runs/1"
        ]
    );
    assert_eq!(fake.requests()[1].body["conclusion"], "skipped");
}

#[tokio::test]
async fn the_pr_comment_is_created_once_then_updated_in_place() {
    let fake = FakeGitHub::start().await;
    // 150 other comments first: ours must be found on page 2 later.
    {
        let mut st = fake.state.lock().unwrap();
        st.comments = (0..150)
            .map(|i| json!({"id": i + 1, "body": format!("LGTM {i}")}))
            .collect();
    }
    let gh = GitHub::new("tok", target(fake.url(""), Some(7)), fast()).unwrap();
    let marker = ai_infra_build::report::summary::COMMENT_MARKER;
    gh.upsert_comment(&format!("{marker}\nfirst")).await;
    gh.upsert_comment(&format!("{marker}\nsecond")).await;
    let lines = fake.lines();
    assert_eq!(
        lines,
        [
            "GET /user",
            "GET /repos/acme/shop/issues/7/comments",
            "GET /repos/acme/shop/issues/7/comments",
            "POST /repos/acme/shop/issues/7/comments",
            "GET /repos/acme/shop/issues/7/comments",
            "GET /repos/acme/shop/issues/7/comments",
            "PATCH /repos/acme/shop/issues/comments/1001",
        ]
    );
    let r = &fake.requests()[1..];
    assert_eq!(
        (r[0].query["page"].as_str(), r[1].query["page"].as_str()),
        ("1", "2")
    );
    assert_eq!(r[0].query["per_page"], "100");
    let st = fake.state.lock().unwrap();
    let ours: Vec<&Value> = st
        .comments
        .iter()
        .filter(|c| c["body"].as_str().unwrap().contains(marker))
        .collect();
    assert_eq!(ours.len(), 1);
    assert_eq!(ours[0]["body"], format!("{marker}\nsecond"));
}

#[tokio::test]
async fn a_forbidden_token_becomes_one_warning_and_no_more_calls() {
    let fake = FakeGitHub::start().await;
    fake.state.lock().unwrap().forbidden = true;
    let gh = GitHub::new("read-only", target(fake.url(""), Some(7)), fast()).unwrap();
    gh.start_check("api").await;
    gh.start_check("web").await;
    gh.complete_check("api", &completion(3)).await;
    gh.upsert_comment(&format!(
        "{}\nx",
        ai_infra_build::report::summary::COMMENT_MARKER
    ))
    .await;
    assert_eq!(
        fake.lines(),
        ["POST /repos/acme/shop/check-runs"],
        "403 is not retried, and nothing follows it"
    );
    let warnings = gh.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("403"), "{}", warnings[0]);
    assert!(
        warnings[0].contains("checks: write, pull-requests: write"),
        "{}",
        warnings[0]
    );
}

#[tokio::test]
async fn the_ghes_base_url_is_used_for_every_call() {
    let fake = FakeGitHub::start().await;
    let gh = GitHub::new("tok", target(fake.url("/api/v3"), Some(3)), fast()).unwrap();
    gh.start_check("api").await;
    gh.complete_check("api", &completion(0)).await;
    gh.upsert_comment(ai_infra_build::report::summary::COMMENT_MARKER)
        .await;
    assert_eq!(
        fake.lines(),
        [
            "POST /api/v3/repos/acme/shop/check-runs",
            "PATCH /api/v3/repos/acme/shop/check-runs/1",
            "GET /api/v3/user",
            "GET /api/v3/repos/acme/shop/issues/3/comments",
            "POST /api/v3/repos/acme/shop/issues/3/comments",
        ]
    );
    assert!(
        fake.requests()
            .iter()
            .all(|r| r.auth.as_deref() == Some("Bearer tok"))
    );
}

#[tokio::test]
async fn a_create_whose_answer_was_lost_is_found_instead_of_sent_again() {
    let fake = FakeGitHub::start().await;
    fake.fault(Fault {
        method: "POST",
        path: "/check-runs",
        status: 502,
        apply: true,
        times: 1,
    });
    let gh = GitHub::new("tok", target(fake.url(""), None), fast()).unwrap();
    gh.start_check("api").await;
    gh.complete_check("api", &completion(0)).await;
    assert_eq!(
        fake.lines(),
        [
            "POST /repos/acme/shop/check-runs",
            "GET /repos/acme/shop/commits/0123456789abcdef0123456789abcdef01234567/check-runs",
            "PATCH /repos/acme/shop/check-runs/1",
        ]
    );
    assert_eq!(fake.requests()[1].query["check_name"], "build (api)");
    assert_eq!(fake.state.lock().unwrap().check_runs.len(), 1);
    assert!(gh.warnings().is_empty());
}

#[tokio::test]
async fn a_create_that_failed_before_arriving_is_sent_again() {
    let fake = FakeGitHub::start().await;
    fake.fault(Fault {
        method: "POST",
        path: "/check-runs",
        status: 503,
        apply: false,
        times: 1,
    });
    let gh = GitHub::new("tok", target(fake.url(""), None), fast()).unwrap();
    gh.start_check("api").await;
    assert_eq!(
        fake.lines(),
        [
            "POST /repos/acme/shop/check-runs",
            "GET /repos/acme/shop/commits/0123456789abcdef0123456789abcdef01234567/check-runs",
            "POST /repos/acme/shop/check-runs",
        ]
    );
    assert_eq!(fake.state.lock().unwrap().check_runs.len(), 1);
}

#[tokio::test]
async fn a_lost_annotation_batch_is_not_appended_twice() {
    let fake = FakeGitHub::start().await;
    fake.fault(Fault {
        method: "PATCH",
        path: "/check-runs/1",
        status: 500,
        apply: true,
        times: 1,
    });
    let gh = GitHub::new("tok", target(fake.url(""), None), fast()).unwrap();
    gh.start_check("api").await;
    gh.complete_check("api", &completion(120)).await;
    assert_eq!(
        fake.lines(),
        [
            "POST /repos/acme/shop/check-runs",
            "PATCH /repos/acme/shop/check-runs/1",
            "GET /repos/acme/shop/check-runs/1",
            "PATCH /repos/acme/shop/check-runs/1",
            "PATCH /repos/acme/shop/check-runs/1",
        ]
    );
    assert_eq!(
        fake.state.lock().unwrap().check_runs[0]["output"]["annotations_count"],
        120
    );
}

#[tokio::test]
async fn a_comment_whose_answer_was_lost_is_not_posted_twice() {
    let fake = FakeGitHub::start().await;
    fake.fault(Fault {
        method: "POST",
        path: "/issues/9/comments",
        status: 502,
        apply: true,
        times: 1,
    });
    let gh = GitHub::new("tok", target(fake.url(""), Some(9)), fast()).unwrap();
    let body = format!(
        "{}\nsummary",
        ai_infra_build::report::summary::COMMENT_MARKER
    );
    gh.upsert_comment(&body).await;
    assert_eq!(
        fake.lines(),
        [
            "GET /user",
            "GET /repos/acme/shop/issues/9/comments",
            "POST /repos/acme/shop/issues/9/comments",
            "GET /repos/acme/shop/issues/9/comments",
            "PATCH /repos/acme/shop/issues/comments/1001",
        ]
    );
    assert_eq!(fake.state.lock().unwrap().comments.len(), 1);
}

#[tokio::test]
async fn persistent_server_errors_give_up_after_the_attempts_with_a_warning() {
    let fake = FakeGitHub::start().await;
    fake.fault(Fault {
        method: "PATCH",
        path: "/check-runs/1",
        status: 502,
        apply: false,
        times: 100,
    });
    let gh = GitHub::new("tok", target(fake.url(""), None), fast()).unwrap();
    gh.start_check("api").await;
    gh.complete_check("api", &completion(0)).await;
    let patches = fake
        .lines()
        .iter()
        .filter(|l| l.starts_with("PATCH"))
        .count();
    assert_eq!(patches, 3);
    let warnings = gh.warnings();
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].contains("502"), "{}", warnings[0]);
}

// ---------------------------------------------------------------------------------------
// Publishing a whole run

fn fixture(name: &str) -> Report {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/reports")
        .join(format!("{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn ui() -> Ui {
    Ui {
        format: OutputFormat::Human,
        color: use_color(ColorChoice::Never, false, false),
        quiet: false,
        verbose: 0,
        ..Ui::default()
    }
}

fn parse_outputs(file: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut lines = file.split('\n');
    while let Some(line) = lines.next() {
        let Some((name, delim)) = line.split_once("<<") else {
            continue;
        };
        let value: Vec<&str> = lines.by_ref().take_while(|l| *l != delim).collect();
        out.insert(name.to_string(), value.join("\n"));
    }
    out
}

struct Run {
    dir: tempfile::TempDir,
    env: BTreeMap<String, String>,
}

impl Run {
    fn new(api_url: Option<String>) -> Run {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("ws");
        std::fs::create_dir_all(&ws).unwrap();
        let event = dir.path().join("event.json");
        std::fs::write(
            &event,
            r#"{"pull_request":{"number":5,"head":{"sha":"feedface"}}}"#,
        )
        .unwrap();
        let mut env = BTreeMap::new();
        for (k, v) in [
            ("GITHUB_ACTIONS", "true".to_string()),
            ("RUNNER_DEBUG", "1".to_string()),
            ("GITHUB_WORKSPACE", ws.display().to_string()),
            (
                "GITHUB_STEP_SUMMARY",
                dir.path().join("summary.md").display().to_string(),
            ),
            (
                "GITHUB_OUTPUT",
                dir.path().join("output").display().to_string(),
            ),
            ("GITHUB_REPOSITORY", "acme/shop".into()),
            ("GITHUB_SHA", "mergecommit".into()),
            ("GITHUB_EVENT_PATH", event.display().to_string()),
            ("GITHUB_SERVER_URL", "https://github.com".into()),
            ("GITHUB_RUN_ID", "42".into()),
        ] {
            env.insert(k.to_string(), v);
        }
        if let Some(url) = api_url {
            env.insert("GITHUB_API_URL".into(), url);
        }
        Run { dir, env }
    }

    fn context(&self, secrets: Vec<String>, token: Option<&str>) -> PublishContext {
        let ws = self.dir.path().join("ws");
        let env = self.env.clone();
        let lookup = move |k: &str| env.get(k).cloned();
        let mut ctx = PublishContext::from_lookup(
            ws.join(".ai-infra-build"),
            ws.clone(),
            secrets,
            token.map(String::from),
            &lookup,
        );
        if let Some(gh) = &mut ctx.github {
            gh.settings = fast();
        }
        ctx
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_a_run_in_actions_writes_every_view() {
    let fake = FakeGitHub::start().await;
    let run = Run::new(Some(fake.url("")));
    let secret = "hunter2-registry-password\n-----KEY LINE-----".to_string();
    let mut report = fixture("nine-of-eleven");
    report.services[9]
        .log_tail
        .push("login with hunter2-registry-password ok".into());
    let sink = Arc::new(MemorySink::default());
    let publisher = Publisher::start_with(
        run.context(vec![secret], Some("ghs_token_value")),
        &ui(),
        sink.clone(),
        Progress::hidden(),
    );
    // Masks come before anything else is printed.
    let first = sink.out.lock().unwrap().clone();
    let first: Vec<&str> = first.lines().collect();
    assert_eq!(
        first[..3],
        [
            "::add-mask::hunter2-registry-password",
            "::add-mask::-----KEY LINE-----",
            "::add-mask::ghs_token_value"
        ]
    );
    assert!(
        first[3].starts_with("::debug::publishing: report to "),
        "{first:?}"
    );
    for s in &report.services {
        publisher.service_started(&s.name, 1);
        if s.name == "inference" {
            publisher.service_started(&s.name, 2);
        }
    }
    for s in &report.services {
        publisher.service_finished(&s.name, s.status, Duration::from_millis(s.duration_ms));
    }
    let published = publisher.finish(&report).await.expect("published");
    assert!(published.warnings.is_empty(), "{:?}", published.warnings);

    // The JSON report, without the secret.
    let ws = run.dir.path().join("ws");
    assert_eq!(
        published.report_path,
        ws.join(".ai-infra-build").join(REPORT_FILE)
    );
    let json = std::fs::read_to_string(&published.report_path).unwrap();
    assert!(!json.contains("hunter2"), "the secret reached the report");
    assert!(json.contains("login with *** ok"));
    let written: Report = serde_json::from_str(&json).unwrap();
    assert_eq!(written.totals, report.totals);

    // Step summary and outputs.
    let summary = run.read("summary.md");
    assert!(
        summary.starts_with("## ❌ ai-infra-build: 9/11 succeeded"),
        "{summary}"
    );
    assert!(
        summary.contains("report <code>.ai-infra-build/ai-infra-build-report.json</code>"),
        "{summary}"
    );
    assert!(!summary.contains("hunter2"));
    let outputs = parse_outputs(&run.read("output"));
    assert_eq!(
        outputs["report"],
        published.report_path.display().to_string()
    );
    assert_eq!(
        (outputs["succeeded"].as_str(), outputs["failed"].as_str()),
        ("9", "2")
    );
    assert_eq!(outputs["failed-services"], r#"["trainer","labeling-ui"]"#);

    // Workflow commands on stdout: groups, annotations, debug lines; the table at the end.
    let out = sink.out.lock().unwrap().clone();
    assert!(
        out.lines()
            .filter(|l| !l.starts_with("::add-mask::"))
            .all(|l| !l.contains("hunter2")),
        "the secret was printed"
    );
    assert!(
        out.contains("::error file=labeling-ui/Dockerfile,line=7,"),
        "{out}"
    );
    assert!(out.contains("::warning file=trainer/Dockerfile,line=1,"));
    assert!(out.contains("::debug::4 annotations, 4 shown\n"), "{out}");
    assert!(
        out.trim_end()
            .ends_with("9/11 succeeded in 8m 18s, 2 failed"),
        "{out}"
    );

    // The API: 11 check runs created in progress as builds started, then completed; one comment.
    let lines = fake.lines();
    let creates = lines
        .iter()
        .filter(|l| *l == "POST /repos/acme/shop/check-runs")
        .count();
    assert_eq!(creates, 11, "{lines:#?}");
    let first_patch = lines.iter().position(|l| l.starts_with("PATCH")).unwrap();
    assert!(
        lines[..first_patch].iter().all(|l| l.starts_with("POST")),
        "created before any completion: {lines:#?}"
    );
    let requests = fake.requests();
    assert!(
        requests
            .iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/check-runs"))
            .all(|r| r.body["head_sha"] == "feedface")
    );
    let st = fake.state.lock().unwrap();
    let conclusions: BTreeMap<String, String> = st
        .check_runs
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["conclusion"].as_str().unwrap_or("-").to_string(),
            )
        })
        .collect();
    assert_eq!(conclusions["build (trainer)"], "failure");
    assert_eq!(conclusions["build (gateway)"], "success");
    assert_eq!(conclusions.values().filter(|c| *c == "success").count(), 9);
    assert_eq!(st.comments.len(), 1);
    let comment = st.comments[0]["body"].as_str().unwrap();
    assert!(comment.starts_with(ai_infra_build::report::summary::COMMENT_MARKER));
    assert!(!comment.contains("hunter2"));
    assert!(
        requests
            .iter()
            .all(|r| !r.body.to_string().contains("hunter2"))
    );
    // The trainer's check run carries its error and the pull warning at the FROM line.
    let trainer_patch = requests
        .iter()
        .find(|r| {
            r.method == "PATCH"
                && r.body["output"]["title"]
                    .as_str()
                    .is_some_and(|t| t.contains("network"))
        })
        .unwrap();
    let levels: Vec<&str> = trainer_patch.body["output"]["annotations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["annotation_level"].as_str().unwrap())
        .collect();
    assert_eq!(levels, ["failure", "warning"]);
}

#[tokio::test]
async fn outside_actions_no_secret_is_printed_and_no_command_either() {
    let run = Run::new(None);
    let mut env = run.env.clone();
    env.remove("GITHUB_ACTIONS");
    env.remove("GITHUB_STEP_SUMMARY");
    env.remove("GITHUB_OUTPUT");
    let lookup = move |k: &str| env.get(k).cloned();
    let ws = run.dir.path().join("ws");
    let ctx = PublishContext::from_lookup(
        ws.join("out"),
        ws.clone(),
        vec!["topsecret-value".into()],
        None,
        &lookup,
    );
    let sink = Arc::new(MemorySink::default());
    let publisher = Publisher::start_with(ctx, &ui(), sink.clone(), Progress::hidden());
    let published = publisher.finish(&fixture("all-green")).await.unwrap();
    let out = sink.out.lock().unwrap().clone();
    assert!(!out.contains("topsecret"));
    assert!(
        !out.contains("::"),
        "workflow commands outside Actions:\n{out}"
    );
    assert!(
        out.trim_end().ends_with("11/11 succeeded in 8m 18s"),
        "{out}"
    );
    assert!(published.report_path.exists());
}

#[tokio::test]
async fn a_token_without_a_repository_is_a_warning_not_a_failure() {
    let lookup = |k: &str| (k == "GITHUB_ACTIONS").then(|| "true".to_string());
    let dir = tempfile::tempdir().unwrap();
    let ctx = PublishContext::from_lookup(
        dir.path().join("out"),
        dir.path().to_path_buf(),
        vec![],
        Some("tok".into()),
        &lookup,
    );
    assert!(ctx.github.is_none());
    let sink = Arc::new(MemorySink::default());
    let published = Publisher::start_with(ctx, &ui(), sink.clone(), Progress::hidden())
        .finish(&fixture("all-green"))
        .await
        .unwrap();
    assert_eq!(published.warnings.len(), 1);
    assert!(published.warnings[0].contains("GITHUB_REPOSITORY is not set"));
    let out = sink.out.lock().unwrap().clone();
    assert!(out.starts_with("::add-mask::tok\n"), "{out}");
    assert!(
        out.contains("::warning title=ai-infra-build::a GitHub token was given"),
        "{out}"
    );
}

#[tokio::test]
async fn an_unwritable_output_directory_is_an_error_after_the_other_views() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, "not a directory").unwrap();
    let summary = dir.path().join("summary.md");
    let summary_str = summary.display().to_string();
    let lookup = move |k: &str| match k {
        "GITHUB_ACTIONS" => Some("true".to_string()),
        "GITHUB_STEP_SUMMARY" => Some(summary_str.clone()),
        _ => None,
    };
    let ctx = PublishContext::from_lookup(
        blocker.join("out"),
        dir.path().to_path_buf(),
        vec![],
        None,
        &lookup,
    );
    let sink = Arc::new(MemorySink::default());
    let err = Publisher::start_with(ctx, &ui(), sink, Progress::hidden())
        .finish(&fixture("all-green"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cannot write the report"), "{err}");
    assert!(
        std::fs::read_to_string(&summary)
            .unwrap()
            .contains("11/11 succeeded")
    );
}

#[tokio::test]
async fn check_runs_stop_at_the_limit_with_one_warning() {
    let fake = FakeGitHub::start().await;
    let settings = ApiSettings {
        max_check_runs: 2,
        ..fast()
    };
    let gh = GitHub::new("tok", target(fake.url(""), None), settings).unwrap();
    for name in ["a", "b", "c", "d"] {
        gh.start_check(name).await;
    }
    assert_eq!(fake.lines().len(), 2);
    let warnings = gh.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("first 2 services"), "{}", warnings[0]);
}

#[test]
fn debug_output_of_the_context_hides_secrets_and_the_token() {
    let lookup = |k: &str| match k {
        "GITHUB_REPOSITORY" => Some("acme/shop".to_string()),
        "GITHUB_SHA" => Some("abc".to_string()),
        _ => None,
    };
    let ctx = PublishContext::from_lookup(
        "out".into(),
        ".".into(),
        vec!["pa55word".into()],
        Some("ghs_secret".into()),
        &lookup,
    );
    assert!(ctx.github.is_some());
    let shown = format!("{ctx:?}");
    assert!(
        !shown.contains("pa55word") && !shown.contains("ghs_secret"),
        "{shown}"
    );
}

/// Only our comment is updated: it has the marker and was written by the token's identity
/// (`github-actions[bot]` for a `GITHUB_TOKEN`, `GET /user`'s login for a personal token,
/// asked once). A comment with the marker by anyone else is left alone.
#[tokio::test]
async fn issue17_pr_comment_only_ours_is_updated() {
    let marker = ai_infra_build::report::summary::COMMENT_MARKER;
    let planted = |id: u64, login: &str| json!({"id": id, "body": format!("{marker}\nplanted by {login}"), "user": {"login": login}});
    // A GITHUB_TOKEN (GET /user is refused): someone else's marker is not ours, the bot's is.
    let fake = FakeGitHub::start().await;
    fake.state.lock().unwrap().comments = vec![planted(1, "mallory")];
    let gh = GitHub::new("tok", target(fake.url(""), Some(5)), fast()).unwrap();
    gh.upsert_comment(&format!("{marker}\nfirst")).await;
    gh.upsert_comment(&format!("{marker}\nsecond")).await;
    assert_eq!(
        fake.lines(),
        [
            "GET /user",
            "GET /repos/acme/shop/issues/5/comments",
            "POST /repos/acme/shop/issues/5/comments",
            "GET /repos/acme/shop/issues/5/comments",
            "PATCH /repos/acme/shop/issues/comments/1001",
        ]
    );
    {
        let st = fake.state.lock().unwrap();
        assert_eq!(st.comments[0], planted(1, "mallory"));
        assert_eq!(st.comments[1]["body"], format!("{marker}\nsecond"));
        assert_eq!(st.comments[1]["user"]["login"], "github-actions[bot]");
    }
    assert!(gh.warnings().is_empty(), "{:?}", gh.warnings());

    // A personal token: the bot's comment (another workflow's) is not ours either.
    let fake = FakeGitHub::start().await;
    {
        let mut st = fake.state.lock().unwrap();
        st.login = Some("octo-dev".into());
        st.comments = vec![planted(1, "github-actions[bot]"), planted(2, "mallory")];
    }
    let gh = GitHub::new("ghp_x", target(fake.url(""), Some(6)), fast()).unwrap();
    gh.upsert_comment(&format!("{marker}\nfirst")).await;
    gh.upsert_comment(&format!("{marker}\nsecond")).await;
    assert_eq!(
        fake.lines(),
        [
            "GET /user",
            "GET /repos/acme/shop/issues/6/comments",
            "POST /repos/acme/shop/issues/6/comments",
            "GET /repos/acme/shop/issues/6/comments",
            "PATCH /repos/acme/shop/issues/comments/1001",
        ]
    );
    let st = fake.state.lock().unwrap();
    assert_eq!(st.comments[0], planted(1, "github-actions[bot]"));
    assert_eq!(st.comments[1], planted(2, "mallory"));
    assert_eq!(st.comments[2]["body"], format!("{marker}\nsecond"));
    assert_eq!(st.comments[2]["user"]["login"], "octo-dev");
}

// ---------------------------------------------------------------------------------------
// Issue 12, item 5: the API calls follow HTTP_PROXY / HTTPS_PROXY / NO_PROXY as the relay and
// the probes do (Go's rules). The fake API listens on 127.0.0.1, which never goes through a
// proxy, so it is reached through a front on the host side of a test namespace's veth pair
// (10.R.S.1, a non-loopback address the forward proxy may connect to).

/// The methods of the requests the proxy carried to `host` (`CONNECT` for a tunnel), each
/// after checking that the proxy reached the host.
fn carried(proxy: &ForwardProxy, host: &str) -> Vec<String> {
    proxy
        .requests()
        .into_iter()
        .filter(|r| r.target == host)
        .map(|r| {
            assert!(r.connected, "the proxy could not reach {host}: {r:?}");
            r.method
        })
        .collect()
}

/// One run's calls: a check run created and completed, the PR comment posted or updated.
/// Returns the client's warnings.
async fn api_session(api_url: &str, proxies: ProxyEnv, text: &str) -> Vec<String> {
    let gh = GitHub::with_proxies(
        "tok-proxy",
        target(api_url.into(), Some(7)),
        fast(),
        proxies,
    )
    .unwrap();
    gh.start_check("api").await;
    gh.complete_check("api", &completion(2)).await;
    gh.upsert_comment(&format!(
        "{}\n{text}",
        ai_infra_build::report::summary::COMMENT_MARKER
    ))
    .await;
    gh.warnings()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue12_api_calls_go_through_http_proxy_unless_no_proxy_names_the_host() {
    let fake = FakeGitHub::start().await;
    let netns = Netns::create().expect("a test network namespace (needs root)");
    let ip = IpAddr::V4(netns.host_ip);
    let front = Front::start(FrontOptions {
        bind: SocketAddr::new(ip, 0),
        upstream: fake.addr,
        tls: None,
        client_ca: None,
    })
    .await
    .unwrap();
    let host = front.host();
    let api = format!("http://{host}");
    let proxy = ForwardProxy::start().await.unwrap();
    let proxies = |no_proxy: Option<String>| ProxyEnv {
        http_proxy: Some(proxy.url()),
        https_proxy: None,
        no_proxy,
    };

    // HTTP_PROXY: every call goes through the proxy (absolute-form requests, no tunnel), and
    // arrives as it would directly.
    let warnings = api_session(&api, proxies(None), "via the proxy").await;
    assert!(warnings.is_empty(), "{warnings:?}");
    let requests = fake.requests();
    assert_eq!(
        fake.lines(),
        [
            "POST /repos/acme/shop/check-runs",
            "PATCH /repos/acme/shop/check-runs/1",
            "GET /user",
            "GET /repos/acme/shop/issues/7/comments",
            "POST /repos/acme/shop/issues/7/comments",
        ]
    );
    assert!(
        requests
            .iter()
            .all(|r| r.auth.as_deref() == Some("Bearer tok-proxy")),
        "{requests:?}"
    );
    let methods: Vec<&str> = requests.iter().map(|r| r.method.as_str()).collect();
    assert_eq!(
        carried(&proxy, &host),
        methods,
        "each call went through the proxy: {:?}",
        proxy.requests()
    );
    assert_eq!(fake.state.lock().unwrap().comments.len(), 1);

    // HTTPS_PROXY is not for an http:// API; NO_PROXY naming the host (its address, a CIDR,
    // host:port) bypasses HTTP_PROXY. The calls still succeed, and the proxy sees none.
    let through = proxy.requests().len();
    for (n, proxies) in [
        ProxyEnv {
            http_proxy: None,
            https_proxy: Some(proxy.url()),
            no_proxy: None,
        },
        proxies(Some(ip.to_string())),
        proxies(Some("example.com, 10.0.0.0/8".into())),
        proxies(Some(host.clone())),
    ]
    .into_iter()
    .enumerate()
    {
        let before = fake.requests().len();
        let warnings = api_session(&api, proxies.clone(), &format!("direct {n}")).await;
        assert!(warnings.is_empty(), "{proxies:?}: {warnings:?}");
        assert!(fake.requests().len() > before + 3, "{proxies:?}");
        assert_eq!(
            proxy.requests().len(),
            through,
            "{proxies:?} bypasses the proxy: {:?}",
            proxy.requests()
        );
    }
    // Every session updated the one comment.
    let st = fake.state.lock().unwrap();
    assert_eq!(st.comments.len(), 1);
    assert!(
        st.comments[0]["body"]
            .as_str()
            .unwrap()
            .ends_with("direct 3")
    );
}

/// The binary, as in a workflow: `report --merge` with a token publishes check runs and the PR
/// comment to an `https://` API (GitHub Enterprise Server on a private address) through
/// HTTPS_PROXY — a CONNECT tunnel, TLS to the API inside it, verified against the system roots
/// (`SSL_CERT_FILE` holds the test CA) — and directly when NO_PROXY names the host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue12_the_binary_reaches_an_https_api_through_https_proxy_unless_no_proxy() {
    let fake = FakeGitHub::start().await;
    let netns = Netns::create().expect("a test network namespace (needs root)");
    let ip = IpAddr::V4(netns.host_ip);
    let ca = TestCa::new("report_github proxy CA").unwrap();
    let front = Front::start(FrontOptions {
        bind: SocketAddr::new(ip, 0),
        upstream: fake.addr,
        tls: Some(ca.server_cert(&[&ip.to_string()]).unwrap()),
        client_ca: None,
    })
    .await
    .unwrap();
    let host = front.host();
    let proxy = ForwardProxy::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.cert_pem()).unwrap();
    let event = dir.path().join("event.json");
    std::fs::write(
        &event,
        json!({"pull_request": {"number": 7, "head": {"sha": "feedface"}}}).to_string(),
    )
    .unwrap();
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reports/all-green.json");
    let token = "ghs_proxy_test_token";
    let run = |extra: &[(&str, String)]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_ai-infra-build"));
        command
            .arg("report")
            .arg("--merge")
            .arg(&fixture)
            .args(["--out-dir", "merged"])
            .current_dir(dir.path())
            .env("NO_COLOR", "1")
            .env("GITHUB_REPOSITORY", "acme/shop")
            .env("GITHUB_SHA", "feedface")
            .env("GITHUB_EVENT_PATH", &event)
            .env("GITHUB_API_URL", format!("https://{host}"))
            .env("INPUT_GITHUB_TOKEN", token)
            .env("SSL_CERT_FILE", &ca_file)
            .env("HTTPS_PROXY", proxy.url())
            .stdin(std::process::Stdio::null());
        for k in [
            "GITHUB_ACTIONS",
            "GITHUB_STEP_SUMMARY",
            "GITHUB_OUTPUT",
            "GITHUB_REF",
            "GITHUB_RUN_ID",
            "SSL_CERT_DIR",
            "HTTP_PROXY",
            "NO_PROXY",
            "http_proxy",
            "https_proxy",
            "no_proxy",
        ] {
            command.env_remove(k);
        }
        for (k, v) in extra {
            command.env(k, v);
        }
        command
    };
    let expect_published = |output: std::process::Output, before: usize| {
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "{:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
            output.status
        );
        assert!(
            !stdout.contains(token) && !stderr.contains(token),
            "the token was printed"
        );
        assert!(
            !stderr.contains("could not") && !stderr.contains("GitHub"),
            "{stderr}"
        );
        let requests = fake.requests();
        let new = &requests[before..];
        let creates = new
            .iter()
            .filter(|r| r.method == "POST" && r.path == "/repos/acme/shop/check-runs")
            .count();
        assert_eq!(creates, 11, "{:#?}", fake.lines());
        assert!(
            new.iter()
                .all(|r| r.auth.as_deref() == Some(&*format!("Bearer {token}"))),
            "{new:?}"
        );
        new.len()
    };

    // Through the proxy: CONNECT tunnels only, TLS inside them.
    let output = tokio::task::spawn_blocking({
        let mut command = run(&[]);
        move || command.output().unwrap()
    })
    .await
    .unwrap();
    expect_published(output, 0);
    assert_eq!(fake.state.lock().unwrap().comments.len(), 1);
    let tunnels = carried(&proxy, &host);
    assert!(
        !tunnels.is_empty() && tunnels.iter().all(|m| m == "CONNECT"),
        "https through the proxy is a CONNECT tunnel: {:?}",
        proxy.requests()
    );
    assert_eq!(
        proxy.requests().len(),
        tunnels.len(),
        "{:?}",
        proxy.requests()
    );
    assert!(
        front.handshakes() >= tunnels.len(),
        "TLS inside the tunnels"
    );
    assert_eq!(front.failed_handshakes(), 0);

    // NO_PROXY names the host: direct, and the proxy sees nothing more.
    let through = proxy.requests().len();
    let before = fake.requests().len();
    let handshakes = front.handshakes();
    for no_proxy in [ip.to_string(), "10.0.0.0/8".to_string()] {
        let start = fake.requests().len();
        let output = tokio::task::spawn_blocking({
            let mut command = run(&[("NO_PROXY", no_proxy)]);
            move || command.output().unwrap()
        })
        .await
        .unwrap();
        expect_published(output, start);
    }
    assert!(fake.requests().len() > before);
    assert!(front.handshakes() > handshakes);
    assert_eq!(
        proxy.requests().len(),
        through,
        "NO_PROXY bypasses the proxy: {:?}",
        proxy.requests()
    );
    assert_eq!(fake.state.lock().unwrap().comments.len(), 1);
}
