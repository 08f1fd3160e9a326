//! Container image references, normalized exactly the way Docker and BuildKit normalize them.
//!
//! This is a port of `github.com/distribution/reference` (`ParseNormalizedNamed`,
//! `TagNameOnly`, `FamiliarString`, `ParseDockerRef`) together with the digest validation of
//! `github.com/opencontainers/go-digest`. Upstream matches the grammar of `regexp.go` with
//! regular expressions; here it is a hand-written parser that accepts exactly the same
//! language (the crate has no regex dependency), which also lets the errors say *which part*
//! of a reference is wrong.
//!
//! ```text
//! reference        := name [ ":" tag ] [ "@" digest ]
//! name             := [domain '/'] remote-name
//! domain           := host [':' port-number]
//! host             := domain-name | '[' IPv6address ']'
//! domain-name      := domain-component ['.' domain-component]*
//! domain-component := /([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])/
//! remote-name      := path-component ['/' path-component]*
//! path-component   := /[a-z0-9]+/ [separator /[a-z0-9]+/]*
//! separator        := /[._]|__|[-]+/
//! tag              := /[\w][\w.-]{0,127}/
//! digest           := algorithm ":" /[0-9a-fA-F]{32,}/
//! ```

use std::fmt;
use std::str::FromStr;

/// The domain of Docker Hub in normalized references (`defaultDomain` upstream).
pub const DEFAULT_DOMAIN: &str = "docker.io";
/// The legacy Docker Hub domain, normalized to [`DEFAULT_DOMAIN`] (`legacyDefaultDomain`).
pub const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
/// The host that actually serves Docker Hub's registry API.
pub const DOCKER_HUB_REGISTRY_HOST: &str = "registry-1.docker.io";
/// The namespace of official images on Docker Hub (`officialRepoPrefix`).
pub const OFFICIAL_REPO_PREFIX: &str = "library/";
/// The tag that `TagNameOnly` adds to a reference without tag and digest.
pub const DEFAULT_TAG: &str = "latest";
/// The longest repository path upstream accepts (`RepositoryNameTotalLengthMax`). Upstream
/// (distribution/reference v0.6) counts the path only, not the domain.
pub const REPOSITORY_NAME_MAX: usize = 255;

/// A normalized image reference: `domain/path[:tag][@digest]`.
///
/// Built by [`Reference::parse`], which normalizes familiar names the way Docker does
/// (`ubuntu` becomes `docker.io/library/ubuntu`). Serializes as its canonical string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    /// Registry domain with optional port, e.g. `docker.io`, `localhost:5000`, `[::1]:5000`.
    ///
    /// Empty only in one upstream quirk: a first component that contains `.` or `:` but is not
    /// a valid domain while the whole name is a valid path (`my_registry.local/app`). Upstream
    /// then returns a name without domain, and so does this parser.
    pub domain: String,
    /// Repository path, e.g. `library/ubuntu`.
    pub path: String,
    /// Tag, e.g. `22.04`.
    pub tag: Option<String>,
    /// Digest, e.g. `sha256:` followed by 64 hex digits.
    pub digest: Option<String>,
}

/// Which part of a reference breaks the grammar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatReason {
    #[error(
        "`{0}` is not a valid digest: write `<algorithm>:<hex>`, e.g. `sha256:` followed by 64 hex digits"
    )]
    Digest(String),
    #[error(
        "`{0}` is not a valid tag: a tag has 1 to 128 letters, digits, `_`, `.` or `-` and cannot start with `.` or `-`"
    )]
    Tag(String),
    #[error(
        "`{0}` is not a valid repository name: write `[registry[:port]/]path` where path components are lowercase letters and digits, separated by `.`, `_`, `__` or `-`"
    )]
    Name(String),
}

/// Why a string is not a valid image reference. Every variant names the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    /// The input is empty.
    #[error("the image reference is empty: give an image name such as `ubuntu:22.04`")]
    Empty,
    /// The input is a bare 64-character hex string, which Docker reserves for image IDs.
    #[error(
        "invalid repository name ({input}), cannot specify 64-byte hexadecimal strings: \
         to pin an image by content write `<name>@sha256:{input}`"
    )]
    HexIdentifier { input: String },
    /// The repository part contains uppercase letters.
    #[error(
        "invalid reference format: repository name ({repository}) must be lowercase in `{input}`: \
         write the repository in lowercase (only the tag may contain uppercase letters)"
    )]
    Uppercase { input: String, repository: String },
    /// The input does not follow the reference grammar.
    #[error("invalid reference format `{input}`: {reason}")]
    InvalidFormat { input: String, reason: FormatReason },
    /// The repository path is longer than [`REPOSITORY_NAME_MAX`].
    #[error(
        "invalid reference `{input}`: repository name must not be more than {max} characters \
         (it has {length}): shorten the repository path",
        max = REPOSITORY_NAME_MAX
    )]
    NameTooLong { input: String, length: usize },
    /// The digest uses a known algorithm but has the wrong number of hex digits.
    #[error(
        "invalid reference `{input}`: invalid checksum digest length in `{digest}`: \
         {algorithm} digests have exactly {expected} hex digits"
    )]
    DigestLength {
        input: String,
        digest: String,
        algorithm: String,
        expected: usize,
    },
    /// The digest algorithm is well formed but not one that Docker supports.
    #[error(
        "invalid reference `{input}`: unsupported digest algorithm `{algorithm}`: \
         use sha256, sha384 or sha512"
    )]
    DigestUnsupported { input: String, algorithm: String },
    /// The digest does not follow the digest grammar.
    #[error(
        "invalid reference `{input}`: invalid checksum digest format `{digest}`: \
         write `<algorithm>:<lowercase hex>`, e.g. `sha256:` followed by 64 hex digits"
    )]
    DigestFormat { input: String, digest: String },
}

impl Reference {
    /// Parses and normalizes `s` like `reference.ParseNormalizedNamed`.
    ///
    /// - A first path component is a domain iff it contains `.` or `:`, is `localhost`, or
    ///   contains an uppercase letter (`splitDockerDomain`).
    /// - `index.docker.io` becomes `docker.io`; a single path component on `docker.io` gets
    ///   the `library/` prefix.
    /// - The repository must be lowercase; tag and digest follow the upstream grammar; the
    ///   path is at most 255 characters; digests are validated like go-digest (`sha256`,
    ///   `sha384`, `sha512`, lowercase hex of the exact length).
    ///
    /// No default tag is added: see [`Reference::with_default_tag`].
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        if s.is_empty() {
            return Err(ReferenceError::Empty);
        }
        // normalize.go ParseNormalizedNamed: a bare identifier is refused.
        if is_identifier(s) {
            return Err(ReferenceError::HexIdentifier {
                input: s.to_owned(),
            });
        }
        let (domain, remainder) = split_docker_domain(s);
        // The repository is checked up to the first ':' of the remainder (upstream quirk: a
        // digest without tag is part of this `remote`).
        let remote = remainder.split(':').next().unwrap_or_default();
        if remote.to_lowercase() != remote {
            return Err(ReferenceError::Uppercase {
                input: s.to_owned(),
                repository: remote.to_owned(),
            });
        }
        parse_full(&format!("{domain}/{remainder}"), s)
    }

    /// Adds the tag `latest` when the reference has neither tag nor digest (`TagNameOnly`).
    pub fn with_default_tag(mut self) -> Reference {
        if self.tag.is_none() && self.digest.is_none() {
            self.tag = Some(DEFAULT_TAG.to_owned());
        }
        self
    }

    /// The full repository name, e.g. `docker.io/library/ubuntu`.
    pub fn name(&self) -> String {
        if self.domain.is_empty() {
            self.path.clone()
        } else {
            format!("{}/{}", self.domain, self.path)
        }
    }

    /// The canonical string: `name[:tag][@digest]`, e.g. `docker.io/library/ubuntu:22.04`.
    pub fn canonical(&self) -> String {
        let mut out = self.name();
        push_tag_and_digest(&mut out, self.tag.as_deref(), self.digest.as_deref());
        out
    }

    /// The name as the Docker CLI shows it: `docker.io/` and, for a single component below
    /// it, `library/` removed (`familiarizeName`), e.g. `ubuntu`, `grafana/grafana`.
    pub fn familiar_name(&self) -> String {
        if self.domain != DEFAULT_DOMAIN {
            return self.name();
        }
        match self.path.strip_prefix(OFFICIAL_REPO_PREFIX) {
            Some(rest) if !rest.contains('/') => rest.to_owned(),
            _ => self.path.clone(),
        }
    }

    /// The reference as the Docker CLI shows it (`FamiliarString`), e.g. `ubuntu:22.04`.
    pub fn familiar(&self) -> String {
        let mut out = self.familiar_name();
        push_tag_and_digest(&mut out, self.tag.as_deref(), self.digest.as_deref());
        out
    }

    /// What to hand to the Docker Engine API `create_image` as `fromImage`: the familiar name
    /// and always an explicit version. A digest wins over a tag, like `ParseDockerRef` (the
    /// engine pulls by digest either way, and refuses to tag with both); without either the
    /// tag is `latest`.
    pub fn pull_ref(&self) -> String {
        let name = self.familiar_name();
        match (&self.digest, &self.tag) {
            (Some(digest), _) => format!("{name}@{digest}"),
            (None, Some(tag)) => format!("{name}:{tag}"),
            (None, None) => format!("{name}:{DEFAULT_TAG}"),
        }
    }

    /// The host to talk to for this reference's registry API: `registry-1.docker.io` for
    /// Docker Hub, the domain (with port) otherwise.
    pub fn registry_host(&self) -> String {
        if self.domain == DEFAULT_DOMAIN {
            DOCKER_HUB_REGISTRY_HOST.to_owned()
        } else {
            self.domain.clone()
        }
    }

    /// The same path, tag and digest on another registry host, e.g. a pull-through mirror:
    /// `docker.io/library/ubuntu:22.04` on `127.0.0.1:5000` is
    /// `127.0.0.1:5000/library/ubuntu:22.04`.
    pub fn on_mirror(&self, mirror_host: &str) -> Reference {
        Reference {
            domain: mirror_host.to_owned(),
            ..self.clone()
        }
    }
}

fn push_tag_and_digest(out: &mut String, tag: Option<&str>, digest: Option<&str>) {
    if let Some(tag) = tag {
        out.push(':');
        out.push_str(tag);
    }
    if let Some(digest) = digest {
        out.push('@');
        out.push_str(digest);
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical())
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

impl serde::Serialize for Reference {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Reference {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Reference::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// `anchoredIdentifierRegexp`: `^[a-f0-9]{64}$`.
fn is_identifier(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'a'..=b'f' | b'0'..=b'9'))
}

/// normalize.go `splitDockerDomain`: decides whether the first component is a domain.
fn split_docker_domain(name: &str) -> (&str, String) {
    let Some((maybe_domain, maybe_remote)) = name.split_once('/') else {
        // Single element ("familiar") names are always on Docker Hub, in `library/`.
        return (DEFAULT_DOMAIN, format!("{OFFICIAL_REPO_PREFIX}{name}"));
    };
    let (domain, remote) = if maybe_domain == "localhost" {
        (maybe_domain, maybe_remote)
    } else if maybe_domain == LEGACY_DEFAULT_DOMAIN {
        (DEFAULT_DOMAIN, maybe_remote)
    } else if maybe_domain.contains(['.', ':']) || maybe_domain.to_lowercase() != maybe_domain {
        // Likely a domain or IP address; or uppercase, which a namespace cannot be.
        (maybe_domain, maybe_remote)
    } else {
        (DEFAULT_DOMAIN, name)
    };
    if domain == DEFAULT_DOMAIN && !remote.contains('/') {
        return (domain, format!("{OFFICIAL_REPO_PREFIX}{remote}"));
    }
    (domain, remote.to_owned())
}

/// reference.go `Parse` applied to the normalized string `full`; errors name `input`.
fn parse_full(full: &str, input: &str) -> Result<Reference, ReferenceError> {
    let parts = match split_reference(full) {
        Ok(parts) => parts,
        Err(reason) => {
            // Upstream: if the lowercased input matches, the error is the uppercase one.
            let lower = full.to_lowercase();
            if lower != full && split_reference(&lower).is_ok() {
                let name_and_tag = full.split('@').next().unwrap_or(full);
                let repository = match name_and_tag.rfind(':') {
                    Some(i) if !name_and_tag[i..].contains('/') => &name_and_tag[..i],
                    _ => name_and_tag,
                };
                return Err(ReferenceError::Uppercase {
                    input: input.to_owned(),
                    repository: repository.to_owned(),
                });
            }
            return Err(ReferenceError::InvalidFormat {
                input: input.to_owned(),
                reason,
            });
        }
    };
    if parts.path.len() > REPOSITORY_NAME_MAX {
        return Err(ReferenceError::NameTooLong {
            input: input.to_owned(),
            length: parts.path.len(),
        });
    }
    if let Some(digest) = parts.digest {
        validate_digest(digest, input)?;
    }
    Ok(Reference {
        domain: parts.domain.to_owned(),
        path: parts.path.to_owned(),
        tag: parts.tag.map(str::to_owned),
        digest: parts.digest.map(str::to_owned),
    })
}

struct Parts<'a> {
    domain: &'a str,
    path: &'a str,
    tag: Option<&'a str>,
    digest: Option<&'a str>,
}

/// Matches `ReferencePat` = `^(name)(?::(tag))?(?:@(digest))?$` and splits the name with
/// `anchoredNameRegexp`. Neither name nor tag can contain `@`, and a tag cannot contain `:` or
/// `/`, so the split is unambiguous: the digest follows the only `@`, and the tag follows the
/// last `:` if no `/` comes after it (a `:` before the last `/` can only be a port).
fn split_reference(s: &str) -> Result<Parts<'_>, FormatReason> {
    let (name_and_tag, digest) = match s.split_once('@') {
        Some((before, after)) => (before, Some(after)),
        None => (s, None),
    };
    if let Some(digest) = digest
        && !is_digest_pattern(digest)
    {
        return Err(FormatReason::Digest(digest.to_string()));
    }
    let (name, tag) = match name_and_tag.rfind(':') {
        Some(i) if !name_and_tag[i..].contains('/') => {
            (&name_and_tag[..i], Some(&name_and_tag[i + 1..]))
        }
        _ => (name_and_tag, None),
    };
    if let Some(tag) = tag
        && !is_tag(tag)
    {
        return Err(FormatReason::Tag(tag.to_string()));
    }
    let (domain, path) = split_name(name).ok_or_else(|| FormatReason::Name(name.to_string()))?;
    Ok(Parts {
        domain,
        path,
        tag,
        digest,
    })
}

/// `anchoredNameRegexp` = `^(?:(domainAndPort)/)?(remoteName)$`. The optional domain group is
/// tried first (leftmost-first semantics); a domain cannot contain `/`, so its only candidate
/// is the text before the first `/`.
fn split_name(name: &str) -> Option<(&str, &str)> {
    if let Some((domain, path)) = name.split_once('/')
        && is_domain_and_port(domain)
        && is_remote_name(path)
    {
        return Some((domain, path));
    }
    is_remote_name(name).then_some(("", name))
}

/// `domainAndPort` = `host (:[0-9]+)?` with `host` = `domainName | \[[a-fA-F0-9:]+\]`.
fn is_domain_and_port(s: &str) -> bool {
    let (host_ok, rest) = if let Some(inner) = s.strip_prefix('[') {
        match inner.split_once(']') {
            Some((addr, rest)) => (
                !addr.is_empty() && addr.bytes().all(|b| b.is_ascii_hexdigit() || b == b':'),
                rest,
            ),
            None => return false,
        }
    } else {
        let (host, rest) = match s.find(':') {
            Some(i) => (&s[..i], &s[i..]),
            None => (s, ""),
        };
        (
            !host.is_empty() && host.split('.').all(is_domain_component),
            rest,
        )
    };
    host_ok
        && (rest.is_empty()
            || rest
                .strip_prefix(':')
                .is_some_and(|port| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())))
}

/// `domainNameComponent` = `[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]`.
fn is_domain_component(c: &str) -> bool {
    let b = c.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|&x| x.is_ascii_alphanumeric() || x == b'-')
}

/// `remoteName` = `pathComponent (/ pathComponent)*`.
fn is_remote_name(s: &str) -> bool {
    s.split('/').all(is_path_component)
}

/// `pathComponent` = `[a-z0-9]+ (separator [a-z0-9]+)*`, separator = `[._]|__|[-]+`.
fn is_path_component(c: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let b = c.as_bytes();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let valid = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !valid {
            return false;
        }
    }
    true
}

/// `tag` = `[\w][\w.-]{0,127}`.
fn is_tag(t: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && word(b[0])
        && b.iter().all(|&x| word(x) || x == b'.' || x == b'-')
}

/// `digestPat` = `[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][[:xdigit:]]{32,}`.
fn is_digest_pattern(d: &str) -> bool {
    let Some((algorithm, hex)) = d.split_once(':') else {
        return false;
    };
    let algorithm_ok = algorithm.split(['-', '_', '+', '.']).all(|part| {
        let b = part.as_bytes();
        !b.is_empty() && b[0].is_ascii_alphabetic() && b.iter().all(u8::is_ascii_alphanumeric)
    });
    algorithm_ok && hex.len() >= 32 && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

/// go-digest `Digest.Validate` with sha256, sha384 and sha512 registered (as in Docker and
/// BuildKit): the encoded part must be lowercase hex of exactly the algorithm's size.
fn validate_digest(digest: &str, input: &str) -> Result<(), ReferenceError> {
    let format_error = || ReferenceError::DigestFormat {
        input: input.to_owned(),
        digest: digest.to_owned(),
    };
    let Some((algorithm, encoded)) = digest.split_once(':') else {
        return Err(format_error());
    };
    if encoded.is_empty() {
        return Err(format_error());
    }
    let expected = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => {
            // `DigestRegexpAnchored`: `^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$`.
            let algorithm_ok = algorithm.split(['.', '+', '_', '-']).all(|part| {
                !part.is_empty()
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            });
            let encoded_ok = encoded
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b'_' | b'-'));
            if algorithm_ok && encoded_ok {
                return Err(ReferenceError::DigestUnsupported {
                    input: input.to_owned(),
                    algorithm: algorithm.to_owned(),
                });
            }
            return Err(format_error());
        }
    };
    if encoded.len() != expected {
        return Err(ReferenceError::DigestLength {
            input: input.to_owned(),
            digest: digest.to_owned(),
            algorithm: algorithm.to_owned(),
            expected,
        });
    }
    if !encoded
        .bytes()
        .all(|b| matches!(b, b'a'..=b'f' | b'0'..=b'9'))
    {
        return Err(format_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SHA: &str = "sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";

    fn parse(s: &str) -> Reference {
        Reference::parse(s).unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
    }

    // normalize_test.go TestValidateReferenceName.
    #[test]
    fn upstream_valid_reference_names() {
        for name in [
            "docker/docker",
            "library/debian",
            "debian",
            "docker.io/docker/docker",
            "docker.io/library/debian",
            "docker.io/debian",
            "index.docker.io/docker/docker",
            "index.docker.io/library/debian",
            "index.docker.io/debian",
            "127.0.0.1:5000/docker/docker",
            "127.0.0.1:5000/library/debian",
            "127.0.0.1:5000/debian",
            "192.168.0.1",
            "192.168.0.1:80",
            "192.168.0.1:8/debian",
            "192.168.0.2:25000/debian",
            "thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev",
            "[fc00::1]:5000/docker",
            "[fc00::1]:5000/docker/docker",
            "[fc00:1:2:3:4:5:6:7]:5000/library/debian",
            "docker.io/1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a",
            "Docker/docker",
            "DOCKER/docker",
        ] {
            assert!(Reference::parse(name).is_ok(), "{name:?} should be valid");
        }
    }

    // normalize_test.go TestValidateReferenceName.
    #[test]
    fn upstream_invalid_reference_names() {
        for name in [
            "https://github.com/docker/docker",
            "docker/Docker",
            "-docker",
            "-docker/docker",
            "-docker.io/docker/docker",
            "docker///docker",
            "docker.io/docker/Docker",
            "docker.io/docker///docker",
            "[fc00::1]",
            "[fc00::1]:5000",
            "fc00::1:5000/debian",
            "[fe80::1%eth0]:5000/debian",
            "[2001:db8:3:4::192.0.2.33]:5000/debian",
            "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a",
        ] {
            assert!(
                Reference::parse(name).is_err(),
                "{name:?} should be invalid"
            );
        }
    }

    // normalize_test.go TestValidateRemoteName.
    #[test]
    fn upstream_remote_names() {
        for name in [
            "docker/docker",
            "thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev",
            "docker-rules/docker",
            "docker---rules/docker",
            "doc/docker",
            "d/docker",
            "jess/t",
            "dock__er/docker",
        ] {
            assert!(Reference::parse(name).is_ok(), "{name:?} should be valid");
        }
        let too_long = format!("{}/docker", "this_is_not_a_valid_namespace_".repeat(9));
        for name in [
            "docker/Docker",
            "docker///docker",
            "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a",
            "-docker/docker",
            "docker-/docker",
            "-docker-/docker",
            "____/____",
            "_docker/_docker",
            "dock..er/docker",
            "dock_.er/docker",
            "dock-.er/docker",
            "docker/",
            too_long.as_str(),
        ] {
            assert!(
                Reference::parse(name).is_err(),
                "{name:?} should be invalid"
            );
        }
    }

    // normalize_test.go TestParseRepositoryInfo: every spelling gives the same parts.
    #[test]
    fn upstream_repository_info() {
        let cases: &[(&str, &str, &str, &str, &[&str])] = &[
            // (path, familiar, full, domain, other spellings)
            (
                "fooo/bar",
                "fooo/bar",
                "docker.io/fooo/bar",
                "docker.io",
                &["index.docker.io/fooo/bar"],
            ),
            (
                "library/ubuntu",
                "ubuntu",
                "docker.io/library/ubuntu",
                "docker.io",
                &["library/ubuntu"],
            ),
            (
                "nonlibrary/ubuntu",
                "nonlibrary/ubuntu",
                "docker.io/nonlibrary/ubuntu",
                "docker.io",
                &[],
            ),
            (
                "other/library",
                "other/library",
                "docker.io/other/library",
                "docker.io",
                &[],
            ),
            (
                "private/moonbase",
                "127.0.0.1:8000/private/moonbase",
                "127.0.0.1:8000/private/moonbase",
                "127.0.0.1:8000",
                &[],
            ),
            (
                "privatebase",
                "127.0.0.1:8000/privatebase",
                "127.0.0.1:8000/privatebase",
                "127.0.0.1:8000",
                &[],
            ),
            (
                "private/moonbase",
                "example.com/private/moonbase",
                "example.com/private/moonbase",
                "example.com",
                &[],
            ),
            (
                "privatebase",
                "example.com:8000/privatebase",
                "example.com:8000/privatebase",
                "example.com:8000",
                &[],
            ),
            (
                "library/ubuntu-12.04-base",
                "ubuntu-12.04-base",
                "docker.io/library/ubuntu-12.04-base",
                "docker.io",
                &["index.docker.io/library/ubuntu-12.04-base"],
            ),
            (
                "library/foo",
                "foo",
                "docker.io/library/foo",
                "docker.io",
                &["docker.io/foo"],
            ),
            (
                "library/foo/bar",
                "library/foo/bar",
                "docker.io/library/foo/bar",
                "docker.io",
                &[],
            ),
            (
                "store/foo/bar",
                "store/foo/bar",
                "docker.io/store/foo/bar",
                "docker.io",
                &[],
            ),
            ("bar", "Foo/bar", "Foo/bar", "Foo", &[]),
            ("bar", "FOO/bar", "FOO/bar", "FOO", &[]),
        ];
        for (path, familiar, full, domain, others) in cases {
            for input in [*familiar, *full].iter().chain(others.iter()) {
                let r = parse(input);
                assert_eq!(r.path, *path, "path of {input}");
                assert_eq!(r.domain, *domain, "domain of {input}");
                assert_eq!(r.name(), *full, "name of {input}");
                assert_eq!(r.familiar(), *familiar, "familiar of {input}");
            }
        }
    }

    // normalize_test.go TestNormalizedSplitHostname.
    #[test]
    fn upstream_split_hostname() {
        for (input, domain, path) in [
            ("test.com/foo", "test.com", "foo"),
            ("test_com/foo", "docker.io", "test_com/foo"),
            ("docker/migrator", "docker.io", "docker/migrator"),
            ("test.com:8080/foo", "test.com:8080", "foo"),
            ("test-com:8080/foo", "test-com:8080", "foo"),
            ("foo", "docker.io", "library/foo"),
            ("xn--n3h.com/foo", "xn--n3h.com", "foo"),
            ("xn--n3h.com:18080/foo", "xn--n3h.com:18080", "foo"),
            ("docker.io/foo", "docker.io", "library/foo"),
            ("docker.io/library/foo", "docker.io", "library/foo"),
            ("docker.io/library/foo/bar", "docker.io", "library/foo/bar"),
            ("localhost/foo", "localhost", "foo"),
            ("localhost:5000/foo", "localhost:5000", "foo"),
        ] {
            let r = parse(input);
            assert_eq!(
                (r.domain.as_str(), r.path.as_str()),
                (domain, path),
                "{input}"
            );
        }
    }

    // normalize_test.go TestParseReferenceWithTagAndDigest.
    #[test]
    fn tag_and_digest_together() {
        let short = "busybox:latest@sha256:86e0e091d0da6bde2456dbb48306f3956bbeb2eae1b5b9a43045843f69fe4aaa";
        let r = parse(short);
        assert_eq!(r.canonical(), format!("docker.io/library/{short}"));
        assert_eq!(r.familiar(), short);
        assert_eq!(r.tag.as_deref(), Some("latest"));
        assert!(r.digest.is_some());
        // ParseDockerRef: the digest wins when pulling.
        assert_eq!(
            r.pull_ref(),
            "busybox@sha256:86e0e091d0da6bde2456dbb48306f3956bbeb2eae1b5b9a43045843f69fe4aaa"
        );
    }

    // normalize_test.go TestParseAnyReference (the named cases).
    #[test]
    fn upstream_equivalents() {
        let dgst = "sha256:dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9c";
        for (input, canonical) in [
            ("redis", "docker.io/library/redis".to_owned()),
            ("redis:latest", "docker.io/library/redis:latest".to_owned()),
            (
                "docker.io/library/redis:latest",
                "docker.io/library/redis:latest".to_owned(),
            ),
            (
                &format!("redis@{dgst}"),
                format!("docker.io/library/redis@{dgst}"),
            ),
            ("dmcgowan/myapp", "docker.io/dmcgowan/myapp".to_owned()),
            (
                "dmcgowan/myapp:latest",
                "docker.io/dmcgowan/myapp:latest".to_owned(),
            ),
            (
                &format!("dmcgowan/myapp@{dgst}"),
                format!("docker.io/dmcgowan/myapp@{dgst}"),
            ),
            (
                "dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9",
                "docker.io/library/dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9"
                    .to_owned(),
            ),
            ("dbcc1", "docker.io/library/dbcc1".to_owned()),
        ] {
            assert_eq!(parse(input).canonical(), canonical, "{input}");
        }
    }

    // reference_test.go TestReferenceParse, through the normalizing parser: (input, domain,
    // path, tag, digest).
    /// (input, domain, path, tag, digest)
    type ParseCase<'a> = (String, &'a str, String, Option<&'a str>, Option<&'a str>);

    #[test]
    fn upstream_reference_parse_valid() {
        let cases: Vec<ParseCase> = vec![
            (
                "test_com".into(),
                "docker.io",
                "library/test_com".into(),
                None,
                None,
            ),
            (
                "test.com:tag".into(),
                "docker.io",
                "library/test.com".into(),
                Some("tag"),
                None,
            ),
            (
                "test.com:5000".into(),
                "docker.io",
                "library/test.com".into(),
                Some("5000"),
                None,
            ),
            (
                "test.com/repo:tag".into(),
                "test.com",
                "repo".into(),
                Some("tag"),
                None,
            ),
            (
                "test:5000/repo".into(),
                "test:5000",
                "repo".into(),
                None,
                None,
            ),
            (
                "test:5000/repo:tag".into(),
                "test:5000",
                "repo".into(),
                Some("tag"),
                None,
            ),
            (
                format!("test:5000/repo@{SHA}"),
                "test:5000",
                "repo".into(),
                None,
                Some(SHA),
            ),
            (
                format!("test:5000/repo:tag@{SHA}"),
                "test:5000",
                "repo".into(),
                Some("tag"),
                Some(SHA),
            ),
            (
                "lowercase:Uppercase".into(),
                "docker.io",
                "library/lowercase".into(),
                Some("Uppercase"),
                None,
            ),
            (
                format!("{}a:tag-puts-this-over-max", "a/".repeat(127)),
                "docker.io",
                format!("{}a", "a/".repeat(127)),
                Some("tag-puts-this-over-max"),
                None,
            ),
            (
                "sub-dom1.foo.com/bar/baz/quux".into(),
                "sub-dom1.foo.com",
                "bar/baz/quux".into(),
                None,
                None,
            ),
            (
                "b.gcr.io/test.example.com/my-app:test.example.com".into(),
                "b.gcr.io",
                "test.example.com/my-app".into(),
                Some("test.example.com"),
                None,
            ),
            (
                "xn--n3h.com/myimage:xn--n3h.com".into(),
                "xn--n3h.com",
                "myimage".into(),
                Some("xn--n3h.com"),
                None,
            ),
            (
                "foo_bar.com:8080".into(),
                "docker.io",
                "library/foo_bar.com".into(),
                Some("8080"),
                None,
            ),
            (
                "foo/foo_bar.com:8080".into(),
                "docker.io",
                "foo/foo_bar.com".into(),
                Some("8080"),
                None,
            ),
            (
                "192.168.1.1".into(),
                "docker.io",
                "library/192.168.1.1".into(),
                None,
                None,
            ),
            (
                "192.168.1.1:5000".into(),
                "docker.io",
                "library/192.168.1.1".into(),
                Some("5000"),
                None,
            ),
            (
                "192.168.1.1/repo".into(),
                "192.168.1.1",
                "repo".into(),
                None,
                None,
            ),
            (
                "192.168.1.1:5000/repo:5050".into(),
                "192.168.1.1:5000",
                "repo".into(),
                Some("5050"),
                None,
            ),
            (
                "[2001:db8::1]/repo".into(),
                "[2001:db8::1]",
                "repo".into(),
                None,
                None,
            ),
            (
                "[2001:db8:1:2:3:4:5:6]/repo:tag".into(),
                "[2001:db8:1:2:3:4:5:6]",
                "repo".into(),
                Some("tag"),
                None,
            ),
            (
                "[2001:db8::1]:5000/repo:tag".into(),
                "[2001:db8::1]:5000",
                "repo".into(),
                Some("tag"),
                None,
            ),
            (
                format!("[2001:db8::1]:5000/repo@{SHA}"),
                "[2001:db8::1]:5000",
                "repo".into(),
                None,
                Some(SHA),
            ),
            (
                "[::1]:5000/repo".into(),
                "[::1]:5000",
                "repo".into(),
                None,
                None,
            ),
        ];
        for (input, domain, path, tag, digest) in cases {
            let r = parse(&input);
            assert_eq!(r.domain, domain, "domain of {input}");
            assert_eq!(r.path, path, "path of {input}");
            assert_eq!(r.tag.as_deref(), tag, "tag of {input}");
            assert_eq!(r.digest.as_deref(), digest, "digest of {input}");
        }
        let sha512 = format!("sha512:{}", "f".repeat(128));
        let r = parse(&format!("xn--7o8h.com/myimage:xn--7o8h.com@{sha512}"));
        assert_eq!(r.digest.as_deref(), Some(sha512.as_str()));
    }

    // reference_test.go TestReferenceParse error cases, with the matching error kinds.
    #[test]
    fn upstream_reference_parse_errors() {
        use ReferenceError as E;
        let err = |s: &str| Reference::parse(s).expect_err(s);
        assert_eq!(err(""), E::Empty);
        assert!(matches!(err(":justtag"), E::InvalidFormat { .. }));
        assert!(matches!(err(&format!("@{SHA}")), E::InvalidFormat { .. }));
        assert!(matches!(
            err("repo@sha256:ffffffffffffffffffffffffffffffffff"),
            E::DigestLength { expected: 64, .. }
        ));
        assert!(matches!(
            err(&format!("validname@invaliddigest:{}", "f".repeat(64))),
            E::DigestUnsupported { .. }
        ));
        assert!(matches!(err("Uppercase:tag"), E::Uppercase { .. }));
        assert_eq!(
            err("test:5000/Uppercase/lowercase:tag"),
            E::Uppercase {
                input: "test:5000/Uppercase/lowercase:tag".into(),
                repository: "Uppercase/lowercase".into(),
            }
        );
        assert!(matches!(
            err(&format!("{}a:tag", "a/".repeat(128))),
            E::NameTooLong { length: 257, .. }
        ));
        assert!(matches!(err("aa/asdf$$^/aa"), E::InvalidFormat { .. }));
        for s in [
            "[2001:db8::1]",
            "[2001:db8::1]:5000",
            "[2001:db8::1]:tag",
            "[fe80::1%eth0]:5000/repo",
            "[fe80::1%@invalidzone]:5000/repo",
        ] {
            assert!(Reference::parse(s).is_err(), "{s}");
        }
    }

    // "FIXME" in reference_test.go: an uppercase first component is taken as a domain.
    #[test]
    fn uppercase_first_component_is_a_domain() {
        let r = parse("Uppercase/lowercase:tag");
        assert_eq!(
            (r.domain.as_str(), r.path.as_str()),
            ("Uppercase", "lowercase")
        );
    }

    // The grammar-stage uppercase check (reference.go Parse): "A_B" is taken as a domain
    // (uppercase) but is not a valid one, and only the lowercased whole is a valid path.
    #[test]
    fn uppercase_detected_by_the_grammar_stage() {
        assert_eq!(
            Reference::parse("A_B/c:Tag"),
            Err(ReferenceError::Uppercase {
                input: "A_B/c:Tag".into(),
                repository: "A_B/c".into(),
            })
        );
    }

    #[test]
    fn uppercase_error_names_input_and_repository() {
        let e = Reference::parse("MyApp:1.0").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("`MyApp:1.0`"), "{msg}");
        assert!(msg.contains("library/MyApp"), "{msg}");
    }

    #[test]
    fn hex_identifier_is_refused_with_hint() {
        let id = "dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9c";
        let e = Reference::parse(id).unwrap_err();
        assert!(matches!(e, ReferenceError::HexIdentifier { .. }));
        assert!(e.to_string().contains("@sha256:"), "{e}");
    }

    #[test]
    fn tag_grammar() {
        let max = "t".repeat(128);
        assert_eq!(
            parse(&format!("a:{max}")).tag.as_deref(),
            Some(max.as_str())
        );
        for bad in [
            format!("a:{}", "t".repeat(129)),
            "a:-x".into(),
            "a:.x".into(),
            "a:".into(),
            "a:x+y".into(),
        ] {
            let e = Reference::parse(&bad).unwrap_err();
            assert!(e.to_string().contains("tag"), "{bad}: {e}");
        }
        assert_eq!(parse("a:_x.Y-1").tag.as_deref(), Some("_x.Y-1"));
    }

    #[test]
    fn digest_validation_like_go_digest() {
        use ReferenceError as E;
        let upper = format!("a@sha256:{}", "F".repeat(64));
        assert!(matches!(
            Reference::parse(&upper),
            Err(E::DigestFormat { .. })
        ));
        let sha384 = format!("a@sha384:{}", "0".repeat(96));
        assert!(Reference::parse(&sha384).is_ok());
        let short384 = format!("a@sha384:{}", "0".repeat(64));
        assert!(matches!(
            Reference::parse(&short384),
            Err(E::DigestLength { expected: 96, .. })
        ));
        // Fewer than 32 hex digits fails the reference grammar itself.
        assert!(matches!(
            Reference::parse("a@sha256:abc"),
            Err(E::InvalidFormat { .. })
        ));
        // Upstream quirk: a digest without tag is part of the lowercase check.
        let upper_alg = format!("a@SHA256:{}", "0".repeat(64));
        assert!(matches!(
            Reference::parse(&upper_alg),
            Err(E::Uppercase { .. })
        ));
    }

    #[test]
    fn repository_length_counts_the_path_only() {
        let path = "a".repeat(255);
        assert!(Reference::parse(&format!("registry.example.com/{path}")).is_ok());
        let e = Reference::parse(&format!("registry.example.com/{path}b")).unwrap_err();
        assert!(matches!(e, ReferenceError::NameTooLong { length: 256, .. }));
    }

    // Upstream quirk: a first component with '.' that is not a valid domain, while the whole
    // name is a valid path, yields a name without domain.
    #[test]
    fn invalid_domain_with_dot_falls_back_to_a_domainless_path() {
        let r = parse("my_registry.local/app");
        assert_eq!(r.domain, "");
        assert_eq!(r.name(), "my_registry.local/app");
        assert_eq!(parse(&r.canonical()), r);
    }

    #[test]
    fn with_default_tag_is_tag_name_only() {
        assert_eq!(
            parse("ubuntu").with_default_tag().canonical(),
            "docker.io/library/ubuntu:latest"
        );
        assert_eq!(
            parse("ubuntu:22.04").with_default_tag().tag.as_deref(),
            Some("22.04")
        );
        let pinned = parse(&format!("ubuntu@{SHA}")).with_default_tag();
        assert_eq!(pinned.tag, None);
    }

    #[test]
    fn renderings() {
        let r = parse("ubuntu:22.04");
        assert_eq!(r.name(), "docker.io/library/ubuntu");
        assert_eq!(r.canonical(), "docker.io/library/ubuntu:22.04");
        assert_eq!(r.to_string(), r.canonical());
        assert_eq!(r.familiar(), "ubuntu:22.04");
        assert_eq!(r.pull_ref(), "ubuntu:22.04");
        assert_eq!(r.registry_host(), "registry-1.docker.io");

        let g = parse("ghcr.io/owner/app");
        assert_eq!(g.familiar(), "ghcr.io/owner/app");
        assert_eq!(g.pull_ref(), "ghcr.io/owner/app:latest");
        assert_eq!(g.registry_host(), "ghcr.io");

        let l = parse("localhost:5000/x");
        assert_eq!(l.registry_host(), "localhost:5000");
        assert_eq!(l.familiar(), "localhost:5000/x");

        let d = parse(&format!("grafana/grafana@{SHA}"));
        assert_eq!(d.familiar(), format!("grafana/grafana@{SHA}"));
        assert_eq!(d.pull_ref(), format!("grafana/grafana@{SHA}"));
    }

    #[test]
    fn familiar_keeps_nested_library_paths() {
        assert_eq!(parse("library/foo/bar").familiar(), "library/foo/bar");
        assert_eq!(parse("docker.io/library/foo").familiar(), "foo");
    }

    #[test]
    fn on_mirror_moves_only_the_domain() {
        let r = parse("ubuntu:22.04").on_mirror("127.0.0.1:5000");
        assert_eq!(r.canonical(), "127.0.0.1:5000/library/ubuntu:22.04");
        assert_eq!(r.familiar(), "127.0.0.1:5000/library/ubuntu:22.04");
        assert_eq!(r.registry_host(), "127.0.0.1:5000");
        let d = parse(&format!("x/y@{SHA}")).on_mirror("mirror.local");
        assert_eq!(d.canonical(), format!("mirror.local/x/y@{SHA}"));
    }

    #[test]
    fn serde_round_trip_as_canonical_string() {
        let r = parse("nginx:1.27");
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(json, "\"docker.io/library/nginx:1.27\"");
        let back: Reference = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
        assert!(serde_json::from_str::<Reference>("\"Bad Ref\"").is_err());
    }

    #[test]
    fn ordering_and_hash_follow_fields() {
        let mut v = [parse("b"), parse("a:2"), parse("a:1")];
        v.sort();
        let names: Vec<String> = v.iter().map(Reference::familiar).collect();
        assert_eq!(names, ["a:1", "a:2", "b"]);
        let set: std::collections::HashSet<Reference> =
            [parse("ubuntu"), parse("docker.io/library/ubuntu")]
                .into_iter()
                .collect();
        assert_eq!(set.len(), 1);
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,80}") {
            let _ = Reference::parse(&s);
        }

        #[test]
        fn parse_never_panics_on_reference_like_input(
            s in "[a-zA-Z0-9._\\-/:@\\[\\]%]{0,60}"
        ) {
            let _ = Reference::parse(&s);
        }

        /// Whatever parses is normalized: parsing the canonical form gives it back.
        #[test]
        fn canonical_is_a_fixed_point(s in "[a-z0-9._\\-/:@]{1,40}") {
            if let Ok(r) = Reference::parse(&s) {
                let again = Reference::parse(&r.canonical());
                prop_assert_eq!(again.as_ref(), Ok(&r));
                let familiar = Reference::parse(&r.familiar());
                prop_assert_eq!(familiar.as_ref(), Ok(&r));
            }
        }
    }
}
