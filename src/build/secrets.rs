//! Build secrets (`RUN --mount=type=secret`), SSH forwarding (`RUN --mount=type=ssh`) and
//! attestations, as buildx and docker/build-push-action take them. A secret's value is never
//! put on a command line, in a log, in the report or in a cache key: buildx gets it through
//! the child's environment (`--secret id=ID,env=VAR`) or the file it names.

use std::path::PathBuf;

/// Where a secret's value comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// An environment variable of this process.
    Env(String),
    /// A file.
    File(PathBuf),
    /// The value itself (the action's `secrets` input).
    Value(String),
}

impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretSource::Env(var) => write!(f, "Env({var:?})"),
            SecretSource::File(path) => write!(f, "File({path:?})"),
            SecretSource::Value(_) => f.write_str("Value(<hidden>)"),
        }
    }
}

/// One build secret: its id (what `--mount=type=secret,id=ID` names) and its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretSpec {
    pub id: String,
    pub source: SecretSource,
}

impl SecretSpec {
    /// buildx's `--secret` syntax: `id=ID[,env=VAR|,src=PATH][,type=env|file]` (`source=` is
    /// `src=`); `id=ID` alone (or with `type=env`) reads the environment variable ID, with
    /// `type=file` the file ID.
    pub fn parse_buildx(text: &str) -> Result<SecretSpec, SpecError> {
        let (mut id, mut env, mut src, mut kind) = (None, None, None, None);
        for field in text.split(',').map(str::trim).filter(|f| !f.is_empty()) {
            let (key, value) = field
                .split_once('=')
                .ok_or_else(|| SpecError::NotKeyValue(field.to_string()))?;
            match key.to_ascii_lowercase().as_str() {
                "id" => id = Some(value.to_string()),
                "env" => env = Some(value.to_string()),
                "src" | "source" => src = Some(value.to_string()),
                "type" => match value {
                    "env" | "file" => kind = Some(value.to_string()),
                    _ => return Err(SpecError::Type(value.to_string())),
                },
                _ => {
                    return Err(SpecError::Field(key.to_string()));
                }
            }
        }
        let id = match id {
            Some(id) => id,
            // buildx: without id=, the id is the file's or variable's name.
            None => src
                .as_deref()
                .map(|s| {
                    std::path::Path::new(s)
                        .file_name()
                        .map_or(s.to_string(), |n| n.to_string_lossy().into_owned())
                })
                .or_else(|| env.clone())
                .ok_or(SpecError::Expected("id=ID"))?,
        };
        check_id(&id)?;
        let source = match (env, src, kind.as_deref()) {
            (Some(_), Some(_), _) => return Err(SpecError::BothSources),
            (Some(var), None, None | Some("env")) => SecretSource::Env(var),
            (None, Some(path), None | Some("file")) => SecretSource::File(PathBuf::from(path)),
            (None, None, None | Some("env")) => SecretSource::Env(id.clone()),
            (None, None, Some(_)) => SecretSource::File(PathBuf::from(&id)),
            (Some(_), None, Some(_)) => return Err(SpecError::TypeMismatch("env=", "type=env")),
            (None, Some(_), Some(_)) => return Err(SpecError::TypeMismatch("src=", "type=file")),
        };
        Ok(SecretSpec { id, source })
    }

    /// `ID=VALUE` (the `secrets` input), `ID=VAR` (`secret-envs`), `ID=PATH` (`secret-files`).
    pub fn parse_pair(text: &str, kind: PairKind) -> Result<SecretSpec, SpecError> {
        let text = text.trim_end_matches('\r');
        let (id, rest) = text
            .split_once('=')
            .ok_or(SpecError::Expected(kind.syntax()))?;
        let id = id.trim();
        check_id(id)?;
        let source = match kind {
            PairKind::Value => SecretSource::Value(rest.to_string()),
            PairKind::Env => SecretSource::Env(rest.trim().to_string()),
            PairKind::File => SecretSource::File(PathBuf::from(rest.trim())),
        };
        if matches!(&source, SecretSource::Env(v) if v.is_empty())
            || matches!(&source, SecretSource::File(p) if p.as_os_str().is_empty())
        {
            return Err(SpecError::Expected(kind.syntax()));
        }
        Ok(SecretSpec {
            id: id.to_string(),
            source,
        })
    }
}

/// A secret, SSH or attestation value that does not follow buildx's syntax.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("{0:?} is not KEY=VALUE")]
    NotKeyValue(String),
    #[error("type={0}: expected type=env or type=file")]
    Type(String),
    #[error("unknown field {0:?}; expected id=, env=, src= or type=")]
    Field(String),
    #[error("give env= or src=, not both")]
    BothSources,
    #[error("{0} goes with {1}")]
    TypeMismatch(&'static str, &'static str),
    #[error("secret id {0:?}: must be non-empty, without spaces or commas")]
    Id(String),
    /// The value's whole syntax, when no finer reason applies.
    #[error("expected {0}")]
    Expected(&'static str),
}

/// A secret whose value cannot be read before the run.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("the environment variable {0} is not set (or not UTF-8)")]
    Unset(String),
    #[error("cannot read {}: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

const SSH_SYNTAX: &str = "`default` or ID=PATH[,PATH]";

/// Which of the action's secret inputs a line comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairKind {
    Value,
    Env,
    File,
}

impl PairKind {
    fn syntax(self) -> &'static str {
        match self {
            PairKind::Value => "ID=VALUE",
            PairKind::Env => "ID=VARIABLE",
            PairKind::File => "ID=PATH",
        }
    }
}

fn check_id(id: &str) -> Result<(), SpecError> {
    if id.is_empty() || id.contains(char::is_whitespace) || id.contains(',') {
        return Err(SpecError::Id(id.to_string()));
    }
    Ok(())
}

/// A secret checked before the run: its value read (to be masked), its file made absolute.
#[derive(Clone)]
pub struct Secret {
    pub id: String,
    /// How buildx gets it.
    pub source: SecretSource,
    /// The value, for masking (`None` for a file that is not text).
    pub value: Option<String>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secret")
            .field("id", &self.id)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Secret {
    /// Reads the secret's value now, so that a missing variable or file stops the run before
    /// any work, and its value can be masked. `base` makes relative files absolute.
    pub fn resolve(spec: &SecretSpec, base: &std::path::Path) -> Result<Secret, ResolveError> {
        let (source, value) = match &spec.source {
            SecretSource::Env(var) => {
                let value = std::env::var(var).map_err(|_| ResolveError::Unset(var.to_string()))?;
                (spec.source.clone(), Some(value))
            }
            SecretSource::File(path) => {
                let path = base.join(path);
                let bytes = std::fs::read(&path).map_err(|source| ResolveError::Unreadable {
                    path: path.clone(),
                    source,
                })?;
                (SecretSource::File(path), String::from_utf8(bytes).ok())
            }
            SecretSource::Value(value) => (spec.source.clone(), Some(value.clone())),
        };
        Ok(Secret {
            id: spec.id.clone(),
            source,
            value,
        })
    }

    /// The strings to mask: each non-blank line of the value.
    pub fn mask_lines(&self) -> Vec<String> {
        self.value
            .iter()
            .flat_map(|v| v.lines())
            .map(str::trim)
            .filter(|l| l.len() >= 2)
            .map(str::to_string)
            .collect()
    }
}

/// buildx's `--ssh` syntax: `default` or `ID[=PATH[,PATH...]]`.
pub fn check_ssh(text: &str) -> Result<String, SpecError> {
    let text = text.trim();
    let id = text.split_once('=').map_or(text, |(id, _)| id);
    if id.is_empty() || id.contains(char::is_whitespace) || id.contains(',') {
        return Err(SpecError::Expected(SSH_SYNTAX));
    }
    if let Some((_, paths)) = text.split_once('=')
        && paths.split(',').any(|p| p.trim().is_empty())
    {
        return Err(SpecError::Expected(SSH_SYNTAX));
    }
    Ok(text.to_string())
}

/// buildx's `--provenance`/`--sbom` values: `true`, `false`, `1`, `0`, or `KEY=VALUE,...`.
pub fn check_attestation(text: &str) -> Result<String, SpecError> {
    let text = text.trim();
    let ok = matches!(
        text.to_ascii_lowercase().as_str(),
        "true" | "false" | "1" | "0"
    ) || (!text.is_empty()
        && text
            .split(',')
            .all(|f| f.split_once('=').is_some_and(|(k, _)| !k.trim().is_empty())));
    if ok {
        Ok(text.to_string())
    } else {
        Err(SpecError::Expected(
            "true, false, or KEY=VALUE[,KEY=VALUE] (e.g. mode=max)",
        ))
    }
}

/// Whether an attestation value turns it on.
pub fn attestation_on(text: &str) -> bool {
    !matches!(text.to_ascii_lowercase().as_str(), "false" | "0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buildx_secret_syntax() {
        assert_eq!(
            SecretSpec::parse_buildx("id=tok,env=MY_TOKEN").unwrap(),
            SecretSpec {
                id: "tok".into(),
                source: SecretSource::Env("MY_TOKEN".into())
            }
        );
        assert_eq!(
            SecretSpec::parse_buildx("id=npmrc,src=.npmrc")
                .unwrap()
                .source,
            SecretSource::File(".npmrc".into())
        );
        assert_eq!(
            SecretSpec::parse_buildx("id=TOKEN").unwrap().source,
            SecretSource::Env("TOKEN".into())
        );
        assert_eq!(
            SecretSpec::parse_buildx("src=/run/keys/aws").unwrap().id,
            "aws"
        );
        assert_eq!(
            SecretSpec::parse_buildx("id=a,type=file").unwrap().source,
            SecretSource::File("a".into())
        );
        assert!(SecretSpec::parse_buildx("id=a,env=X,src=y").is_err());
        assert!(SecretSpec::parse_buildx("id=a,value=x").is_err());
        assert!(SecretSpec::parse_buildx("").is_err());
        assert!(SecretSpec::parse_buildx("id=a b").is_err());
    }

    #[test]
    fn input_pairs_keep_the_value_after_the_first_equals_and_hide_it() {
        let s = SecretSpec::parse_pair("tok=a=b c", PairKind::Value).unwrap();
        assert_eq!(s.source, SecretSource::Value("a=b c".into()));
        assert!(!format!("{s:?}").contains("a=b"));
        assert!(SecretSpec::parse_pair("novalue", PairKind::Value).is_err());
        assert!(SecretSpec::parse_pair("x=", PairKind::Env).is_err());
        assert_eq!(
            SecretSpec::parse_pair("x=VAR", PairKind::Env)
                .unwrap()
                .source,
            SecretSource::Env("VAR".into())
        );
    }

    #[test]
    fn ssh_and_attestation_values() {
        assert!(check_ssh("default").is_ok());
        assert!(check_ssh("github=/home/u/.ssh/id_ed25519").is_ok());
        assert!(check_ssh("x=").is_err());
        assert!(check_ssh("").is_err());
        for ok in [
            "true",
            "false",
            "mode=max",
            "mode=min,inline-only=true",
            "0",
        ] {
            assert!(check_attestation(ok).is_ok(), "{ok}");
        }
        assert!(check_attestation("maybe").is_err());
        assert!(attestation_on("mode=max") && !attestation_on("false"));
    }
}

/// What only buildx builds with: build secrets, SSH forwarding, attestations. (bollard's
/// BuildKit session over the Engine API has no secrets or SSH provider.)
#[derive(Debug, Clone, Default)]
pub struct BuildxExtras {
    /// Secrets of every build (`--secret`, the action's secret inputs).
    pub secrets: Vec<Secret>,
    /// Secrets of one service (its config file entry or compose `build.secrets`), by the
    /// plan's service name; over the run's secrets of the same id.
    pub service_secrets: std::collections::BTreeMap<String, Vec<Secret>>,
    pub ssh: Vec<String>,
    pub provenance: Option<String>,
    pub sbom: Option<String>,
}

impl BuildxExtras {
    /// What of these needs buildx (empty when nothing does).
    pub fn needs_buildx(&self) -> Vec<&'static str> {
        let mut needs = Vec::new();
        if !self.secrets.is_empty() || self.service_secrets.values().any(|s| !s.is_empty()) {
            needs.push("build secrets");
        }
        if !self.ssh.is_empty() {
            needs.push("SSH forwarding");
        }
        let on = |a: &Option<String>| a.as_deref().is_some_and(attestation_on);
        if on(&self.provenance) || on(&self.sbom) {
            needs.push("attestations");
        }
        needs
    }
}

impl BuildxExtras {
    /// The secrets `service`'s build gets: the run's, then the service's own (which replace
    /// the run's of the same id).
    pub fn secrets_for(&self, service: &str) -> Vec<&Secret> {
        let own = self
            .service_secrets
            .get(service)
            .map(Vec::as_slice)
            .unwrap_or_default();
        self.secrets
            .iter()
            .filter(|s| !own.iter().any(|o| o.id == s.id))
            .chain(own)
            .collect()
    }
}

#[cfg(test)]
mod service_tests {
    use super::*;

    #[test]
    fn issue13_a_services_own_secret_replaces_the_runs_of_the_same_id() {
        let secret = |id: &str, var: &str| Secret {
            id: id.into(),
            source: SecretSource::Env(var.into()),
            value: None,
        };
        let extras = BuildxExtras {
            secrets: vec![secret("a", "RUN_A"), secret("b", "RUN_B")],
            service_secrets: [(
                "api".to_string(),
                vec![secret("b", "API_B"), secret("c", "API_C")],
            )]
            .into_iter()
            .collect(),
            ..BuildxExtras::default()
        };
        let sources = |service| -> Vec<SecretSource> {
            extras
                .secrets_for(service)
                .into_iter()
                .map(|s| s.source.clone())
                .collect()
        };
        assert_eq!(
            sources("api"),
            [
                SecretSource::Env("RUN_A".into()),
                SecretSource::Env("API_B".into()),
                SecretSource::Env("API_C".into())
            ]
        );
        assert_eq!(sources("web").len(), 2);
        assert_eq!(
            BuildxExtras {
                service_secrets: extras.service_secrets.clone(),
                ..BuildxExtras::default()
            }
            .needs_buildx(),
            ["build secrets"]
        );
    }
}
