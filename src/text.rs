//! Small text helpers shared by the report's views: durations and sizes for people, log lines
//! made safe to show (no terminal escapes, no carriage-return overdraws, bounded length),
//! and Markdown/HTML escaping that keeps untrusted text inside the cell or block it is put in.

use std::fmt::Write as _;

/// `850ms`, `12.3s`, `3m 05s`, `1h 02m`.
pub fn duration(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{}m {:02}s", ms / 60_000, (ms % 60_000) / 1000)
    } else {
        format!("{}h {:02}m", ms / 3_600_000, (ms % 3_600_000) / 60_000)
    }
}

/// Bytes in decimal units, as `docker images` shows them: `512 B`, `12.4 MB`, `1.23 GB`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1000.0;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if value >= 100.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else if value >= 10.0 {
        format!("{value:.1} {}", UNITS[unit])
    } else {
        format!("{value:.2} {}", UNITS[unit])
    }
}

/// One log line as it should be shown: what a terminal would finally show after carriage
/// returns (the text after the last `\r`), without ANSI escape sequences or other control
/// characters (tabs become spaces), cut to `max_chars` characters with `…`.
pub fn clean_line(line: &str, max_chars: usize) -> String {
    let line = line.strip_suffix('\n').unwrap_or(line);
    let line = line.strip_suffix('\r').unwrap_or(line);
    let visible = line.rsplit('\r').next().unwrap_or(line);
    let mut out = String::with_capacity(visible.len().min(max_chars + 4));
    let mut chars = visible.chars().peekable();
    let mut count = 0;
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI `ESC [ ... final` or OSC `ESC ] ... BEL|ESC \`; anything else: drop ESC + one.
            match chars.next() {
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                Some(']') => {
                    while let Some(c) = chars.next() {
                        if c == '\u{7}' {
                            break;
                        }
                        if c == '\u{1b}' {
                            chars.next();
                            break;
                        }
                    }
                }
                _ => {}
            }
            continue;
        }
        let c = match c {
            '\t' => ' ',
            c if c.is_control() => continue,
            // Unicode line and paragraph separators end a line for some renderers.
            '\u{2028}' | '\u{2029}' => ' ',
            c => c,
        };
        if count == max_chars {
            out.push('…');
            break;
        }
        out.push(c);
        count += 1;
    }
    out
}

/// Cuts `text` to at most `max_chars` characters, marking the cut with `…`.
pub fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// Text for HTML: `&`, `<`, `>`, `"` and `'` as entities.
pub fn html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Untrusted text for a GitHub-flavoured Markdown table cell (or any inline position): one
/// line, HTML special characters as entities, and every character that could start inline
/// Markdown or GitHub syntax (emphasis, code, links, math, mentions, issue references,
/// strikethrough) escaped with a backslash. `|` is escaped too, which GFM requires even inside code spans.
pub fn cell(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\n' | '\r' | '\u{2028}' | '\u{2029}' | '\t' => out.push(' '),
            '\\' | '`' | '*' | '_' | '[' | ']' | '|' | '~' | '$' | '@' | '#' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// A fenced code block holding `lines` verbatim: the fence is made of more backticks than the
/// longest backtick run in the content (at least three), so no line can close it.
pub fn code_block(info: &str, lines: &[String]) -> String {
    let longest = lines.iter().map(|l| longest_run(l, '`')).max().unwrap_or(0);
    let fence = "`".repeat((longest + 1).max(3));
    let mut out = String::new();
    let _ = writeln!(out, "{fence}{info}");
    for line in lines {
        out.push_str(line);
        out.push('\n');
    }
    let _ = writeln!(out, "{fence}");
    out
}

fn longest_run(text: &str, ch: char) -> usize {
    let (mut best, mut current) = (0, 0);
    for c in text.chars() {
        if c == ch {
            current += 1;
            best = best.max(current);
        } else {
            current = 0;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(0), "0ms");
        assert_eq!(duration(999), "999ms");
        assert_eq!(duration(1000), "1.0s");
        assert_eq!(duration(12_345), "12.3s");
        assert_eq!(duration(185_000), "3m 05s");
        assert_eq!(duration(3_720_000), "1h 02m");
    }

    #[test]
    fn sizes_use_decimal_units_like_docker() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(999), "999 B");
        assert_eq!(size(1000), "1.00 kB");
        assert_eq!(size(12_400_000), "12.4 MB");
        assert_eq!(size(215_300_000), "215 MB");
        assert_eq!(size(1_230_000_000), "1.23 GB");
    }

    #[test]
    fn clean_line_drops_escapes_and_overdrawn_text() {
        assert_eq!(clean_line("\u{1b}[31mred\u{1b}[0m text", 100), "red text");
        assert_eq!(clean_line("10%\r50%\r100% done", 100), "100% done");
        assert_eq!(clean_line("a\tb\u{0}c\u{7}", 100), "a bc");
        assert_eq!(clean_line("line\r\n", 100), "line");
        assert_eq!(clean_line("\u{1b}]0;title\u{7}x", 100), "x");
        assert_eq!(clean_line("abcdef", 3), "abc…");
        assert_eq!(clean_line("äöü", 3), "äöü");
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("äöüß", 2), "äö…");
        assert_eq!(truncate("abc", 3), "abc");
    }

    #[test]
    fn html_escapes_all_specials() {
        assert_eq!(
            html(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn cell_is_one_line_and_escapes_markdown() {
        assert_eq!(cell("a|b"), r"a\|b");
        assert_eq!(cell("`x`"), r"\`x\`");
        assert_eq!(cell("<b>&"), "&lt;b&gt;&amp;");
        assert_eq!(cell("one\ntwo\r\nthree"), "one two  three");
        assert_eq!(cell("@team $x$"), r"\@team \$x\$");
    }

    #[test]
    fn code_block_fence_outgrows_backticks_in_content() {
        let block = code_block("text", &["plain".into()]);
        assert!(block.starts_with("```text\n"));
        let block = code_block("", &["has ```` four".into(), "`".into()]);
        assert!(block.starts_with("`````\n"), "{block}");
        assert!(block.ends_with("\n`````\n"));
    }
}
