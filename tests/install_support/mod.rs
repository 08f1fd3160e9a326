//! Support for the tests of the action's install step and of the action end to end: a fake
//! release of the real built binary (packaged by scripts/package-release, as the release
//! workflow does), and a small file server on 127.0.0.1 that can drop connections.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The release target of this machine, as dist/install.sh names it.
pub fn target() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "x86_64-unknown-linux-musl",
        "aarch64" => "aarch64-unknown-linux-musl",
        other => panic!("no release target for {other}"),
    }
}

/// The tool cache's name for this machine's architecture.
pub fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "x64",
        _ => "arm64",
    }
}

/// A release of the built binary: `assets/` holds `ai-infra-build-VERSION-TARGET.tar.gz` and
/// `SHA256SUMS`; `binary` is the (stripped) binary inside.
pub struct Release {
    pub dir: PathBuf,
    pub version: String,
    pub binary: PathBuf,
}

impl Release {
    pub fn assets(&self) -> PathBuf {
        self.dir.join("assets")
    }

    pub fn asset_name(&self) -> String {
        format!("ai-infra-build-{}-{}.tar.gz", self.version, target())
    }

    pub fn asset(&self) -> PathBuf {
        self.assets().join(self.asset_name())
    }

    pub fn sums(&self) -> String {
        std::fs::read_to_string(self.assets().join("SHA256SUMS")).expect("SHA256SUMS")
    }
}

/// Runs scripts/package-release; returns the archive's path.
pub fn package(binary: &Path, version: &str, out: &Path) -> PathBuf {
    let output = Command::new("bash")
        .arg(repo_root().join("scripts/package-release"))
        .args(["--version", version, "--target", target(), "--binary"])
        .arg(binary)
        .arg("--out")
        .arg(out)
        .env("SOURCE_DATE_EPOCH", "0")
        .output()
        .expect("bash runs scripts/package-release");
    assert!(
        output.status.success(),
        "package-release failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
}

/// The release of the binary under test, made once per binary build: kept in cargo's
/// `target/tmp` under a name derived from the binary's size and time, replacing older ones
/// (the debug binary is ~200 MB; stripped and packed it is ~30 MB and takes seconds).
pub fn release() -> &'static Release {
    static RELEASE: OnceLock<Release> = OnceLock::new();
    RELEASE.get_or_init(|| {
        let bin = Path::new(env!("CARGO_BIN_EXE_ai-infra-build"));
        let meta = std::fs::metadata(bin).expect("the built binary");
        let stamp = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let name = format!("aib-release-{}-{stamp}", meta.len());
        let dir = tmp.join(&name);
        let version = version_of(bin);
        if !dir.join("assets/SHA256SUMS").exists() {
            let staging = tempfile::tempdir_in(tmp).unwrap();
            let stripped = staging.path().join("ai-infra-build");
            std::fs::copy(bin, &stripped).unwrap();
            // Not fatal: an unstripped binary is only bigger.
            let _ = Command::new("strip").arg(&stripped).status();
            package(&stripped, &version, &staging.path().join("assets"));
            let staged = staging.keep();
            if std::fs::rename(&staged, &dir).is_err() {
                // Another test process made it first.
                let _ = std::fs::remove_dir_all(&staged);
            }
            for entry in std::fs::read_dir(tmp).unwrap().flatten() {
                let other = entry.file_name().to_string_lossy().into_owned();
                if other.starts_with("aib-release-") && other != name {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        Release {
            binary: dir.join("ai-infra-build"),
            dir,
            version,
        }
    })
}

/// `X.Y.Z` from `BIN --version` (`ai-infra-build X.Y.Z`).
pub fn version_of(bin: &Path) -> String {
    let out = Command::new(bin)
        .arg("--version")
        .output()
        .expect("--version runs");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .nth(1)
        .expect("a version")
        .to_string()
}

/// What the file server saw.
#[derive(Default)]
pub struct ServerLog {
    pub connections: AtomicUsize,
    pub requests: Mutex<Vec<String>>,
}

/// Serves the files under a directory on 127.0.0.1 (GET only, one connection at a time);
/// the first `drop_first` connections are closed after their request was read, without an
/// answer, like a proxy that loses them; a file `NAME.redirect` makes NAME a redirect to the
/// URL it holds. Stops when dropped.
pub struct FileServer {
    addr: SocketAddr,
    log: Arc<ServerLog>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FileServer {
    pub fn start(root: &Path, drop_first: usize) -> FileServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(ServerLog::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (root, thread_log, thread_stop) = (root.to_path_buf(), log.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if thread_stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let n = thread_log.connections.fetch_add(1, Ordering::SeqCst);
                serve(stream, &root, n < drop_first, &thread_log);
            }
        });
        FileServer {
            addr,
            log,
            stop,
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn connections(&self) -> usize {
        self.log.connections.load(Ordering::SeqCst)
    }

    /// `METHOD PATH` of every request, dropped ones marked `(dropped)`.
    pub fn requests(&self) -> Vec<String> {
        self.log.requests.lock().unwrap().clone()
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(mut stream: TcpStream, root: &Path, drop_it: bool, log: &ServerLog) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(30)));
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&head);
    let mut parts = text.lines().next().unwrap_or_default().split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or_default().to_string(),
        parts.next().unwrap_or_default().to_string(),
    );
    if drop_it {
        log.requests
            .lock()
            .unwrap()
            .push(format!("{method} {path} (dropped)"));
        return;
    }
    log.requests
        .lock()
        .unwrap()
        .push(format!("{method} {path}"));
    let rel = path
        .split('?')
        .next()
        .unwrap_or_default()
        .trim_start_matches('/');
    let file = root.join(rel);
    let safe = method == "GET" && !rel.split('/').any(|c| c == "..");
    // `NAME.redirect` holding a URL answers NAME with a redirect there.
    let redirect = Path::new(&format!("{}.redirect", file.display())).to_path_buf();
    if safe && redirect.is_file() {
        let to = std::fs::read_to_string(&redirect).unwrap_or_default();
        let _ = stream.write_all(
            format!(
                "HTTP/1.1 302 Found\r\nLocation: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                to.trim()
            )
            .as_bytes(),
        );
        return;
    }
    let body = if safe && file.is_file() {
        std::fs::read(&file).ok()
    } else {
        None
    };
    let _ = match body {
        Some(body) => stream
            .write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            )
            .and_then(|()| stream.write_all(&body)),
        None => stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 10\r\nConnection: close\r\n\r\nnot found\n"),
    };
}

/// Serves the files under a directory over https on 127.0.0.1 (python3's http.server with a
/// certificate made for it by openssl): what install.sh downloads from when it may use https
/// only. curl trusts the certificate through `CURL_CA_BUNDLE` (see [`HttpsServer::ca`]).
/// Stops when dropped.
pub struct HttpsServer {
    dir: tempfile::TempDir,
    child: std::process::Child,
    port: u16,
}

impl HttpsServer {
    pub fn start(root: &Path) -> HttpsServer {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let out = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args(["-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"])
            .args(["-addext", "subjectAltName=IP:127.0.0.1"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl is needed for the https test server");
        assert!(
            out.status.success(),
            "openssl req: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let script = r#"
import functools, http.server, ssl, sys
root, cert, key = sys.argv[1:4]
class Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        sys.stderr.write("%s %s\n" % (self.command, self.path))
        sys.stderr.flush()
server = http.server.HTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=root))
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;
        let log = std::fs::File::create(dir.path().join("requests.log")).unwrap();
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(root)
            .arg(&cert)
            .arg(&key)
            .stdout(std::process::Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("python3 runs the https test server");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let port = line.trim().parse().unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("the https test server printed no port: {line:?}")
        });
        HttpsServer { dir, child, port }
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The certificate to trust (for `CURL_CA_BUNDLE`).
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    /// `METHOD PATH` of every request answered.
    pub fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("requests.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
