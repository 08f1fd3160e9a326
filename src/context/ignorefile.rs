//! Reading an ignore file (buildkit `dockerignore.ReadAll`, now moby/patternmatcher
//! `ignorefile`): BOM, comments, trimming, `!` exceptions, Go's `path.Clean`.

/// One pattern of an ignore file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnorePattern {
    /// 1-based line it was read from.
    pub line: usize,
    /// The pattern as `ReadAll` returns it: trimmed, cleaned, leading `/` removed, `!` kept.
    pub pattern: String,
}

/// Reads an ignore file's patterns, as `dockerignore.ReadAll` does. Never fails: a bad
/// pattern is reported by [`super::PatternMatcher::new`]. Invalid UTF-8 is read lossily.
pub fn read_ignore_patterns(content: &[u8]) -> Vec<IgnorePattern> {
    let mut lines: Vec<&[u8]> = content.split(|b| *b == b'\n').collect();
    if content.is_empty() || content.ends_with(b"\n") {
        lines.pop();
    }
    let mut patterns = Vec::new();
    for (index, line) in lines.into_iter().enumerate() {
        // bufio.ScanLines drops one trailing \r.
        let mut line = line.strip_suffix(b"\r").unwrap_or(line);
        if index == 0 {
            line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        }
        let text = String::from_utf8_lossy(line);
        // Comments are recognised before trimming: "  # x" is a pattern.
        if text.starts_with('#') {
            continue;
        }
        let trimmed = text.trim();
        if trimmed.is_empty() {
            continue;
        }
        let (invert, rest) = match trimmed.strip_prefix('!') {
            Some(rest) => (true, rest.trim()),
            None => (false, trimmed),
        };
        let mut pattern = String::new();
        if !rest.is_empty() {
            let cleaned = clean(rest);
            pattern = match cleaned.strip_prefix('/') {
                Some(stripped) if cleaned.len() > 1 => stripped.to_string(),
                _ => cleaned,
            };
        }
        if invert {
            pattern.insert(0, '!');
        }
        patterns.push(IgnorePattern {
            line: index + 1,
            pattern,
        });
    }
    patterns
}

/// Go's `path.Clean` (what `filepath.Clean` does on Unix).
pub(super) fn clean(path: &str) -> String {
    if path.is_empty() {
        return ".".to_string();
    }
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|last| *last != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    if rooted {
        format!("/{joined}")
    } else if joined.is_empty() {
        ".".to_string()
    } else {
        joined
    }
}

/// Go's `filepath.Dir` on Unix.
pub(super) fn dir(path: &str) -> String {
    match path.rfind('/') {
        Some(i) => clean(path.get(..=i).unwrap_or(path)),
        None => ".".to_string(),
    }
}
