//! Archives of real context directories: which entries go in, their headers, the Dockerfile
//! outside the context, and the errors.

use super::*;
use proptest::prelude::*;
use std::io::Read;

// ---- real directories -------------------------------------------------------------------

fn write(root: &Path, rel: &str, content: &str) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

/// (name, type, mode, link name, content) of every entry, in archive order.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    name: String,
    kind: tar::EntryType,
    mode: u32,
    link: Option<String>,
    content: Vec<u8>,
}

fn entries(archive: &ContextArchive) -> Vec<Entry> {
    let mut tar = tar::Archive::new(archive.bytes.as_slice());
    tar.entries()
        .unwrap()
        .map(|entry| {
            let mut entry = entry.unwrap();
            let mut content = Vec::new();
            entry.read_to_end(&mut content).unwrap();
            Entry {
                name: String::from_utf8(entry.path_bytes().into_owned()).unwrap(),
                kind: entry.header().entry_type(),
                mode: entry.header().mode().unwrap(),
                link: entry
                    .link_name_bytes()
                    .map(|l| String::from_utf8(l.into_owned()).unwrap()),
                content,
            }
        })
        .collect()
}

fn names(archive: &ContextArchive) -> Vec<String> {
    entries(archive).into_iter().map(|e| e.name).collect()
}

fn content_of(archive: &ContextArchive, name: &str) -> String {
    let entry = entries(archive).into_iter().find(|e| e.name == name);
    String::from_utf8(entry.unwrap_or_else(|| panic!("no {name}")).content).unwrap()
}

#[test]
fn dockerignore_with_globs_exceptions_and_anchors_gives_the_exact_entries() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path();
    let ignore = "# build outputs and dependencies\n**/*.log\n!keep.log\nnode_modules\n/build\ndocs\n!docs/README.md\n";
    write(ctx, ".dockerignore", ignore);
    for file in [
        "Dockerfile",
        "app.py",
        "keep.log",
        "debug.log",
        "build/out.bin",
        "docs/README.md",
        "docs/guide.md",
        "node_modules/left-pad/index.js",
        "src/main.py",
        "src/trace.log",
        "src/keep.log",
        "src/build/gen.py",
        "src/node_modules/x.js",
    ] {
        write(ctx, file, file);
    }
    let archive = context_tar(ctx, &ctx.join("Dockerfile")).unwrap();
    assert_eq!(
        names(&archive),
        [
            ".dockerignore",
            "Dockerfile",
            "app.py",
            "docs/README.md", // re-included; "docs/" itself gets no entry
            "keep.log",
            "src/",
            "src/build/", // "/build" is anchored at the root
            "src/build/gen.py",
            "src/main.py",
            "src/node_modules/", // so is "node_modules"
            "src/node_modules/x.js",
        ]
    );
    assert_eq!(archive.dockerfile_in_context, "Dockerfile");
    assert_eq!(archive.files, 8);
    let expected_size = ignore.len()
        + [
            "Dockerfile",
            "app.py",
            "docs/README.md",
            "keep.log",
            "src/build/gen.py",
            "src/main.py",
            "src/node_modules/x.js",
        ]
        .iter()
        .map(|s| s.len())
        .sum::<usize>();
    assert_eq!(archive.size, expected_size as u64);
    assert_eq!(content_of(&archive, "src/main.py"), "src/main.py");
}

#[test]
fn nested_exception_reopens_an_excluded_tree_without_its_parent_entries() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path();
    write(ctx, ".dockerignore", "*\n!src/app\n");
    for file in [
        "Dockerfile",
        "README.md",
        "src/app/main.go",
        "src/app/sub/util.go",
        "src/lib/x.go",
    ] {
        write(ctx, file, "x");
    }
    let archive = context_tar(ctx, &ctx.join("Dockerfile")).unwrap();
    assert_eq!(
        names(&archive),
        [
            ".dockerignore",
            "Dockerfile",
            "src/app/",
            "src/app/main.go",
            "src/app/sub/",
            "src/app/sub/util.go"
        ]
    );
}

/// moby's walk only reopens an excluded directory when an exception's text starts with it:
/// `!node_modules/*/package.json` reopens `node_modules/` but not `node_modules/pkg/`.
#[test]
fn wildcard_exception_does_not_reopen_an_excluded_directory_like_moby() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path();
    write(ctx, "Dockerfile", "FROM scratch\n");
    write(ctx, "node_modules/pkg/package.json", "{}");
    write(ctx, "node_modules/pkg/index.js", "");
    write(ctx, "node_modules/top.json", "{}");
    write(
        ctx,
        ".dockerignore",
        "node_modules\n!node_modules/*/package.json\n!node_modules/*.json\n",
    );
    let archive = context_tar(ctx, &ctx.join("Dockerfile")).unwrap();
    assert_eq!(
        names(&archive),
        [".dockerignore", "Dockerfile", "node_modules/top.json"]
    );

    write(
        ctx,
        ".dockerignore",
        "node_modules\n!node_modules/pkg/package.json\n",
    );
    let archive = context_tar(ctx, &ctx.join("Dockerfile")).unwrap();
    assert_eq!(
        names(&archive),
        [
            ".dockerignore",
            "Dockerfile",
            "node_modules/pkg/package.json"
        ]
    );
}

#[test]
fn the_dockerfile_and_dockerignore_are_sent_even_when_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path();
    write(
        ctx,
        ".dockerignore",
        ".dockerignore\nDockerfile\nservices\n**/deploy\n",
    );
    write(ctx, "Dockerfile", "FROM scratch\n");
    write(ctx, "services/api/deploy/Dockerfile", "FROM alpine\n");
    write(ctx, "services/api/deploy/secret.env", "x");
    write(ctx, "services/api/main.go", "x");
    let archive = context_tar(ctx, &ctx.join("Dockerfile")).unwrap();
    assert_eq!(names(&archive), [".dockerignore", "Dockerfile"]);

    let nested = ctx.join("services/api/deploy/Dockerfile");
    let archive = context_tar(ctx, &nested).unwrap();
    assert_eq!(
        names(&archive),
        [".dockerignore", "services/api/deploy/Dockerfile"]
    );
    assert_eq!(
        archive.dockerfile_in_context,
        "services/api/deploy/Dockerfile"
    );

    // A name with glob characters is kept by its path, not read as a pattern.
    write(ctx, "[x].Dockerfile", "FROM scratch\n");
    write(ctx, ".dockerignore", "*\n");
    let archive = context_tar(ctx, &ctx.join("[x].Dockerfile")).unwrap();
    assert_eq!(names(&archive), [".dockerignore", "[x].Dockerfile"]);
}

#[test]
fn a_dockerfile_outside_the_context_is_added_under_a_content_derived_name() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    write(&ctx, "app.py", "print()\n");
    write(tmp.path(), "docker/api.Dockerfile", "FROM python\n");
    let dockerfile = tmp.path().join("docker/api.Dockerfile");

    let archive = context_tar(&ctx, &dockerfile).unwrap();
    let name = archive.dockerfile_in_context.clone();
    assert!(
        name.starts_with(".dockerfile.") && name.len() == ".dockerfile.".len() + 20,
        "{name}"
    );
    assert!(
        name[".dockerfile.".len()..]
            .bytes()
            .all(|b| b.is_ascii_hexdigit())
    );
    assert_eq!(
        names(&archive),
        [
            "app.py".to_string(),
            name.clone(),
            ".dockerignore".to_string()
        ]
    );
    assert_eq!(content_of(&archive, &name), "FROM python\n");
    assert_eq!(
        content_of(&archive, ".dockerignore"),
        format!(".dockerignore\n{name}\n")
    );
    let added = entries(&archive)
        .into_iter()
        .find(|e| e.name == name)
        .unwrap();
    assert_eq!((added.kind, added.mode), (tar::EntryType::Regular, 0o600));

    // An existing .dockerignore is amended in place.
    write(&ctx, ".dockerignore", "*.md\n");
    write(&ctx, "README.md", "x");
    let archive = context_tar(&ctx, &dockerfile).unwrap();
    assert_eq!(
        names(&archive),
        [
            ".dockerignore".to_string(),
            "app.py".to_string(),
            name.clone()
        ]
    );
    assert_eq!(
        content_of(&archive, ".dockerignore"),
        format!("*.md\n\n{name}\n")
    );
    assert_eq!(archive.files, 3);
}

#[test]
fn the_dockerfiles_own_ignore_file_takes_precedence() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    write(&ctx, ".dockerignore", "*.txt\n");
    write(&ctx, "Dockerfile", "FROM scratch\n");
    write(&ctx, "api.Dockerfile", "FROM scratch\n");
    write(&ctx, "api.Dockerfile.dockerignore", "*.md\n");
    write(&ctx, "a.txt", "");
    write(&ctx, "b.md", "");

    let general = context_tar(&ctx, &ctx.join("Dockerfile")).unwrap();
    assert_eq!(
        names(&general),
        [
            ".dockerignore",
            "Dockerfile",
            "api.Dockerfile",
            "api.Dockerfile.dockerignore",
            "b.md"
        ]
    );
    let specific = context_tar(&ctx, &ctx.join("api.Dockerfile")).unwrap();
    assert_eq!(
        names(&specific),
        [
            ".dockerignore",
            "Dockerfile",
            "a.txt",
            "api.Dockerfile",
            "api.Dockerfile.dockerignore"
        ]
    );
    assert_eq!(
        ignore_file_for(&ctx, &ctx.join("api.Dockerfile")),
        Some(ctx.join("api.Dockerfile.dockerignore"))
    );
    assert_eq!(
        ignore_file_for(&ctx, &ctx.join("Dockerfile")),
        Some(ctx.join(".dockerignore"))
    );

    // next to a Dockerfile outside the context, too
    write(tmp.path(), "ops/web.Dockerfile", "FROM scratch\n");
    write(tmp.path(), "ops/web.Dockerfile.dockerignore", "*\n!b.md\n");
    let outside = context_tar(&ctx, &tmp.path().join("ops/web.Dockerfile")).unwrap();
    let name = outside.dockerfile_in_context.clone();
    assert_eq!(
        names(&outside),
        [".dockerignore".to_string(), "b.md".to_string(), name]
    );
}

#[cfg(unix)]
#[test]
fn symlinks_modes_and_hard_links_are_kept() {
    use std::os::unix::fs::{PermissionsExt, symlink};
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path();
    write(ctx, "Dockerfile", "FROM scratch\n");
    write(ctx, "run.sh", "#!/bin/sh\n");
    fs::set_permissions(ctx.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    write(ctx, "secret", "s");
    fs::set_permissions(ctx.join("secret"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::hard_link(ctx.join("run.sh"), ctx.join("hard")).unwrap();
    symlink("run.sh", ctx.join("link")).unwrap();
    symlink("../outside/missing", ctx.join("dangling")).unwrap();
    write(ctx, "src/lib.rs", "");
    symlink("src", ctx.join("srclink")).unwrap();

    let archive = context_tar(ctx, &ctx.join("Dockerfile")).unwrap();
    let got: Vec<(String, tar::EntryType, Option<String>)> = entries(&archive)
        .into_iter()
        .map(|e| (e.name, e.kind, e.link))
        .collect();
    let want = [
        ("Dockerfile", tar::EntryType::Regular, None),
        (
            "dangling",
            tar::EntryType::Symlink,
            Some("../outside/missing"),
        ),
        ("hard", tar::EntryType::Regular, None),
        ("link", tar::EntryType::Symlink, Some("run.sh")),
        ("run.sh", tar::EntryType::Link, Some("hard")), // second name of the same inode
        ("secret", tar::EntryType::Regular, None),
        ("src/", tar::EntryType::Directory, None),
        ("src/lib.rs", tar::EntryType::Regular, None),
        ("srclink", tar::EntryType::Symlink, Some("src")), // not followed
    ];
    let want: Vec<(String, tar::EntryType, Option<String>)> = want
        .iter()
        .map(|(n, k, l)| (n.to_string(), *k, l.map(str::to_string)))
        .collect();
    assert_eq!(got, want);
    let mode = |name: &str| {
        entries(&archive)
            .into_iter()
            .find(|e| e.name == name)
            .unwrap()
            .mode
    };
    assert_eq!(mode("hard"), 0o755);
    assert_eq!(mode("secret"), 0o600);
    assert_eq!(content_of(&archive, "hard"), "#!/bin/sh\n");
}

#[test]
fn archives_are_byte_for_byte_reproducible() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path();
    for file in ["Dockerfile", "b/c", "a", "b/a", "z/y/x"] {
        write(ctx, file, file);
    }
    let first = context_tar(ctx, &ctx.join("Dockerfile")).unwrap();
    let second = context_tar(ctx, &ctx.join("Dockerfile")).unwrap();
    assert_eq!(first, second);
    assert_eq!(
        names(&first),
        ["Dockerfile", "a", "b/", "b/a", "b/c", "z/", "z/y/", "z/y/x"]
    );
}

#[test]
fn long_names_survive() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path();
    let long = format!("{}/{}.txt", "d".repeat(120), "f".repeat(150));
    write(ctx, "Dockerfile", "");
    write(ctx, &long, "x");
    let archive = context_tar(ctx, &ctx.join("Dockerfile")).unwrap();
    assert_eq!(
        names(&archive),
        [
            "Dockerfile".to_string(),
            format!("{}/", "d".repeat(120)),
            long
        ]
    );
}

#[test]
fn errors_name_the_path_and_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");

    let err = context_tar(&ctx, &ctx.join("Dockerfile")).unwrap_err();
    assert!(
        matches!(err, ContextError::MissingContextDir { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains(&ctx.display().to_string()));

    write(tmp.path(), "file", "");
    let err = context_tar(&tmp.path().join("file"), &ctx.join("Dockerfile")).unwrap_err();
    assert!(matches!(err, ContextError::NotADirectory { .. }), "{err:?}");

    write(&ctx, "app.py", "");
    let err = context_tar(&ctx, &ctx.join("Dockerfile")).unwrap_err();
    assert!(matches!(err, ContextError::Dockerfile { .. }), "{err:?}");
    assert!(err.to_string().contains("Dockerfile"), "{err}");
    let err = context_tar(&ctx, &ctx).unwrap_err();
    assert!(matches!(err, ContextError::Dockerfile { .. }), "{err:?}");

    write(&ctx, "Dockerfile", "FROM scratch\n");
    write(&ctx, ".dockerignore", "# comment\n\nok\n  [z-a]  \n");
    let err = context_tar(&ctx, &ctx.join("Dockerfile")).unwrap_err();
    let ContextError::BadPattern {
        line,
        ref pattern,
        ref reason,
        ..
    } = err
    else {
        panic!("{err:?}")
    };
    assert_eq!((line, pattern.as_str()), (4, "[z-a]"));
    assert_eq!(reason, &PatternReason::Regexp(RegexError::InvalidRange));
    let shown = err.to_string();
    assert!(
        shown.contains(".dockerignore:4:") && shown.contains("fix or remove"),
        "{shown}"
    );

    write(&ctx, ".dockerignore", "a\n!\n");
    let err = context_tar(&ctx, &ctx.join("Dockerfile")).unwrap_err();
    assert!(
        matches!(err, ContextError::BadPattern { line: 2, .. }),
        "{err:?}"
    );
}

#[cfg(unix)]
#[test]
fn an_unreadable_file_is_an_error_unless_excluded() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path();
    write(ctx, "Dockerfile", "");
    write(ctx, "locked", "x");
    fs::set_permissions(ctx.join("locked"), fs::Permissions::from_mode(0o000)).unwrap();
    if fs::read(ctx.join("locked")).is_ok() {
        return; // running as root: permissions are not enforced
    }
    let err = context_tar(ctx, &ctx.join("Dockerfile")).unwrap_err();
    assert!(
        matches!(err, ContextError::Unreadable { ref path, .. } if path.ends_with("locked")),
        "{err:?}"
    );
    write(ctx, ".dockerignore", "locked\n");
    assert!(context_tar(ctx, &ctx.join("Dockerfile")).is_ok());
}

// ---- properties -------------------------------------------------------------------------

/// The files of the tree the property archives (besides `.dockerignore`).
const TREE: [&str; 5] = ["Dockerfile", "a/x.txt", "a/b/y.go", "b/z", "c.txt"];

fn ignore_line() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "*",
            "**",
            "**/*",
            "a",
            "a/",
            "a/**",
            "!a/b",
            "!**/y.go",
            "b*",
            "?.txt",
            "[ab]",
            "[z-a]",
            "!",
            "#c",
            " c.txt ",
            "/a/b",
            "./a/../b",
            "Dockerfile",
            ".dockerignore",
            "*/y.*",
            "\\*",
            "!Dockerfile",
            "a/b/y.go",
        ])
        .prop_map(str::to_owned),
        r"!?[abcxyz*?/\[\]. -]{0,6}",
    ]
}

proptest! {
    // `PROPTEST_CASES` (scripts/fuzz) sets how many; 64 by default.
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(64)
    ))]

    /// Whatever the ignore file says, archiving never panics, only a bad pattern is an error,
    /// the Dockerfile and `.dockerignore` always go in, no entry is invented or repeated, and
    /// without `!` exceptions exactly the files `matches_or_parent_matches` keeps go in.
    #[test]
    fn any_ignore_file_gives_a_consistent_archive(
        lines in prop::collection::vec(ignore_line(), 0..8),
        crlf in any::<bool>(),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = tmp.path();
        for file in TREE {
            write(ctx, file, file);
        }
        let ignore = lines.join(if crlf { "\r\n" } else { "\n" });
        write(ctx, DOCKERIGNORE, &ignore);
        let archive = match context_tar(ctx, &ctx.join("Dockerfile")) {
            Ok(archive) => archive,
            Err(ContextError::BadPattern { file, .. }) => {
                prop_assert!(file.ends_with(DOCKERIGNORE));
                return Ok(());
            }
            Err(e) => return Err(TestCaseError::fail(e.to_string())),
        };
        prop_assert_eq!(&archive.dockerfile_in_context, "Dockerfile");
        let names = names(&archive);
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        prop_assert_eq!(unique.len(), names.len(), "{:?}", names);
        let dirs = ["a/", "a/b/", "b/"];
        for name in &names {
            prop_assert!(
                TREE.contains(&name.as_str()) || name == DOCKERIGNORE || dirs.contains(&name.as_str()),
                "{name}"
            );
        }
        prop_assert!(names.iter().any(|n| n == "Dockerfile"));
        prop_assert!(names.iter().any(|n| n == DOCKERIGNORE));
        let files = names.iter().filter(|n| !n.ends_with('/')).count();
        prop_assert_eq!(archive.files, files);

        let patterns: Vec<String> = read_ignore_patterns(ignore.as_bytes())
            .into_iter()
            .map(|p| p.pattern)
            .collect();
        let matcher = PatternMatcher::new(&patterns).unwrap();
        if !matcher.exclusions() {
            for file in &TREE[1..] {
                let kept = names.iter().any(|n| n == file);
                prop_assert_eq!(kept, !matcher.matches_or_parent_matches(file), "{} with {:?}", file, patterns);
            }
        }
    }
}
