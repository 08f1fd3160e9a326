//! The walk of the context directory (`Tarballer.Do` in moby/go-archive `archive.go`):
//! lexical order, ignore-file matching with the parent directory's results, excluded
//! directories skipped unless an exception or a file that must be sent lies beneath.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use super::ContextError;
use super::archive::Archive;
use super::patterns::{MatchInfo, PatternMatcher};

/// One directory being walked: its remaining entries, sorted.
struct Frame {
    abs: PathBuf,
    rel: PathBuf,
    rel_match: String,
    info: MatchInfo,
    names: std::vec::IntoIter<OsString>,
}

impl Frame {
    fn open(
        abs: PathBuf,
        rel: PathBuf,
        rel_match: String,
        info: MatchInfo,
    ) -> Result<Frame, ContextError> {
        let unreadable = |source| ContextError::Unreadable {
            path: abs.clone(),
            source,
        };
        let mut names = Vec::new();
        for entry in fs::read_dir(&abs).map_err(unreadable)? {
            names.push(entry.map_err(unreadable)?.file_name());
        }
        // filepath.WalkDir: lexical order of the names' bytes.
        names.sort_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
        Ok(Frame {
            abs,
            rel,
            rel_match,
            info,
            names: names.into_iter(),
        })
    }
}

/// The walk of `Tarballer.Do` (moby/go-archive archive.go), without recursion.
pub(super) fn walk(
    root: &Path,
    matcher: &PatternMatcher,
    forced: &[String],
    archive: &mut Archive<impl std::io::Write>,
) -> Result<(), ContextError> {
    let mut stack = vec![Frame::open(
        root.to_path_buf(),
        PathBuf::new(),
        String::new(),
        MatchInfo::default(),
    )?];
    while let Some(frame) = stack.last_mut() {
        let Some(name) = frame.names.next() else {
            stack.pop();
            continue;
        };
        let abs = frame.abs.join(&name);
        let rel = frame.rel.join(&name);
        let name_lossy = name.to_string_lossy();
        let rel_match = if frame.rel_match.is_empty() {
            name_lossy.into_owned()
        } else {
            format!("{}/{name_lossy}", frame.rel_match)
        };
        let meta = fs::symlink_metadata(&abs).map_err(|source| ContextError::Unreadable {
            path: abs.clone(),
            source,
        })?;
        let is_dir = meta.is_dir();

        let (mut skip, info) = matcher.matches_using_parent_results(&rel_match, &frame.info);
        if forced.contains(&rel_match) {
            skip = false;
        }
        if skip {
            // An excluded directory is walked (without an entry of its own) only when an
            // exception, or a file that must be sent, lies beneath it.
            if !is_dir || !must_descend(matcher, forced, &rel_match) {
                continue;
            }
        } else {
            archive.add(&abs, &rel, &rel_match, &meta)?;
            if !is_dir {
                continue;
            }
        }
        stack.push(Frame::open(abs, rel, rel_match, info)?);
    }
    Ok(())
}

fn must_descend(matcher: &PatternMatcher, forced: &[String], dir: &str) -> bool {
    let dir_slash = format!("{dir}/");
    let exception_beneath = matcher.exclusions()
        && matcher
            .patterns()
            .iter()
            .filter(|p| p.is_exclusion())
            .any(|p| format!("{}/", p.as_str()).starts_with(&dir_slash));
    exception_beneath
        || forced
            .iter()
            .any(|f| format!("{f}/").starts_with(&dir_slash))
}
