//! The built `habitctl` binary against a tiny fake habitd API.
//!
//! The fake is a std `TcpListener` on 127.0.0.1:0 served from a thread: it records every
//! request (method, path, headers, body) and answers with canned JSON chosen by a closure, so
//! each test checks both what habitctl sent and what it printed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::thread;

use habit_profiles::api::{LearningView, ModelLearningView, WorkloadView};
use habit_profiles::baseline::Baseline;
use habit_profiles::observation::Observation;
use habit_profiles::profile::{Profile, ProfileConfig, Provenance};
use habit_profiles::store::{ForcedMode, WorkloadState};
use habit_profiles::workload::WorkloadKey;

const NGINX: &str = "docker.io/library/nginx:1.25";
const NGINX_SEGMENT: &str = "docker.io%2Flibrary%2Fnginx:1.25";
const TOKEN: &str = "s3cret-token";

/// One request as the fake server received it.
#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn authorized(&self) -> bool {
        self.header("authorization") == Some(&format!("Bearer {TOKEN}"))
    }
}

type Responder = dyn Fn(&Request) -> (u16, String) + Send + Sync;

/// A fake habitd API. The serving thread lives until the test process ends.
struct FakeApi {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl FakeApi {
    fn start(respond: impl Fn(&Request) -> (u16, String) + Send + Sync + 'static) -> FakeApi {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&requests);
        let respond: Arc<Responder> = Arc::new(respond);
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                serve_one(stream, respond.as_ref(), &recorded);
            }
        });
        FakeApi { addr, requests }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// Runs habitctl against this server.
    fn habitctl(&self, args: &[&str]) -> Output {
        habitctl(&[&["--api", &self.url()], args].concat())
    }
}

/// Reads one request, records it (before answering, so that it is recorded by the time the
/// client has its answer), and answers it.
fn serve_one(stream: TcpStream, respond: &Responder, recorded: &Mutex<Vec<Request>>) -> Option<()> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let mut request = Request {
        method,
        path,
        headers,
        body: Vec::new(),
    };
    assert_eq!(
        request.header("transfer-encoding"),
        None,
        "the fake server reads Content-Length bodies only"
    );
    let length: usize = request
        .header("content-length")
        .map_or(0, |v| v.parse().unwrap());
    request.body = vec![0; length];
    reader.read_exact(&mut request.body).ok()?;
    let (status, body) = respond(&request);
    recorded.lock().unwrap().push(request);
    let mut stream = stream;
    let answer = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(answer.as_bytes()).ok()?;
    stream.flush().ok()
}

/// Runs the built binary with a clean environment for its own variables.
fn habitctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_habitctl"))
        .args(args)
        .env_remove("HABITD_API")
        .env_remove("HABITD_TOKEN_FILE")
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

fn workloads_json() -> serde_json::Value {
    serde_json::json!([
        {
            "key": NGINX,
            "state": "learning",
            "partial": false,
            "mode_forced": null,
            "learning": {
                "started_at": 1_700_000_000_000u64,
                "elapsed_secs": 3600.0,
                "last_new_item_at": 1_700_000_003_000u64,
                "secs_since_new_item": 125.5,
                "progress": 0.42
            },
            "items": 137,
            "profile_sizes": {"exec": 3, "process_edge": 2, "args": 4, "file": 60, "listen": 1,
                              "inbound": 2, "outbound": 1, "syscall": 62, "privileged": 2},
            "alerts": 0,
            "unstable_reason": null,
            "baseline_created": null,
            "held": 3
        },
        {
            "key": "host:ssh.service",
            "state": "stable",
            "partial": true,
            "mode_forced": "detect",
            "learning": {
                "started_at": 1_699_000_000_000u64,
                "elapsed_secs": 90000.0,
                "last_new_item_at": null,
                "secs_since_new_item": null,
                "progress": 1.0
            },
            "items": 12,
            "profile_sizes": {"exec": 1, "process_edge": 0, "args": 1, "file": 5, "listen": 1,
                              "inbound": 0, "outbound": 0, "syscall": 4, "privileged": 0},
            "alerts": 5,
            "unstable_reason": null,
            "baseline_created": 1_699_090_000_000u64,
            "held": 0
        }
    ])
}

fn workload_after(mode: &str) -> String {
    serde_json::json!({
        "key": NGINX, "state": if mode == "detect" { "stable" } else { "learning" },
        "partial": mode == "detect", "mode_forced": mode,
        "learning": {"started_at": 0, "elapsed_secs": 1.0, "last_new_item_at": null,
                     "secs_since_new_item": null, "progress": 0.1},
        "items": 1, "profile_sizes": {}, "alerts": 0, "unstable_reason": null,
        "baseline_created": null
    })
    .to_string()
}

/// The fake habitd: the API routes, the token checked on state changes.
fn fake_habitd(baseline: Option<String>) -> FakeApi {
    FakeApi::start(move |request| {
        let path = request.path.as_str();
        let unauthorized = (
            401,
            r#"{"error": "missing or wrong bearer token"}"#.to_owned(),
        );
        match (request.method.as_str(), path) {
            ("GET", "/api/v1/workloads") => (200, workloads_json().to_string()),
            ("POST", p) if p.starts_with("/api/v1/workloads/") && p.ends_with("/mode") => {
                if !request.authorized() {
                    return unauthorized;
                }
                if p != format!("/api/v1/workloads/{NGINX_SEGMENT}/mode") {
                    return (404, r#"{"error": "no such workload"}"#.to_owned());
                }
                let body: serde_json::Value = match serde_json::from_slice(&request.body) {
                    Ok(body) => body,
                    Err(_) => return (400, r#"{"error": "body is not JSON"}"#.to_owned()),
                };
                match body["mode"].as_str() {
                    Some(mode @ ("learn" | "detect" | "relearn")) => (200, workload_after(mode)),
                    _ => (400, r#"{"error": "unknown mode"}"#.to_owned()),
                }
            }
            ("GET", p) if p == format!("/api/v1/baselines/{NGINX_SEGMENT}") => match &baseline {
                Some(file) => (200, file.clone()),
                None => (
                    404,
                    r#"{"error": "no baseline for this workload"}"#.to_owned(),
                ),
            },
            ("PUT", p) if p == format!("/api/v1/baselines/{NGINX_SEGMENT}") => {
                if !request.authorized() {
                    return unauthorized;
                }
                (
                    200,
                    r#"{"workload": "docker.io/library/nginx:1.25", "items": 2}"#.to_owned(),
                )
            }
            _ => (404, r#"{"error": "no such route"}"#.to_owned()),
        }
    })
}

fn token_file(dir: &Path) -> String {
    let path = dir.join("token");
    std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
    path.display().to_string()
}

fn baseline_json(execs: &[&str]) -> String {
    let mut p = Profile::new(
        WorkloadKey::from_raw(NGINX),
        "node-a",
        0,
        ProfileConfig::default(),
    );
    let here = Provenance::new("node-a", Some("c1"));
    for (i, exe) in execs.iter().enumerate() {
        let _ = p.observe(&Observation::exec(exe), i as u64 * 60_000, &here);
    }
    Baseline::freeze(&p, 600_000, false)
        .to_json_pretty()
        .unwrap()
}

#[test]
fn workloads_prints_an_aligned_table() {
    let api = fake_habitd(None);
    let out = api.habitctl(&["workloads"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    let header = lines[0];
    for column in [
        "KEY",
        "STATE",
        "PROGRESS",
        "ITEMS",
        "HELD",
        "SINCE NEW ITEM",
        "ALERTS",
    ] {
        assert!(header.contains(column), "{text}");
    }
    // Sorted by key; numbers right-aligned under their headers.
    assert!(
        lines[1].starts_with("docker.io/library/nginx:1.25  learning "),
        "{text}"
    );
    assert!(lines[2].starts_with("host:ssh.service "), "{text}");
    assert!(lines[1].contains(" 42% "), "{text}");
    assert!(lines[1].contains(" 137 "), "{text}");
    assert!(lines[1].contains(" 2m05s "), "{text}");
    assert!(
        lines[2].contains("stable (partial, forced detect)"),
        "{text}"
    );
    assert!(lines[2].contains(" 100% "), "{text}");
    assert!(lines[2].ends_with(" 5"), "{text}");
    assert!(lines.iter().all(|l| l.len() == header.len()), "{text}");

    let requests = api.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, "GET");
    assert_eq!(requests[0].path, "/api/v1/workloads");
    assert_eq!(requests[0].header("authorization"), None);
}

/// What habitd serves, serialised by the type it serves it with (the API's, shared with
/// habitctl): habitctl reads every field back, `held` included, and shows it.
#[test]
fn what_habitd_serves_habitctl_reads() {
    let served = vec![WorkloadView {
        key: WorkloadKey::from_raw(NGINX),
        state: WorkloadState::Unstable,
        partial: true,
        mode_forced: Some(ForcedMode::Learn),
        learning: LearningView {
            started_at: 1_700_000_000_000,
            elapsed_secs: 7_200.0,
            last_new_item_at: Some(1_700_000_007_000),
            secs_since_new_item: Some(61.0),
            progress: 0.25,
            models: Some(ModelLearningView {
                rate_intervals: 12,
                sequence_grams: 340,
                sequence_traces: 5,
            }),
        },
        items: 4096,
        profile_sizes: [("file".to_owned(), 4096)].into_iter().collect(),
        alerts: 9,
        unstable_reason: Some("file reached its limit of 4096 items".into()),
        baseline_created: Some(1_700_000_100_000),
        held: 4,
        inheriting_from: Some(WorkloadKey::from_raw("docker.io/library/nginx:1.24")),
        inherited_from: vec!["docker.io/library/nginx:1.23".to_owned()],
    }];
    let body = serde_json::to_string(&served).unwrap();
    let api = FakeApi::start(move |_| (200, body.clone()));

    let out = api.habitctl(&["workloads", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let read: Vec<WorkloadView> = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(read, served);

    let out = api.habitctl(&["workloads"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].contains(" HELD "), "{text}");
    assert!(
        lines[1].starts_with(&format!(
            "{NGINX}  unstable (partial, forced learn, inherits docker.io/library/nginx:1.24) "
        )),
        "{text}"
    );
    assert!(lines[1].contains(" 25%   4096     4 "), "{text}");
    assert!(lines[1].ends_with(" 1m01s       9"), "{text}");
    assert!(
        text.ends_with(&format!(
            "unstable:\n  {NGINX}: file reached its limit of 4096 items\n"
        )),
        "{text}"
    );
}

#[test]
fn workloads_json_prints_the_raw_array_pretty() {
    let api = fake_habitd(None);
    // The API address from the environment this time.
    let out = Command::new(env!("CARGO_BIN_EXE_habitctl"))
        .args(["workloads", "--json"])
        .env("HABITD_API", api.url())
        .env_remove("HABITD_TOKEN_FILE")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let printed: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(printed, workloads_json());
    assert!(text.starts_with("[\n  {\n"), "not pretty:\n{text}");
}

#[test]
fn mode_sends_the_token_and_the_mode() {
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path());
    let api = fake_habitd(None);
    let out = api.habitctl(&["--token-file", &token, "mode", NGINX, "detect"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!("{NGINX}: mode detect (state: stable, baseline partial)\n")
    );
    // A short image reference is normalised like Docker does; the token from the environment.
    let out = Command::new(env!("CARGO_BIN_EXE_habitctl"))
        .args(["--api", &api.url(), "mode", "nginx:1.25", "relearn"])
        .env("HABITD_TOKEN_FILE", &token)
        .env_remove("HABITD_API")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));

    let requests = api.requests();
    assert_eq!(requests.len(), 2);
    for (request, mode) in requests.iter().zip(["detect", "relearn"]) {
        assert_eq!(request.method, "POST");
        assert_eq!(
            request.path,
            format!("/api/v1/workloads/{NGINX_SEGMENT}/mode")
        );
        assert_eq!(
            request.header("authorization"),
            Some(format!("Bearer {TOKEN}").as_str())
        );
        assert_eq!(request.header("content-type"), Some("application/json"));
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(body, serde_json::json!({ "mode": mode }));
    }
}

#[test]
fn a_refused_token_says_to_pass_one() {
    let api = fake_habitd(None);
    let out = api.habitctl(&["mode", NGINX, "learn"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("the API refused the token: pass --token-file"),
        "{err}"
    );
    assert!(err.contains("no token was sent"), "{err}");
    assert!(err.contains("missing or wrong bearer token"), "{err}");
    assert!(stdout(&out).is_empty());

    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "not-the-token").unwrap();
    let out = api.habitctl(&[
        "--token-file",
        wrong.to_str().unwrap(),
        "mode",
        NGINX,
        "learn",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("the API refused the token: pass --token-file"),
        "{err}"
    );
    assert!(err.contains("was not accepted"), "{err}");
    assert_eq!(
        api.requests()[1].header("authorization"),
        Some("Bearer not-the-token")
    );
}

#[test]
fn server_errors_are_reported_with_their_message() {
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path());
    let api = fake_habitd(None);
    let out = api.habitctl(&["--token-file", &token, "mode", "redis:7", "learn"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("cannot set the mode of docker.io/library/redis:7 to learn"),
        "{err}"
    );
    assert!(err.contains("no such workload (HTTP 404"), "{err}");

    let out = api.habitctl(&["baseline", "export", NGINX]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("no baseline for this workload"), "{err}");
    assert!(err.contains("still learning"), "{err}");
}

#[test]
fn an_unreachable_daemon_is_named() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let out = habitctl(&["--api", &url, "workloads"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("cannot reach habitd at {url}: ")),
        "{err}"
    );
    assert!(err.contains("(is `habitd run` running? --api)"), "{err}");
}

#[test]
fn baselines_export_and_import() {
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path());
    let file = baseline_json(&["/usr/sbin/nginx", "/bin/sh"]);
    let api = fake_habitd(Some(file.clone()));

    // Export to standard output and to a file.
    let out = api.habitctl(&["baseline", "export", NGINX]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim_end(), file.trim_end());
    let exported = dir.path().join("nginx.json");
    let out = api.habitctl(&[
        "baseline",
        "export",
        NGINX,
        "-o",
        exported.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&exported).unwrap(), file);

    // Import sends the file as it is, with the token.
    let out = api.habitctl(&[
        "--token-file",
        &token,
        "baseline",
        "import",
        NGINX,
        exported.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!(
            "imported {} as the baseline of {NGINX}: habitd stored 2 items\n",
            exported.display()
        )
    );
    let put = api.requests().pop().unwrap();
    assert_eq!(put.method, "PUT");
    assert_eq!(put.path, format!("/api/v1/baselines/{NGINX_SEGMENT}"));
    assert_eq!(put.body, file.as_bytes());
    assert_eq!(
        put.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );

    // A malformed file is refused before anything is sent.
    let before = api.requests().len();
    let broken = dir.path().join("broken.json");
    std::fs::write(
        &broken,
        file.replacen("\"partial\": false", "\"partial\": 7", 1),
    )
    .unwrap();
    let out = api.habitctl(&[
        "--token-file",
        &token,
        "baseline",
        "import",
        NGINX,
        broken.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{} is not a valid baseline", broken.display())),
        "{err}"
    );
    assert!(err.contains("line "), "{err}");
    assert!(err.contains("column "), "{err}");
    assert_eq!(api.requests().len(), before);
}

#[test]
fn offline_merge_and_diff() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.json");
    let b = dir.path().join("b.json");
    std::fs::write(&a, baseline_json(&["/bin/a", "/bin/b"])).unwrap();
    std::fs::write(&b, baseline_json(&["/bin/a", "/bin/c"])).unwrap();
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());

    let out = habitctl(&["baseline", "diff", a, a]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("no differences"));

    let out = habitctl(&["baseline", "diff", a, b]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("exec: 1 added, 1 removed\n  + /bin/c\n  - /bin/b\n"),
        "{text}"
    );

    let merged = dir.path().join("merged.json");
    let out = habitctl(&["baseline", "merge", a, b, "-o", merged.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let merged = Baseline::from_json_slice(&std::fs::read(&merged).unwrap()).unwrap();
    assert_eq!(merged.items_total(), 3);

    // Errors exit 2, not 1, so that "different" and "failed" differ.
    let out = habitctl(&["baseline", "diff", a, "/nonexistent/x.json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("cannot read baseline file /nonexistent/x.json"));
}
