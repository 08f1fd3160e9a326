//! Issue #13 item 2: `--ssh` forwards an SSH agent to `RUN --mount=type=ssh`: the build runs
//! `ssh-add -l` against a test agent (ssh-agent/ssh-keygen from Debian's openssh-client, see
//! scripts/setup) and lists its key. The image gets the host's `ssh-add` and the libraries it
//! links (as `ldd` names them) on top of the test bed's offline busybox image.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use support::{Project, service, text};

/// A test agent on its own socket, stopped when dropped.
struct Agent {
    child: Child,
    socket: PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Starts an agent with a fresh ed25519 key; returns it and the key's fingerprint.
fn agent(dir: &Path) -> (Agent, String) {
    let socket = dir.join("agent.sock");
    let child = Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&socket)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("ssh-agent runs (scripts/setup installs openssh-client)");
    let agent = Agent { child, socket };
    for _ in 0..100 {
        if agent.socket.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let key = dir.join("id_test");
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "aib-ssh-test", "-f"])
        .arg(&key));
    run(Command::new("ssh-add")
        .arg(&key)
        .env("SSH_AUTH_SOCK", &agent.socket));
    let fingerprint = run(Command::new("ssh-keygen")
        .arg("-lf")
        .arg(key.with_extension("pub")));
    let fingerprint = fingerprint.split_whitespace().nth(1).unwrap().to_string();
    (agent, fingerprint)
}

/// Copies `ssh-add` and the libraries it links into `root/`, at the same paths.
fn stage_ssh_add(root: &Path) {
    let ssh_add = which("ssh-add");
    let mut files = vec![ssh_add.clone()];
    let ldd = run(Command::new("ldd").arg(&ssh_add));
    for line in ldd.lines() {
        let path = line
            .split("=>")
            .last()
            .and_then(|p| p.split_whitespace().next())
            .filter(|p| p.starts_with('/'));
        if let Some(path) = path {
            files.push(PathBuf::from(path));
        }
    }
    for file in files {
        let target = root.join(file.strip_prefix("/").unwrap());
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(&file, &target).unwrap();
    }
}

fn which(tool: &str) -> PathBuf {
    PathBuf::from(run(Command::new("sh").args(["-c", &format!("command -v {tool}")])).trim())
}

#[tokio::test]
async fn issue13_ssh_forwards_the_agent_to_run_mount_ssh() {
    let project = Project::empty().await;
    project.push_bases(&[("library/busybox", "1.36")]).await;
    stage_ssh_add(&project.path().join("svc/root"));
    project.write(
        "svc/Dockerfile",
        "FROM busybox:1.36\nCOPY root/ /\nRUN --mount=type=ssh ssh-add -l > /keys.txt\n",
    );
    let agent_dir = tempfile::tempdir().unwrap();
    let (agent, fingerprint) = agent(agent_dir.path());

    // `default` is SSH_AUTH_SOCK; `default=PATH` names the socket.
    for (backend, how) in [("buildx", "default"), ("engine", "path")] {
        let mut cmd = project.command(&["build-all", "--backend", backend, "--no-cache"]);
        cmd.args(project.common_args());
        match how {
            "default" => {
                cmd.args(["--ssh", "default"])
                    .env("SSH_AUTH_SOCK", &agent.socket);
            }
            _ => {
                cmd.arg("--ssh")
                    .arg(format!("default={}", agent.socket.display()))
                    .env_remove("SSH_AUTH_SOCK");
            }
        }
        let out = cmd.output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{backend}/{how}: {}",
            text(&out)
        );
        let report = project.report();
        assert_eq!(report["run"]["builder"], "buildx", "{backend}");
        let image = service(&report, "svc")["image"]
            .as_str()
            .unwrap()
            .to_string();
        let keys = run(Command::new("docker").args(["run", "--rm", &image, "cat", "/keys.txt"]));
        assert!(
            keys.contains(&fingerprint) && keys.contains("aib-ssh-test"),
            "{backend}/{how}: the build's agent listed {keys:?}, not {fingerprint}"
        );
        project.remove_built_images();
    }
}
