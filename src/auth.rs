//! Registry credentials, read exactly as the docker CLI reads them: `$DOCKER_CONFIG/config.json`
//! (default `~/.docker/config.json`), its `auths` (base64 `auth`, `username`/`password`,
//! `identitytoken`, `registrytoken`), `credHelpers` (per registry host) and `credsStore` (for
//! every other host), the helpers run as `docker-credential-NAME get` with the server address
//! on stdin and bounded by a timeout. Docker Hub is stored under `https://index.docker.io/v1/`.
//!
//! A mirror is looked up by its host (as `docker login HOST` stores it), also when it has a
//! path (`harbor.example.com/dockerhub`). Every secret read is kept in [`Credentials::secrets`]
//! so that the output layer can mask it (`::add-mask::`) and no view ever shows it; the
//! `Debug` output of a [`Credential`] shows no secret.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::Deserialize;

/// Where Docker Hub's credentials are stored, as the docker CLI stores them.
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// How long a credential helper may take to answer.
pub const HELPER_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a credential came from; shown in reports and by `doctor` ("with credentials from …").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The `auths` section of the config file.
    ConfigAuths,
    /// `docker-credential-NAME` (from `credHelpers` or `credsStore`).
    Helper(String),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::ConfigAuths => f.write_str("config.json auths"),
            Origin::Helper(name) => write!(f, "helper {name}"),
        }
    }
}

/// What a registry is given.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// A user name and password (or personal access token), sent as Basic to the token realm.
    Password { username: String, password: String },
    /// An OAuth2 refresh token (`identitytoken`; a helper's `<token>` user name).
    IdentityToken { username: String, token: String },
    /// A bearer token for the registry itself (`registrytoken`).
    RegistryToken(String),
}

/// Shows the form and the user name, never the secret.
impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Password { username, .. } => write!(f, "Password({username:?}, ***)"),
            Secret::IdentityToken { username, .. } => write!(f, "IdentityToken({username:?}, ***)"),
            Secret::RegistryToken(_) => f.write_str("RegistryToken(***)"),
        }
    }
}

/// One registry's credentials and where they came from.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub secret: Secret,
    pub origin: Origin,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let form = match &self.secret {
            Secret::Password { username, .. } => format!("password of {username:?}"),
            Secret::IdentityToken { username, .. } => format!("identity token of {username:?}"),
            Secret::RegistryToken(_) => "registry token".to_string(),
        };
        write!(f, "Credential({form} from {})", self.origin)
    }
}

impl Credential {
    /// The user name, when there is one.
    pub fn username(&self) -> Option<&str> {
        match &self.secret {
            Secret::Password { username, .. } | Secret::IdentityToken { username, .. } => {
                Some(username)
            }
            Secret::RegistryToken(_) => None,
        }
    }

    /// The secret strings (for masking).
    pub fn secret_strings(&self) -> Vec<String> {
        match &self.secret {
            Secret::Password { password, .. } => vec![password.clone()],
            Secret::IdentityToken { token, .. } => vec![token.clone()],
            Secret::RegistryToken(token) => vec![token.clone()],
        }
    }

    /// The `Authorization` header value for a token realm that takes Basic (`user:password`).
    pub fn basic_header(&self) -> Option<String> {
        match &self.secret {
            Secret::Password { username, password } => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
            )),
            _ => None,
        }
    }

    /// The form the Engine API takes (`X-Registry-Auth`, a build's registry config).
    pub fn docker_credentials(&self, server: &str) -> bollard::auth::DockerCredentials {
        let mut creds = bollard::auth::DockerCredentials {
            serveraddress: Some(server.to_string()),
            ..Default::default()
        };
        match &self.secret {
            Secret::Password { username, password } => {
                creds.username = Some(username.clone());
                creds.password = Some(password.clone());
            }
            Secret::IdentityToken { username, token } => {
                creds.username = Some(username.clone());
                creds.identitytoken = Some(token.clone());
            }
            Secret::RegistryToken(token) => creds.registrytoken = Some(token.clone()),
        }
        creds
    }
}

/// Credentials in the Engine API's form per server address (`X-Registry-Config`, a BuildKit
/// session's auth): what a build is given for every registry its Dockerfiles name, mirrors
/// included. `Debug` shows the registries only.
#[derive(Clone, Default)]
pub struct EngineAuth(pub HashMap<String, bollard::auth::DockerCredentials>);

impl std::fmt::Debug for EngineAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut keys: Vec<&String> = self.0.keys().collect();
        keys.sort();
        write!(f, "EngineAuth({keys:?})")
    }
}

impl EngineAuth {
    /// The credentials of `hosts` that have any (looked up, so helpers run once per host).
    pub fn for_hosts<'a>(
        credentials: &Credentials,
        hosts: impl IntoIterator<Item = &'a str>,
    ) -> Result<EngineAuth, AuthError> {
        let mut map = HashMap::new();
        for host in hosts {
            if let Some(found) = credentials.lookup(host)? {
                let key = Credentials::server_key(host);
                map.insert(key.clone(), found.docker_credentials(&key));
            }
        }
        Ok(EngineAuth(map))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Reading the credentials failed in a way the user must fix (a broken config file, a helper
/// that failed other than with "not found").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read {path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("credential helper docker-credential-{helper} failed for {server}: {message}")]
    Helper {
        helper: String,
        server: String,
        message: String,
    },
}

impl AuthError {
    pub fn help(&self) -> String {
        match self {
            AuthError::Config { path, .. } => format!(
                "fix or remove {} (it is the docker CLI's config file; `docker login` rewrites it)",
                path.display()
            ),
            AuthError::Helper { helper, .. } => format!(
                "check that docker-credential-{helper} is on PATH and works (`echo HOST | docker-credential-{helper} get`)"
            ),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
    #[serde(default)]
    registrytoken: Option<String>,
}

#[derive(Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// The credentials of a run: the docker CLI's config, read once; helper answers cached per
/// host. `Credentials::none()` is the anonymous run.
#[derive(Debug, Default)]
pub struct Credentials {
    path: Option<PathBuf>,
    file: ConfigFile,
    /// `PATH` for the helpers (the process's own when `None`).
    helper_path: Option<OsString>,
    helper_timeout: Option<Duration>,
    found: Mutex<HashMap<String, Option<Credential>>>,
}

impl Credentials {
    /// No credentials: every registry is contacted anonymously.
    pub fn none() -> Credentials {
        Credentials::default()
    }

    /// The config directory the docker CLI uses: `$DOCKER_CONFIG`, else `$HOME/.docker`.
    pub fn config_dir(lookup: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
        if let Some(dir) = lookup("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
            return Some(PathBuf::from(dir));
        }
        lookup("HOME")
            .filter(|h| !h.is_empty())
            .map(|home| Path::new(&home).join(".docker"))
    }

    /// Reads `config.json` of the docker CLI as found through the environment.
    pub fn from_env() -> Result<Credentials, AuthError> {
        match Credentials::config_dir(&|name| std::env::var(name).ok()) {
            Some(dir) => Credentials::load(&dir),
            None => Ok(Credentials::none()),
        }
    }

    /// Reads `DIR/config.json`; a missing file means no credentials (as for the docker CLI).
    pub fn load(dir: &Path) -> Result<Credentials, AuthError> {
        let path = dir.join("config.json");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Credentials {
                    path: Some(path),
                    ..Credentials::default()
                });
            }
            Err(err) => {
                return Err(AuthError::Config {
                    path,
                    message: err.to_string(),
                });
            }
        };
        let file: ConfigFile = if text.trim().is_empty() {
            ConfigFile::default()
        } else {
            serde_json::from_str(&text).map_err(|err| AuthError::Config {
                path: path.clone(),
                message: err.to_string(),
            })?
        };
        Ok(Credentials {
            path: Some(path),
            file,
            ..Credentials::default()
        })
    }

    /// Runs helpers with this `PATH` instead of the process's own (tests).
    pub fn with_helper_path(mut self, path: OsString) -> Credentials {
        self.helper_path = Some(path);
        self
    }

    pub fn with_helper_timeout(mut self, timeout: Duration) -> Credentials {
        self.helper_timeout = Some(timeout);
        self
    }

    /// The config file read (`None` for [`Credentials::none`]).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The key the docker CLI stores a registry host under.
    pub fn server_key(host: &str) -> String {
        if is_docker_hub(host) {
            DOCKER_HUB_KEY.to_string()
        } else {
            host.to_ascii_lowercase()
        }
    }

    /// The credential for a registry host (`ghcr.io`, `127.0.0.1:5000`, `docker.io`), a
    /// mirror's host included; `Ok(None)` when the user has none for it.
    pub fn lookup(&self, host: &str) -> Result<Option<Credential>, AuthError> {
        let key = Credentials::server_key(host);
        if let Some(found) = self.found.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(found);
        }
        let found = self.read(&key)?;
        if let Ok(mut map) = self.found.lock() {
            map.insert(key, found.clone());
        }
        Ok(found)
    }

    /// Every secret read so far (for `::add-mask::`).
    pub fn secrets(&self) -> Vec<String> {
        let Ok(map) = self.found.lock() else {
            return Vec::new();
        };
        let mut all: Vec<String> = map
            .values()
            .flatten()
            .flat_map(Credential::secret_strings)
            .filter(|s| !s.is_empty())
            .collect();
        all.sort();
        all.dedup();
        all
    }

    fn read(&self, key: &str) -> Result<Option<Credential>, AuthError> {
        let hostname = hostname_of(key);
        // The docker CLI: credHelpers[hostname], then credsStore, then the file's auths.
        let helper = self
            .file
            .cred_helpers
            .iter()
            .find(|(k, _)| hostname_of(k) == hostname)
            .map(|(_, v)| v.clone())
            .or_else(|| self.file.creds_store.clone())
            .filter(|h| !h.is_empty());
        if let Some(helper) = helper {
            return self.run_helper(&helper, key);
        }
        let Some(entry) = self.file.auths.get(key).or_else(|| {
            self.file
                .auths
                .iter()
                .find(|(k, _)| hostname_of(k) == hostname)
                .map(|(_, v)| v)
        }) else {
            return Ok(None);
        };
        self.decode_entry(key, entry)
    }

    fn decode_entry(&self, key: &str, entry: &AuthEntry) -> Result<Option<Credential>, AuthError> {
        let bad = |message: String| AuthError::Config {
            path: self.path.clone().unwrap_or_default(),
            message,
        };
        let (mut username, mut password) = (
            entry.username.clone().unwrap_or_default(),
            entry.password.clone().unwrap_or_default(),
        );
        if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|err| bad(format!("auths[{key:?}].auth is not base64: {err}")))?;
            let text = String::from_utf8(bytes)
                .map_err(|_| bad(format!("auths[{key:?}].auth is not UTF-8 text")))?;
            let (user, pass) = text.split_once(':').ok_or_else(|| {
                bad(format!(
                    "auths[{key:?}].auth is not base64 of USER:PASSWORD"
                ))
            })?;
            username = user.to_string();
            password = pass.trim_end_matches('\n').to_string();
        }
        let secret = if let Some(token) = entry.identitytoken.clone().filter(|t| !t.is_empty()) {
            Secret::IdentityToken { username, token }
        } else if let Some(token) = entry.registrytoken.clone().filter(|t| !t.is_empty()) {
            Secret::RegistryToken(token)
        } else if !username.is_empty() || !password.is_empty() {
            Secret::Password { username, password }
        } else {
            return Ok(None);
        };
        Ok(Some(Credential {
            secret,
            origin: Origin::ConfigAuths,
        }))
    }

    fn run_helper(&self, helper: &str, server: &str) -> Result<Option<Credential>, AuthError> {
        let fail = |message: String| AuthError::Helper {
            helper: helper.to_string(),
            server: server.to_string(),
            message,
        };
        let program = format!("docker-credential-{helper}");
        let mut command = Command::new(&program);
        command
            .arg("get")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(path) = &self.helper_path {
            command.env("PATH", path);
            // Command looks the program up in the parent's PATH: resolve it in ours.
            if let Some(found) = std::env::split_paths(path)
                .map(|dir| dir.join(&program))
                .find(|p| p.is_file())
            {
                command = rebuild(command, found);
            }
        }
        let mut child = command
            .spawn()
            .map_err(|err| fail(format!("cannot run {program}: {err}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(server.as_bytes());
        }
        let mut stdout = child.stdout.take();
        let mut stderr = child.stderr.take();
        let reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            let mut err = Vec::new();
            if let Some(s) = stdout.as_mut() {
                let _ = s.read_to_end(&mut out);
            }
            if let Some(s) = stderr.as_mut() {
                let _ = s.read_to_end(&mut err);
            }
            (out, err)
        });
        let timeout = self.helper_timeout.unwrap_or(HELPER_TIMEOUT);
        let deadline = Instant::now() + timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(fail(format!(
                        "no answer within {}s (timeout)",
                        timeout.as_secs_f64()
                    )));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(err) => return Err(fail(err.to_string())),
            }
        };
        let (out, err) = reader.join().unwrap_or_default();
        let out = String::from_utf8_lossy(&out);
        if !status.success() {
            let text = format!("{} {}", out.trim(), String::from_utf8_lossy(&err).trim());
            // docker-credential-helpers' "credentials not found in native keychain".
            if text.to_ascii_lowercase().contains("credentials not found") {
                return Ok(None);
            }
            return Err(fail(format!(
                "exited with {status}: {}",
                crate::text::clean_line(text.trim(), 300)
            )));
        }
        let answer: HelperAnswer = serde_json::from_str(out.trim())
            .map_err(|e| fail(format!("answered something that is not its JSON: {e}")))?;
        if answer.secret.is_empty() {
            return Ok(None);
        }
        let secret = if answer.username == "<token>" {
            Secret::IdentityToken {
                username: String::new(),
                token: answer.secret,
            }
        } else {
            Secret::Password {
                username: answer.username,
                password: answer.secret,
            }
        };
        Ok(Some(Credential {
            secret,
            origin: Origin::Helper(helper.to_string()),
        }))
    }
}

/// A command for another program with the settings of `old` (stdio and env we set).
fn rebuild(old: Command, program: PathBuf) -> Command {
    let mut new = Command::new(program);
    new.args(old.get_args());
    for (key, value) in old.get_envs() {
        match value {
            Some(value) => new.env(key, value),
            None => new.env_remove(key),
        };
    }
    new.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    new
}

/// `docker.io`, `index.docker.io`, `registry-1.docker.io`: Docker Hub.
pub fn is_docker_hub(host: &str) -> bool {
    matches!(
        hostname_of(host).as_str(),
        "docker.io" | "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com"
    )
}

/// The docker CLI's `ConvertToHostname`: no scheme, no path, lower case.
fn hostname_of(key: &str) -> String {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    key.split('/').next().unwrap_or(key).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> (tempfile::TempDir, Credentials) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), json).unwrap();
        let creds = Credentials::load(dir.path()).unwrap();
        (dir, creds)
    }

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn auths_base64_auth() {
        let json = format!(
            r#"{{"auths":{{"ghcr.io":{{"auth":"{}"}}}}}}"#,
            b64("octo:pa:ss")
        );
        let (_d, creds) = config(&json);
        let found = creds.lookup("ghcr.io").unwrap().unwrap();
        assert_eq!(
            found.secret,
            Secret::Password {
                username: "octo".into(),
                password: "pa:ss".into()
            }
        );
        assert_eq!(found.origin.to_string(), "config.json auths");
        assert_eq!(creds.lookup("quay.io").unwrap(), None);
        assert_eq!(creds.secrets(), vec!["pa:ss".to_string()]);
        assert!(!format!("{found:?}").contains("pa:ss"));
    }

    #[test]
    fn auths_keys_with_scheme_and_path_match_the_host() {
        let json = format!(
            r#"{{"auths":{{"https://harbor.example.com/v2/":{{"auth":"{}"}}}}}}"#,
            b64("u:p")
        );
        let (_d, creds) = config(&json);
        assert!(creds.lookup("harbor.example.com").unwrap().is_some());
    }

    #[test]
    fn docker_hub_is_stored_under_index_v1() {
        let json = format!(
            r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{}"}}}}}}"#,
            b64("hubuser:hubpass")
        );
        let (_d, creds) = config(&json);
        for host in ["docker.io", "registry-1.docker.io", "index.docker.io"] {
            assert_eq!(
                creds.lookup(host).unwrap().unwrap().username(),
                Some("hubuser"),
                "{host}"
            );
        }
    }

    #[test]
    fn identity_and_registry_tokens() {
        let json = format!(
            r#"{{"auths":{{
                "a.example":{{"auth":"{}","identitytoken":"refresh-1"}},
                "b.example":{{"registrytoken":"bearer-2"}},
                "c.example":{{}}
            }}}}"#,
            b64("alice:")
        );
        let (_d, creds) = config(&json);
        assert_eq!(
            creds.lookup("a.example").unwrap().unwrap().secret,
            Secret::IdentityToken {
                username: "alice".into(),
                token: "refresh-1".into()
            }
        );
        assert_eq!(
            creds.lookup("b.example").unwrap().unwrap().secret,
            Secret::RegistryToken("bearer-2".into())
        );
        assert_eq!(creds.lookup("c.example").unwrap(), None);
    }

    #[test]
    fn broken_config_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), "{not json").unwrap();
        let err = Credentials::load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("config.json"), "{err}");
        let json = r#"{"auths":{"x.example":{"auth":"!!!"}}}"#;
        let (_d, creds) = config(json);
        let err = creds.lookup("x.example").unwrap_err();
        assert!(err.to_string().contains("not base64"), "{err}");
    }

    #[test]
    fn missing_config_is_anonymous() {
        let dir = tempfile::tempdir().unwrap();
        let creds = Credentials::load(dir.path()).unwrap();
        assert_eq!(creds.lookup("ghcr.io").unwrap(), None);
    }

    #[test]
    fn config_dir_follows_docker_config_then_home() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(
            Credentials::config_dir(&env(&[("DOCKER_CONFIG", "/c"), ("HOME", "/h")])),
            Some(PathBuf::from("/c"))
        );
        assert_eq!(
            Credentials::config_dir(&env(&[("HOME", "/h")])),
            Some(PathBuf::from("/h/.docker"))
        );
    }

    /// A `docker-credential-testbed` script: answers for hosts listed in its store file,
    /// "credentials not found" otherwise; `slow.example` never answers.
    fn helper_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("docker-credential-testbed");
        std::fs::write(
            &script,
            "#!/bin/sh\nread host\ncase \"$host\" in\n\
             ghcr.io) echo '{\"ServerURL\":\"ghcr.io\",\"Username\":\"helperuser\",\"Secret\":\"helper-secret\"}';;\n\
             https://index.docker.io/v1/) echo '{\"ServerURL\":\"x\",\"Username\":\"<token>\",\"Secret\":\"hub-refresh\"}';;\n\
             slow.example) exec /bin/sleep 30;;\n\
             broken.example) echo 'keychain locked' >&2; exit 3;;\n\
             *) echo 'credentials not found in native keychain'; exit 1;;\nesac\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        dir
    }

    #[test]
    fn creds_store_runs_the_helper_with_the_host_on_stdin() {
        let helpers = helper_dir();
        let (_d, creds) = config(r#"{"auths":{"ghcr.io":{}},"credsStore":"testbed"}"#);
        let creds = creds
            .with_helper_path(helpers.path().as_os_str().to_owned())
            .with_helper_timeout(Duration::from_millis(500));
        let found = creds.lookup("ghcr.io").unwrap().unwrap();
        assert_eq!(found.origin.to_string(), "helper testbed");
        assert_eq!(found.username(), Some("helperuser"));
        assert_eq!(
            creds.lookup("docker.io").unwrap().unwrap().secret,
            Secret::IdentityToken {
                username: String::new(),
                token: "hub-refresh".into()
            }
        );
        assert_eq!(creds.lookup("quay.io").unwrap(), None);
        let started = Instant::now();
        let err = creds.lookup("slow.example").unwrap_err();
        assert!(err.to_string().contains("timeout"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let err = creds.lookup("broken.example").unwrap_err();
        assert!(err.to_string().contains("keychain locked"), "{err}");
        assert_eq!(
            creds.secrets(),
            vec!["helper-secret".to_string(), "hub-refresh".to_string()]
        );
    }

    #[test]
    fn cred_helpers_win_over_auths_per_host() {
        let helpers = helper_dir();
        let json = format!(
            r#"{{"auths":{{"ghcr.io":{{"auth":"{}"}},"other.example":{{"auth":"{}"}}}},
                "credHelpers":{{"ghcr.io":"testbed"}}}}"#,
            b64("fileuser:filepass"),
            b64("o:p")
        );
        let (_d, creds) = config(&json);
        let creds = creds.with_helper_path(helpers.path().as_os_str().to_owned());
        assert_eq!(
            creds.lookup("ghcr.io").unwrap().unwrap().origin,
            Origin::Helper("testbed".into())
        );
        assert_eq!(
            creds.lookup("other.example").unwrap().unwrap().origin,
            Origin::ConfigAuths
        );
    }

    #[test]
    fn engine_form_and_basic_header() {
        let cred = Credential {
            secret: Secret::Password {
                username: "u".into(),
                password: "p".into(),
            },
            origin: Origin::ConfigAuths,
        };
        assert_eq!(cred.basic_header().as_deref(), Some("Basic dTpw"));
        let engine = cred.docker_credentials("ghcr.io");
        assert_eq!(engine.username.as_deref(), Some("u"));
        assert_eq!(engine.serveraddress.as_deref(), Some("ghcr.io"));
    }
}
