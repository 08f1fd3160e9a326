//! `--changed-since REF` (issue 15): a cheap pre-filter from `git diff --name-status -M
//! REF...HEAD`. A service is *changed* when a file under its context, its Dockerfile, its
//! `<Dockerfile>.dockerignore` or a local named context was added, modified, deleted or
//! renamed (both names of a rename count), or when a service it is built from is changed.
//! A changed service is built without asking the registry or the cache directory; an
//! unchanged one is still looked up there, and built when neither has its image.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::plan::Plan;

/// Why the changed files could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum ChangedError {
    /// `git` could not be started.
    #[error("--changed-since: cannot run git: {0}")]
    Spawn(#[source] std::io::Error),
    /// `git` failed (not a repository, an unknown revision, a shallow clone without it).
    #[error(
        "--changed-since {reference}: `git {command}` failed: {message}; give a revision this \
         clone has (fetch it, e.g. `actions/checkout` with `fetch-depth: 0`)"
    )]
    Git {
        reference: String,
        command: String,
        message: String,
    },
}

/// Which services changed since a revision, and the first file that says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedSince {
    /// The revision compared with (as given).
    pub reference: String,
    /// Plan index -> why it counts as changed (a file, or a changed dependency).
    pub changed: BTreeMap<usize, String>,
}

impl ChangedSince {
    /// Why service `i` is changed, or `None` when the diff does not touch it.
    pub fn why(&self, i: usize) -> Option<&str> {
        self.changed.get(&i).map(String::as_str)
    }

    /// `git diff --name-status -M REF...HEAD` in the repository holding `root`, applied to
    /// `plan`'s services.
    pub fn compute(
        plan: &Plan,
        root: &Path,
        reference: &str,
    ) -> Result<ChangedSince, ChangedError> {
        let top = PathBuf::from(git(root, reference, &["rev-parse", "--show-toplevel"])?.trim());
        let top = top.canonicalize().unwrap_or(top);
        let range = format!("{reference}...HEAD");
        let diff = git(
            root,
            reference,
            &["diff", "--name-status", "-M", "--no-color", "-z", &range],
        )?;
        let files = parse_name_status(&diff);
        Ok(ChangedSince::from_files(
            plan, root, &top, reference, &files,
        ))
    }

    /// The services `files` (relative to the repository's top `top`) touch.
    pub fn from_files(
        plan: &Plan,
        root: &Path,
        top: &Path,
        reference: &str,
        files: &[String],
    ) -> ChangedSince {
        let absolute = |p: &Path| {
            let p = if p.is_absolute() {
                p.to_path_buf()
            } else {
                root.join(p)
            };
            p.canonicalize().unwrap_or(p)
        };
        let mut changed = BTreeMap::new();
        for (i, s) in plan.services.iter().enumerate() {
            let mut dirs = vec![absolute(&s.service.context)];
            for value in s.service.additional_contexts.values() {
                if !value.contains("://") && !value.starts_with("service:") {
                    dirs.push(absolute(&s.service.context.join(value)));
                }
            }
            let dockerfile = absolute(&s.service.dockerfile);
            let mut ignore = dockerfile.clone().into_os_string();
            ignore.push(".dockerignore");
            let ignore = PathBuf::from(ignore);
            let hit = files.iter().find(|f| {
                let f = top.join(f);
                f == dockerfile || f == ignore || dirs.iter().any(|d| f.starts_with(d))
            });
            if let Some(f) = hit {
                changed.insert(i, format!("{f} changed since {reference}"));
            }
        }
        // A service built from a changed one is changed.
        for i in plan.dependency_order() {
            if changed.contains_key(&i) {
                continue;
            }
            if let Some(&d) = plan.graph.deps[i].iter().find(|d| changed.contains_key(d)) {
                changed.insert(
                    i,
                    format!(
                        "its dependency {} changed since {reference}",
                        plan.services[d].name
                    ),
                );
            }
        }
        ChangedSince {
            reference: reference.to_string(),
            changed,
        }
    }
}

fn git(root: &Path, reference: &str, args: &[&str]) -> Result<String, ChangedError> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(root)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(ChangedError::Spawn)?;
    if !out.status.success() {
        return Err(ChangedError::Git {
            reference: reference.to_string(),
            command: args.join(" "),
            message: crate::text::clean_line(&String::from_utf8_lossy(&out.stderr), 300),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The paths of `git diff --name-status -z` output: one for most statuses, both the old and
/// the new one for renames and copies.
fn parse_name_status(out: &str) -> Vec<String> {
    let mut files = Vec::new();
    let mut fields = out.split('\0').filter(|f| !f.is_empty());
    while let Some(status) = fields.next() {
        let paths = if status.starts_with('R') || status.starts_with('C') {
            2
        } else {
            1
        };
        for _ in 0..paths {
            if let Some(p) = fields.next() {
                files.push(p.to_string());
            }
        }
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renames_name_both_paths() {
        let out = "M\0a/Dockerfile\0R100\0old/x.txt\0b/x.txt\0D\0c/gone\0";
        assert_eq!(
            parse_name_status(out),
            ["a/Dockerfile", "old/x.txt", "b/x.txt", "c/gone"]
        );
        assert!(parse_name_status("").is_empty());
    }
}
