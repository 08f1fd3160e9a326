//! GitHub Actions workflow commands (`::name key=value,...::data`), escaped exactly as the
//! runner unescapes them, and the few commands we use: annotations, groups, masks, debug
//! lines, and `stop-commands` around raw build output so a build can never inject commands.
//!
//! Escaping follows the runner (`ActionCommand.cs`) and `@actions/core`:
//! data: `%` → `%25`, `\r` → `%0D`, `\n` → `%0A`; properties additionally `:` → `%3A` and
//! `,` → `%2C`.

/// Escapes a command's data (the part after the second `::`).
pub fn escape_data(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '%' => out.push_str("%25"),
            '\r' => out.push_str("%0D"),
            '\n' => out.push_str("%0A"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes a property value (`file=`, `title=`, ...).
pub fn escape_property(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '%' => out.push_str("%25"),
            '\r' => out.push_str("%0D"),
            '\n' => out.push_str("%0A"),
            ':' => out.push_str("%3A"),
            ',' => out.push_str("%2C"),
            c => out.push(c),
        }
    }
    out
}

/// One workflow command line (without the trailing newline). `name` and the property keys
/// are ours (fixed identifiers); property values and data are escaped. Properties with an
/// empty value are left out, like `@actions/core` does.
pub fn command(name: &str, properties: &[(&str, &str)], data: &str) -> String {
    let props: Vec<String> = properties
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", escape_property(v)))
        .collect();
    if props.is_empty() {
        format!("::{name}::{}", escape_data(data))
    } else {
        format!("::{name} {}::{}", props.join(","), escape_data(data))
    }
}

/// `::add-mask::` lines for secrets, one per non-empty line of each secret: the runner masks
/// log output line by line, so a multi-line secret (a key file, a JSON credential) is only
/// hidden if each of its lines is announced. Print these before anything else.
pub fn add_masks(secrets: &[String]) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for secret in secrets {
        for line in secret.split('\n') {
            let line = line.trim_end_matches('\r');
            if !line.trim().is_empty() && seen.insert(line.to_string()) {
                out.push(command("add-mask", &[], line));
            }
        }
    }
    out
}

/// A `::debug::` line.
pub fn debug(message: &str) -> String {
    command("debug", &[], message)
}

/// A token for `::stop-commands::` that does not occur in `content`, in any case (the
/// runner compares the resuming command's name with the token ignoring case).
pub fn token_not_in(content: &str) -> String {
    let content = content.to_ascii_lowercase();
    loop {
        let token = format!(
            "aib-{:016x}{:016x}",
            rand::random::<u64>(),
            rand::random::<u64>()
        );
        if !content.contains(&token) {
            return token;
        }
    }
}

/// `content` (raw, untrusted lines) between `::stop-commands::TOKEN` and `::TOKEN::`: the
/// runner treats nothing in between as a command. Ends with a newline.
pub fn raw_block(content: &str) -> String {
    let token = token_not_in(content);
    let mut out = format!("::stop-commands::{token}\n");
    out.push_str(content);
    if !content.is_empty() && !content.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&format!("::{token}::\n"));
    out
}

/// A collapsible log group titled `title` holding raw `content` (wrapped in stop-commands).
pub fn group(title: &str, content: &str) -> String {
    let mut out = command("group", &[], title);
    out.push('\n');
    out.push_str(&raw_block(content));
    out.push_str("::endgroup::\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A parsed workflow command: name, properties, data.
    type Parsed = (String, Vec<(String, String)>, String);

    /// The runner's parser (`ActionCommand.TryParseV2`) and unescaping, ported: the test
    /// oracle for our escaping.
    fn parse(line: &str) -> Option<Parsed> {
        let line = line.trim_start();
        let rest = line.strip_prefix("::")?;
        let end = rest.find("::")?;
        let (info, data) = (&rest[..end], &rest[end + 2..]);
        let (name, props) = match info.find(' ') {
            Some(i) => (&info[..i], &info[i + 1..]),
            None => (info, ""),
        };
        let mut properties = Vec::new();
        for prop in props.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = prop.split_once('=')?;
            properties.push((k.to_string(), unescape_property(v)));
        }
        Some((name.to_string(), properties, unescape_data(data)))
    }

    fn unescape_data(s: &str) -> String {
        s.replace("%0D", "\r")
            .replace("%0A", "\n")
            .replace("%25", "%")
    }

    fn unescape_property(s: &str) -> String {
        s.replace("%0D", "\r")
            .replace("%0A", "\n")
            .replace("%3A", ":")
            .replace("%2C", ",")
            .replace("%25", "%")
    }

    #[test]
    fn data_escaping_matches_the_runner() {
        assert_eq!(escape_data("100% a:b,c\r\nd"), "100%25 a:b,c%0D%0Ad");
        assert_eq!(escape_data("::error::x"), "::error::x");
        assert_eq!(escape_data("%0A"), "%250A");
    }

    #[test]
    fn property_escaping_matches_the_runner() {
        assert_eq!(escape_property("a:b,c%d\ne\r"), "a%3Ab%2Cc%25d%0Ae%0D");
        assert_eq!(escape_property("::"), "%3A%3A");
    }

    #[test]
    fn command_round_trips_through_the_runner_parser() {
        let nasty = "svc::a,b%c\nline2\r:=%0A%3A%2C%25 ::error::pwned";
        let line = command(
            "error",
            &[("file", nasty), ("line", "3"), ("title", nasty)],
            nasty,
        );
        assert!(!line.contains('\n') && !line.contains('\r'));
        let (name, props, data) = parse(&line).unwrap();
        assert_eq!(name, "error");
        assert_eq!(
            props,
            vec![
                ("file".to_string(), nasty.to_string()),
                ("line".to_string(), "3".to_string()),
                ("title".to_string(), nasty.to_string())
            ]
        );
        assert_eq!(data, nasty);
    }

    #[test]
    fn empty_properties_are_left_out() {
        assert_eq!(
            command("warning", &[("file", ""), ("title", "t")], "m"),
            "::warning title=t::m"
        );
        assert_eq!(command("notice", &[], "m"), "::notice::m");
    }

    #[test]
    fn masks_are_announced_line_by_line_once() {
        let secrets = vec![
            "-----BEGIN KEY-----\r\nab%cd\n\n-----END KEY-----".to_string(),
            "tok".into(),
            "tok".into(),
            "".into(),
        ];
        assert_eq!(
            add_masks(&secrets),
            vec![
                "::add-mask::-----BEGIN KEY-----",
                "::add-mask::ab%25cd",
                "::add-mask::-----END KEY-----",
                "::add-mask::tok"
            ]
        );
    }

    #[test]
    fn raw_block_uses_a_token_absent_from_the_content() {
        let content = "::error::pwned\n::set-output name=x::y\n";
        let block = raw_block(content);
        let first = block.lines().next().unwrap();
        let token = first.strip_prefix("::stop-commands::").unwrap();
        assert!(token.len() >= 32);
        assert!(!content.contains(token));
        assert_eq!(block.lines().last().unwrap(), format!("::{token}::"));
        assert!(block.contains(content));
        // Two blocks never share a token.
        assert_ne!(raw_block(content).lines().next(), Some(first));
    }

    #[test]
    fn group_wraps_raw_content_and_closes_after_resuming() {
        let out = group("build (a%b)\nx", "line\n::endgroup::");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "::group::build (a%25b)%0Ax");
        assert!(lines[1].starts_with("::stop-commands::"));
        assert_eq!(lines[2..4], ["line", "::endgroup::"]);
        assert!(lines[4].starts_with("::aib-"));
        assert_eq!(lines[5], "::endgroup::");
        assert_eq!(lines.len(), 6);
    }
}
