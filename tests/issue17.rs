//! Hostile and broken input (issue 17): no workflow command from any line we print, exit
//! codes that mean what the README says, nothing lost on SIGTERM, one broken service fails
//! alone. Runs the binary against the real daemon and a real registry where the item
//! involves them.

mod support;

/// The README's exit code table, as `(code, meaning)` rows.
fn readme_exit_codes() -> Vec<(String, String)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let start = readme.find("### Exit codes").expect("an exit code section");
    readme[start..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            (cells[0].to_string(), cells[1].to_string())
        })
        .collect()
}

#[test]
fn issue17_readme_exit_codes_are_the_binarys() {
    use ai_infra_build::Exit;
    let rows = readme_exit_codes();
    let codes: Vec<&str> = rows.iter().map(|(c, _)| c.as_str()).collect();
    let all = [
        Exit::Success,
        Exit::BuildFailed,
        Exit::Usage,
        Exit::Environment,
        Exit::ImagesMissing,
    ];
    let wanted: Vec<String> = all.iter().map(|e| e.code().to_string()).collect();
    assert_eq!(codes[..wanted.len()], wanted, "{rows:?}");
    assert_eq!(
        codes[wanted.len()],
        format!("{} / {}", Exit::Interrupted.code(), Exit::Terminated.code())
    );
    for (code, meaning) in &rows {
        assert!(
            !meaning.contains("not available yet"),
            "exit {code} still mentions a command not available yet: {meaning}"
        );
    }
    let environment = &rows[3].1;
    assert!(environment.contains("relay"), "{environment}");
}
