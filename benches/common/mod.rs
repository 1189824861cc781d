//! What the benchmarks that run the habitd binary share (`servers`, `scale`): their `main`,
//! finding habitd, running it with a config, and asking its HTTP API.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// A benchmark's `main`: parses its flags (`None`: print the usage), runs it, and exits 0, 1
/// (it failed, with why) or 2 (bad flags).
pub fn main_with<A>(
    name: &str,
    usage: &str,
    parse: impl FnOnce() -> Result<Option<A>, String>,
    run: impl FnOnce(&A) -> Result<(), String>,
) -> ExitCode {
    let args = match parse() {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{usage}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("{name}: {e}\n{usage}");
            return ExitCode::from(2);
        }
    };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "{name}: needs root (eBPF programs, containers): sudo -E cargo bench --bench {name}"
        );
        return ExitCode::FAILURE;
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace's habitd: the release build when there is one, else the debug build.
pub fn habitd_binary() -> Result<PathBuf, String> {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target"),
        PathBuf::from,
    );
    ["release", "debug"]
        .iter()
        .map(|profile| target.join(profile).join("habitd"))
        .find(|bin| bin.exists())
        .ok_or_else(|| {
            format!(
                "no habitd binary under {}: cargo build --release -p habitd",
                target.display()
            )
        })
}

/// A running habitd; stopped with SIGTERM when dropped (or by [`Habitd::stop`]).
pub struct Habitd(Option<Child>);

impl Habitd {
    /// Starts `binary` with `config`, its log to `log`, and waits until its `/healthz` on
    /// `port` answers 200 (probes attached).
    pub fn start(binary: &Path, config: &Path, log: &Path, port: u16) -> Result<Habitd, String> {
        let log = std::fs::File::create(log).map_err(|e| e.to_string())?;
        let child = Command::new(binary)
            .args(["run", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", binary.display()))?;
        let habitd = Habitd(Some(child));
        let deadline = Instant::now() + Duration::from_secs(60);
        while http_get(port, "/healthz").is_none_or(|(status, _)| status != 200) {
            if Instant::now() > deadline {
                return Err("habitd did not become healthy within 60 s".into());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(habitd)
    }

    pub fn pid(&self) -> u32 {
        self.0.as_ref().map_or(0, Child::id)
    }

    /// Stops it: SIGTERM, then SIGKILL after 20 s (an error: it did not stop by itself).
    pub fn stop(mut self) -> Result<(), String> {
        self.terminate()
    }

    fn terminate(&mut self) -> Result<(), String> {
        let Some(mut child) = self.0.take() else {
            return Ok(());
        };
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        Err("habitd did not stop within 20 s of SIGTERM".into())
    }
}

impl Drop for Habitd {
    fn drop(&mut self) {
        let _ = self.terminate();
    }
}

/// A plain HTTP/1.0 GET on 127.0.0.1:`port`: (status, body).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Some((status, body))
}

/// Writes a benchmark's results: `doc` as JSON to `json` (creating its directory) and the
/// table `md` beside it (same name, `.md`).
pub fn write_report(json: &Path, doc: &serde_json::Value, md: &str) -> Result<(), String> {
    if let Some(dir) = json.parent() {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    let bytes = serde_json::to_vec_pretty(doc).map_err(|e| e.to_string())?;
    std::fs::write(json, bytes).map_err(|e| e.to_string())?;
    std::fs::write(json.with_extension("md"), md).map_err(|e| e.to_string())?;
    eprintln!("written: {} and .md", json.display());
    Ok(())
}
