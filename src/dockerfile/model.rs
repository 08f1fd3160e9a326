//! What [`super::parse`] returns and takes: the found stages and image uses, the build's
//! platforms and build args.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::reference::Reference;

/// An OCI platform, `os/architecture[/variant]`, e.g. `linux/arm64/v8`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Default for Platform {
    /// `linux/amd64`.
    fn default() -> Self {
        Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        }
    }
}

impl fmt::Display for Platform {
    /// containerd `platforms.Format`: `os/arch[/variant]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

impl Platform {
    /// The platform of this machine (`linux/amd64`, `linux/arm64`, ...), as BuildKit names
    /// it: the platform of a local engine, so the default `BUILDPLATFORM` and
    /// `TARGETPLATFORM`.
    pub fn host() -> Platform {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", None),
            "arm" => ("arm", Some("v7")),
            "x86" => ("386", None),
            "powerpc64" => ("ppc64le", None),
            "loongarch64" => ("loong64", None),
            other => (other, None),
        };
        Platform {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: variant.map(str::to_string),
        }
    }
}

/// A platform string that is not `os/architecture[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid platform `{0}`: write `os/architecture[/variant]`, e.g. `linux/amd64` or `linux/arm64/v8`"
)]
pub struct PlatformError(pub String);

impl FromStr for Platform {
    type Err = PlatformError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('/').collect();
        let valid = |p: &&str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        };
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(valid) {
            return Err(PlatformError(s.to_owned()));
        }
        Ok(Platform {
            os: parts[0].to_ascii_lowercase(),
            architecture: parts[1].to_ascii_lowercase(),
            variant: parts.get(2).map(|v| v.to_ascii_lowercase()),
        })
    }
}

impl Serialize for Platform {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// What a build is run with, as far as finding its images is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildContextArgs<'a> {
    /// `--build-arg`s. They apply to declared meta `ARG`s, override the automatic platform
    /// args, and `BUILDKIT_SYNTAX` overrides the `# syntax=` directive.
    pub build_args: &'a BTreeMap<String, String>,
    /// The platform the image is built for (`TARGETPLATFORM`); default `linux/amd64`.
    pub target_platform: Platform,
    /// The platform of the builder (`BUILDPLATFORM`); default `linux/amd64`.
    pub build_platform: Platform,
}

static NO_BUILD_ARGS: BTreeMap<String, String> = BTreeMap::new();

impl<'a> BuildContextArgs<'a> {
    /// These build args, with both platforms `linux/amd64`.
    pub fn new(build_args: &'a BTreeMap<String, String>) -> Self {
        BuildContextArgs {
            build_args,
            target_platform: Platform::default(),
            build_platform: Platform::default(),
        }
    }
}

impl Default for BuildContextArgs<'static> {
    fn default() -> Self {
        BuildContextArgs::new(&NO_BUILD_ARGS)
    }
}

/// What [`super::parse`] found in a Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dockerfile {
    /// The frontend image from `# syntax=` (or the `BUILDKIT_SYNTAX` build arg).
    pub syntax: Option<ImageUse>,
    /// The build stages, in order.
    pub stages: Vec<Stage>,
    /// Every use of an external image, in source order (the syntax image first), including
    /// `COPY --from=<image>` and `RUN --mount=from=<image>`. The same image may appear more
    /// than once: see [`Dockerfile::unique_references`].
    pub images: Vec<ImageUse>,
}

impl Dockerfile {
    /// The distinct external images, in order of first use.
    pub fn unique_references(&self) -> Vec<&Reference> {
        let mut seen = HashSet::new();
        self.images
            .iter()
            .map(|u| &u.reference)
            .filter(|r| seen.insert(*r))
            .collect()
    }

    /// The stages a build of `target` runs, as BuildKit decides (`isReachable` in
    /// `dockerfile2llb`): the target stage (by name, case-insensitive; the last stage when
    /// `None`), the stages it builds on, copies from or mounts, and theirs in turn. `None`
    /// when no stage has that name.
    pub fn reachable_stages(&self, target: Option<&str>) -> Option<BTreeSet<usize>> {
        let start = match target {
            None => self.stages.len().checked_sub(1)?,
            Some(name) => {
                let name = name.to_lowercase();
                self.stages
                    .iter()
                    .find(|s| s.name.as_deref() == Some(name.as_str()))?
                    .index
            }
        };
        let mut reached = BTreeSet::new();
        let mut todo = vec![start];
        while let Some(i) = todo.pop() {
            if !reached.insert(i) {
                continue;
            }
            let stage = &self.stages[i];
            if let StageBase::Stage(base) = stage.base {
                todo.push(base);
            }
            todo.extend(stage.reads.iter().copied());
        }
        Some(reached)
    }

    /// The external images a build of `target` needs: the syntax frontend and the images of
    /// the stages [`Dockerfile::reachable_stages`] gives. `None` when no stage has that name.
    pub fn images_for_target(&self, target: Option<&str>) -> Option<Vec<&ImageUse>> {
        let reached = self.reachable_stages(target)?;
        Some(
            self.images
                .iter()
                .filter(|u| u.stage.is_none_or(|s| reached.contains(&s)))
                .collect(),
        )
    }
}

/// One `FROM` and what it builds on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stage {
    /// Position among the stages, as used by `COPY --from=<index>`.
    pub index: usize,
    /// The `AS` name, lowercased like BuildKit does.
    pub name: Option<String>,
    pub base: StageBase,
    /// 1-based line of the `FROM` instruction.
    pub line: usize,
    /// The expanded `--platform` value, if the `FROM` has one (otherwise the target platform,
    /// or for a stage built on another stage, that stage's platform).
    pub platform: Option<String>,
    /// Other stages this one reads with `COPY --from=<stage>` or `RUN --mount=from=<stage>`,
    /// in source order (a stage it builds on is in [`Stage::base`]).
    pub reads: Vec<usize>,
}

/// What a stage starts from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StageBase {
    /// An external image, normalized, with the default tag applied.
    Image(Reference),
    /// An earlier stage, by index.
    Stage(usize),
    /// `FROM scratch`: nothing to pull.
    Scratch,
}

/// Where a Dockerfile uses an external image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageUse {
    /// The image, normalized, with the default tag applied.
    pub reference: Reference,
    /// The text after variable expansion, as written (e.g. `golang:1.22-alpine`).
    pub raw: String,
    /// 1-based line of the instruction, or of the `# syntax=` directive. 0 only for a
    /// frontend that comes from the `BUILDKIT_SYNTAX` build arg.
    pub line: usize,
    pub kind: UseKind,
    /// The expanded `FROM --platform` value. `None` means the build's target platform (for
    /// `FROM` without `--platform`, `COPY --from` and `RUN --mount from=`, which BuildKit
    /// resolves for the target platform) or the build platform (for the syntax frontend).
    pub platform: Option<String>,
    /// The stage whose instruction uses the image (`None` for the syntax frontend).
    pub stage: Option<usize>,
}

/// Which instruction uses an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UseKind {
    /// The base of a stage: `FROM <image>`.
    From,
    /// `COPY --from=<image>`.
    CopyFrom,
    /// `RUN --mount=...,from=<image>`.
    MountFrom,
    /// The frontend: `# syntax=<image>`.
    Syntax,
}
