//! Runs the stand-in tenant (`examples/standin.rs`) as a child process for one test.
//!
//! ```ignore
//! mod common;
//! use common::standin::Standin;
//!
//! let standin = Standin::start("my-client", &jwks_json);
//! // POST assertions to standin.token_endpoint(), call standin.url + "/api/v1/users/me".
//! ```
//!
//! The stand-in is built once per test binary with `cargo build --example standin`, because
//! `cargo test --test NAME` does not build examples. Set `STANDIN_BIN` to a built stand-in to
//! skip that step.

// Each test binary that declares `mod common;` uses a different part of this module.
#![allow(dead_code)]

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long the stand-in may take to write its port file.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// A running stand-in; killed when dropped.
pub struct Standin {
    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    child: Child,
    /// Holds the JWKS, the port file and what the stand-in wrote on stdout and stderr.
    dir: TempDir,
}

impl Standin {
    /// Starts a stand-in that accepts `client_id` and the keys of `jwks_json`, and panics with
    /// the reason if it cannot.
    pub fn start(client_id: &str, jwks_json: &str) -> Standin {
        Self::start_with(client_id, jwks_json, &[])
    }

    /// Like [`Standin::start`], with more command-line arguments, e.g.
    /// `&["--access-token-lifetime", "0"]`.
    pub fn start_with(client_id: &str, jwks_json: &str, args: &[&str]) -> Standin {
        match Self::try_start_with(client_id, jwks_json, args) {
            Ok(standin) => standin,
            Err(e) => panic!("cannot start the stand-in: {e}"),
        }
    }

    pub fn try_start_with(client_id: &str, jwks_json: &str, args: &[&str]) -> io::Result<Standin> {
        let binary = binary()?;
        let dir = tempfile::tempdir()?;
        let jwks = dir.path().join("jwks.json");
        fs::write(&jwks, jwks_json)?;
        let port_file = dir.path().join("url");

        let child = Command::new(binary)
            .arg("--client-id")
            .arg(client_id)
            .arg("--jwks")
            .arg(&jwks)
            .arg("--port-file")
            .arg(&port_file)
            .args(args)
            .stdin(Stdio::null())
            .stdout(File::create(dir.path().join("stdout"))?)
            .stderr(File::create(dir.path().join("stderr"))?)
            .spawn()?;

        // From here on, Drop kills the child whatever goes wrong.
        let mut standin = Standin {
            url: String::new(),
            child,
            dir,
        };
        standin.url = standin.wait_for_port_file(&port_file)?;
        Ok(standin)
    }

    /// The `aud` the stand-in accepts, and where to POST assertions.
    pub fn token_endpoint(&self) -> String {
        format!("{}/oauth/token", self.url)
    }

    /// What the stand-in printed on stderr so far: one line per request.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }

    /// What the stand-in printed on stdout so far: its base URL.
    pub fn stdout(&self) -> String {
        fs::read_to_string(self.dir.path().join("stdout")).unwrap_or_default()
    }

    /// Waits for the stand-in to exit on its own, e.g. after `POST /shutdown`.
    pub fn wait_for_exit(&mut self, timeout: Duration) -> io::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Ok(Some(status));
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(None)
    }

    /// The stand-in renames the port file into place, so any content seen is complete.
    fn wait_for_port_file(&mut self, port_file: &Path) -> io::Result<String> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Ok(text) = fs::read_to_string(port_file) {
                return Ok(text.trim_end().to_owned());
            }
            if let Some(status) = self.child.try_wait()? {
                let why = format!("stand-in exited with {status}:\n{}", self.log());
                return Err(io::Error::other(why));
            }
            if Instant::now() > deadline {
                let why = format!("no port file after {STARTUP_TIMEOUT:?}:\n{}", self.log());
                return Err(io::Error::other(why));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Standin {
    fn drop(&mut self) {
        // Already gone (e.g. after /shutdown) is fine: nothing is left to stop.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!("stand-in log ({}):\n{}", self.url, self.log());
        }
    }
}

/// Prefixes of the variables cargo sets for a test process, as opposed to for cargo itself.
const PACKAGE_VARIABLES: [&str; 8] = [
    "CARGO_PKG_",
    "CARGO_MANIFEST_",
    "CARGO_CRATE_NAME",
    "CARGO_BIN_",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_TARGET_TMPDIR",
    "CARGO_RUSTC_CURRENT_DIR",
    "OUT_DIR",
];

/// The stand-in executable: `STANDIN_BIN`, or built once per test binary.
pub fn binary() -> io::Result<PathBuf> {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = BINARY.get_or_init(|| match std::env::var_os("STANDIN_BIN") {
        Some(path) => Ok(PathBuf::from(path)),
        None => build().map_err(|e| e.to_string()),
    });
    built.clone().map_err(io::Error::other)
}

/// Runs `cargo build --example standin` and takes the executable's path from cargo's own
/// report, so the target directory and profile layout need no guessing.
fn build() -> io::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let mut command = Command::new(cargo);
    // Cargo describes the package under test in these variables. Build scripts such as ring's
    // rerun when they change, so passing them on would rebuild crates on every test run.
    for (name, _) in std::env::vars_os() {
        let name_text = name.to_string_lossy();
        if PACKAGE_VARIABLES
            .iter()
            .any(|prefix| name_text.starts_with(prefix))
        {
            command.env_remove(&name);
        }
    }
    let mut child = command
        .args([
            "build",
            "--example",
            "standin",
            "--message-format=json-render-diagnostics",
            "--quiet",
        ])
        .arg("--manifest-path")
        .arg(manifest)
        .stdout(Stdio::piped())
        .spawn()?;

    let mut executable = None;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| io::Error::other("no cargo stdout"))?;
    for line in BufReader::new(stdout).lines() {
        let message: serde_json::Value = serde_json::from_str(&line?).unwrap_or_default();
        let is_standin = message["target"]["name"] == "standin";
        if let (true, Some(path)) = (is_standin, message["executable"].as_str()) {
            executable = Some(PathBuf::from(path));
        }
    }

    let status = child.wait()?;
    match executable {
        Some(path) if status.success() => Ok(path),
        _ => Err(io::Error::other(format!(
            "cargo build --example standin: {status}"
        ))),
    }
}
