//! `dockerfile2llb/convert.go`: meta args, expansion, stages and image references.

use super::instructions::{From, Parsed};
use super::shell::{self, Env, Options};
use super::{
    BuildContextArgs, DockerfileError, ExpansionError, ImageUse, Stage, StageBase, UseKind,
};
use crate::reference::Reference;
use std::collections::HashMap;

const SCRATCH: &str = "scratch";

/// `platformArgs`: the automatic platform args, each overridable by a build arg.
fn global_args(args: &BuildContextArgs<'_>) -> Env {
    let (b, t) = (&args.build_platform, &args.target_platform);
    let automatic = [
        ("BUILDPLATFORM", b.to_string()),
        ("BUILDOS", b.os.clone()),
        ("BUILDARCH", b.architecture.clone()),
        ("BUILDVARIANT", b.variant.clone().unwrap_or_default()),
        ("TARGETPLATFORM", t.to_string()),
        ("TARGETOS", t.os.clone()),
        ("TARGETARCH", t.architecture.clone()),
        ("TARGETVARIANT", t.variant.clone().unwrap_or_default()),
    ];
    automatic
        .into_iter()
        .map(|(k, v)| {
            let v = args.build_args.get(k).cloned().unwrap_or(v);
            (k.to_owned(), v)
        })
        .collect()
}

fn expand(word: &str, env: &Env, escape: char, line: usize) -> Result<String, DockerfileError> {
    shell::process(word, env, escape, Options::default())
        .map(|o| o.result)
        .map_err(|e| match e {
            ExpansionError::Required {
                expr,
                name,
                unset,
                message,
            } => DockerfileError::RequiredArg {
                line,
                expr,
                name,
                unset,
                message,
            },
            source => DockerfileError::Expansion {
                line,
                word: word.to_owned(),
                source,
            },
        })
}

fn image(
    raw: String,
    line: usize,
    kind: UseKind,
    platform: Option<String>,
    stage: usize,
) -> Result<ImageUse, DockerfileError> {
    let reference = Reference::parse(&raw)
        .map_err(|source| DockerfileError::InvalidReference { line, source })?
        .with_default_tag();
    Ok(ImageUse {
        reference,
        raw,
        line,
        kind,
        platform,
        stage: Some(stage),
    })
}

/// Stages with their bases; the images they use are appended to `images`.
pub(super) fn resolve(
    parsed: &[Parsed],
    args: &BuildContextArgs<'_>,
    escape: char,
    images: &mut Vec<ImageUse>,
) -> Result<Vec<Stage>, DockerfileError> {
    let froms: Vec<&From> = parsed
        .iter()
        .filter_map(|p| match p {
            Parsed::From(f) => Some(f),
            _ => None,
        })
        .collect();
    if froms.is_empty() {
        return Err(DockerfileError::NoStages);
    }

    // buildMetaArgs: a build arg applies only to a declared ARG and is taken verbatim; a
    // default is expanded with the args so far; an ARG with neither stays unset.
    let mut env = global_args(args);
    for p in parsed {
        if let Parsed::MetaArg { line, args: pairs } = p {
            for (key, default) in pairs {
                let value = match (args.build_args.get(key), default) {
                    (Some(v), _) => Some(v.clone()),
                    (None, Some(d)) => Some(expand(d, &env, escape, *line)?),
                    (None, None) => None,
                };
                if let Some(v) = value {
                    env.insert(key.clone(), v);
                }
            }
        }
    }

    // Stage bases: a FROM names an *earlier* stage by its lowercased name, matched
    // exactly (`dispatchStates.addState`); `scratch` is no image; anything else is one.
    let mut stages = Vec::new();
    let mut by_name: HashMap<String, usize> = HashMap::new();
    let mut from_images = Vec::new();
    for (index, from) in froms.iter().enumerate() {
        let base = expand(&from.base, &env, escape, from.line)?;
        if base.is_empty() {
            return Err(DockerfileError::BlankBaseName {
                line: from.line,
                word: from.base.clone(),
            });
        }
        let platform = match &from.platform {
            Some(p) => {
                let value = expand(p, &env, escape, from.line)?;
                if value.is_empty() {
                    return Err(DockerfileError::EmptyPlatform {
                        line: from.line,
                        word: p.clone(),
                    });
                }
                Some(value)
            }
            None => None,
        };
        let stage_base = match by_name.get(&base) {
            Some(&i) => StageBase::Stage(i),
            None if base == SCRATCH => StageBase::Scratch,
            // Resolved below, once every stage is known (as upstream does).
            None => {
                from_images.push((index, base.clone()));
                StageBase::Scratch
            }
        };
        if let Some(name) = &from.name {
            by_name.insert(name.clone(), index);
        }
        stages.push(Stage {
            index,
            name: from.name.clone(),
            base: stage_base,
            line: from.line,
            platform,
            reads: Vec::new(),
        });
    }

    // toCommand / detectRunMount: `--from` is a stage name (case-insensitive, any stage)
    // or, for COPY only, a stage index; otherwise an image.
    // The stage each instruction belongs to: the last FROM before it.
    let mut other_uses: Vec<(usize, String, UseKind, usize)> = Vec::new();
    let mut current = 0;
    let mut seen_from = false;
    for p in parsed {
        match p {
            Parsed::From(_) => {
                if seen_from {
                    current += 1;
                }
                seen_from = true;
            }
            Parsed::CopyFrom { line, from } => {
                // PR moby/buildkit#6153: `--from` is never expanded; say so.
                let unchanged = shell::process(from, &Env::new(), escape, Options::default())
                    .map_err(|source| DockerfileError::Expansion {
                        line: *line,
                        word: from.clone(),
                        source,
                    })?
                    .result;
                if &unchanged != from {
                    return Err(DockerfileError::FromFlagExpansion {
                        line: *line,
                        flag: "COPY --from",
                        value: from.clone(),
                    });
                }
                if let Some(index) = go_atoi(from) {
                    if index < 0 || index as u64 >= stages.len() as u64 {
                        return Err(DockerfileError::InvalidStageIndex {
                            line: *line,
                            index,
                            stages: stages.len(),
                        });
                    }
                    stages[current].reads.push(index as usize);
                    continue;
                }
                match by_name.get(&from.to_lowercase()) {
                    Some(&read) => stages[current].reads.push(read),
                    None if from == SCRATCH => {}
                    None => other_uses.push((*line, from.clone(), UseKind::CopyFrom, current)),
                }
            }
            Parsed::RunMounts { line, froms } => {
                for from in froms {
                    match by_name.get(&from.to_lowercase()) {
                        Some(&read) => stages[current].reads.push(read),
                        None if from == SCRATCH => {}
                        None => other_uses.push((*line, from.clone(), UseKind::MountFrom, current)),
                    }
                }
            }
            _ => {}
        }
    }

    for (index, raw) in from_images {
        let stage = &mut stages[index];
        let use_ = image(
            raw,
            stage.line,
            UseKind::From,
            stage.platform.clone(),
            index,
        )?;
        stage.base = StageBase::Image(use_.reference.clone());
        images.push(use_);
    }
    for (line, raw, kind, stage) in other_uses {
        images.push(image(raw, line, kind, None, stage)?);
    }
    // Source order; a RUN's mounts keep their order (the sort is stable).
    images.sort_by_key(|u| u.line);
    Ok(stages)
}

/// Go's `strconv.Atoi`: optional sign, ASCII digits, fits in an `int` (64 bits).
fn go_atoi(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<i64>().ok()
}
