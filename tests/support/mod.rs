//! Shared set-up for integration tests: the bundled example copied to a temp dir, a real
//! registry standing in for Docker Hub (used as a mirror), and the binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use testbed::images::{ImageSpec, push_image};
use testbed::registry::Registry;

/// The Docker Hub images the example's Dockerfiles name.
pub const EXAMPLE_BASE_IMAGES: [(&str, &str); 7] = [
    ("library/python", "3.11-slim"),
    ("library/node", "20-alpine"),
    ("library/nginx", "stable"),
    ("library/ubuntu", "22.04"),
    ("library/alpine", "3.19"),
    ("library/busybox", "1.36"),
    ("library/golang", "1.22-alpine"),
];

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ai-infra-build")
}

/// A project in a temp dir, a registry with its base images, and a unique image tag.
pub struct Project {
    pub dir: tempfile::TempDir,
    pub registry: Registry,
    pub tag: String,
}

/// Copies a directory tree.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

pub fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/monorepo")
}

impl Project {
    /// The bundled example, with its base images pushed to a fresh registry.
    pub async fn example() -> Project {
        let project = Project::empty().await;
        copy_tree(&example_dir(), project.dir.path());
        project.push_bases(&EXAMPLE_BASE_IMAGES).await;
        project
    }

    /// An empty project dir and a fresh registry.
    pub async fn empty() -> Project {
        let registry = Registry::start()
            .await
            .expect("docker-registry starts (run scripts/setup)");
        Project {
            dir: tempfile::tempdir().unwrap(),
            registry,
            tag: testbed::unique_name("t"),
        }
    }

    pub async fn push_bases(&self, images: &[(&str, &str)]) {
        for (repo, tag) in images {
            push_image(&self.registry.host(), &ImageSpec::new(*repo, *tag))
                .await
                .expect("push a base image");
        }
    }

    pub fn write(&self, path: &str, content: &str) {
        let path = self.dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The flags every run gets: the registry as Docker Hub mirror, a unique tag.
    pub fn common_args(&self) -> Vec<String> {
        vec![
            "--mirror".into(),
            format!("docker.io={}", self.registry.host()),
            "--tag".into(),
            self.tag.clone(),
            "--build-arg".into(),
            format!("VERSION={}", self.tag),
        ]
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin());
        cmd.current_dir(self.path())
            .env("NO_COLOR", "1")
            .env_remove("GITHUB_ACTIONS")
            .env_remove("GITHUB_STEP_SUMMARY")
            .env_remove("GITHUB_OUTPUT");
        cmd.args(args);
        cmd
    }

    /// Runs `build-all` (or another command) with the common flags.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut cmd = self.command(args);
        cmd.args(self.common_args());
        cmd.output().expect("the binary runs")
    }

    pub fn report(&self) -> serde_json::Value {
        let path = self
            .path()
            .join(".ai-infra-build/ai-infra-build-report.json");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("no report at {}: {e}", path.display()));
        serde_json::from_str(&text).unwrap()
    }

    /// Removes the images this project's runs built (by their unique tag).
    pub fn remove_built_images(&self) {
        let out = Command::new("docker")
            .args(["images", "--format", "{{.Repository}}:{{.Tag}}"])
            .output()
            .unwrap();
        let suffix = format!(":{}", self.tag);
        let mine: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.ends_with(&suffix))
            .map(str::to_string)
            .collect();
        if !mine.is_empty() {
            let _ = Command::new("docker")
                .arg("rmi")
                .arg("-f")
                // Untagged parents may be another build's cache (the classic builder's
                // intermediate images, shared by identical Dockerfiles): leave them.
                .arg("--no-prune")
                .args(&mine)
                .output();
        }
    }
}

pub fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The report's entry for a service.
pub fn service<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no service {name} in the report"))
}
