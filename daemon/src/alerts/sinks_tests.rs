//! Tests of the sinks against real files and a real local HTTP server.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::time::{Instant, UNIX_EPOCH};

use habit_models::priority::Priority;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

fn alert(n: u64) -> Alert {
    let mut fields = Map::new();
    fields.insert("proc.name".into(), json!("sh"));
    fields.insert("proc.pid".into(), json!(n));
    Alert::novelty(
        UNIX_EPOCH + Duration::from_secs(1_714_564_800 + n),
        "docker.io/library/nginx:1.25",
        "stable",
        "exec",
        &format!("/bin/sh{n}"),
        0.9,
        Priority::Warning,
        fields,
        "node-1",
    )
}

/// The value of `name{sink=...}` in the registry.
fn counter(registry: &Registry, name: &str, sink: &str) -> u64 {
    registry
        .gather()
        .iter()
        .filter(|family| family.name() == name)
        .flat_map(|family| family.get_metric())
        .filter(|m| {
            m.get_label()
                .iter()
                .any(|l| l.name() == "sink" && l.value() == sink)
        })
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}

// ---- parsing ----

#[test]
fn parses_the_accepted_forms() {
    assert_eq!(SinkSpec::parse("stdout").unwrap(), SinkSpec::Stdout);
    assert_eq!(
        SinkSpec::parse("file:/var/log/habitd/alerts.jsonl").unwrap(),
        SinkSpec::File(PathBuf::from("/var/log/habitd/alerts.jsonl"))
    );
    let SinkSpec::Http(t) = SinkSpec::parse("http://127.0.0.1:2801/alerts?src=habitd").unwrap()
    else {
        panic!("not http");
    };
    assert_eq!(t.connect_addr, "127.0.0.1:2801");
    assert_eq!(t.authority, "127.0.0.1:2801");
    assert_eq!(t.path, "/alerts?src=habitd");
    assert_eq!(t.url(), "http://127.0.0.1:2801/alerts?src=habitd");

    let SinkSpec::Http(t) = SinkSpec::parse("http://[::1]").unwrap() else {
        panic!("not http");
    };
    assert_eq!(t.connect_addr, "[::1]:80");
    assert_eq!(t.path, "/");

    assert_eq!(SinkSpec::parse("stdout").unwrap().kind(), "stdout");
    assert_eq!(SinkSpec::parse("file:a").unwrap().kind(), "file");
    assert_eq!(SinkSpec::parse("http://h/").unwrap().kind(), "http");
    assert_eq!(
        "file:/tmp/a".parse::<SinkSpec>().unwrap().to_string(),
        "file:/tmp/a"
    );
}

#[test]
fn parse_errors_name_the_value_and_say_what_is_accepted() {
    let e = SinkSpec::parse("https://alerts.example:443/x").unwrap_err();
    assert!(matches!(e, SinkError::HttpsUnsupported { .. }));
    let msg = e.to_string();
    assert!(msg.contains("\"https://alerts.example:443/x\""), "{msg}");
    assert!(msg.contains("not supported yet"), "{msg}");

    let msg = SinkSpec::parse("HTTPS://x/").unwrap_err().to_string();
    assert!(msg.contains("not supported yet"), "{msg}");

    let e = SinkSpec::parse("syslog://localhost").unwrap_err();
    assert!(matches!(e, SinkError::Unknown { .. }));
    let msg = e.to_string();
    assert!(msg.contains("\"syslog://localhost\""), "{msg}");
    assert!(
        msg.contains("`stdout`, `file:PATH` or `http://HOST[:PORT]/PATH`"),
        "{msg}"
    );

    assert!(matches!(
        SinkSpec::parse("").unwrap_err(),
        SinkError::Unknown { .. }
    ));
    assert!(matches!(
        SinkSpec::parse(" stdout").unwrap_err(),
        SinkError::Unknown { .. }
    ));
    assert!(matches!(
        SinkSpec::parse("file:").unwrap_err(),
        SinkError::EmptyPath { .. }
    ));
    for bad in [
        "http://",
        "http://:80/",
        "http://user:pw@host/",
        "http://h:99999/",
    ] {
        let e = SinkSpec::parse(bad).unwrap_err();
        assert!(matches!(e, SinkError::InvalidUrl { .. }), "{bad}: {e:?}");
        assert!(e.to_string().contains(bad), "{e}");
    }
}

#[test]
fn start_needs_a_runtime() {
    let registry = Registry::new();
    let e = AlertSinks::start(vec![SinkSpec::Stdout], &registry).unwrap_err();
    assert!(matches!(e, SinkError::NoRuntime));
}

#[tokio::test]
async fn start_fails_on_an_unopenable_file_and_on_double_registration() {
    let registry = Registry::new();
    let e = AlertSinks::start(
        vec![SinkSpec::File("/nonexistent-dir/x/alerts.jsonl".into())],
        &registry,
    )
    .unwrap_err();
    assert!(matches!(e, SinkError::OpenFile { .. }), "{e:?}");
    assert!(e.to_string().contains("/nonexistent-dir/x/alerts.jsonl"));

    let sinks = AlertSinks::start(vec![], &registry).unwrap();
    let e = AlertSinks::start(vec![], &registry).unwrap_err();
    assert!(matches!(e, SinkError::Metrics(_)), "{e:?}");
    sinks.shutdown().await;
}

// ---- file ----

#[tokio::test]
async fn file_sink_appends_json_lines_to_a_0600_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alerts.jsonl");
    let registry = Registry::new();
    let sinks = AlertSinks::start(vec![SinkSpec::File(path.clone())], &registry).unwrap();
    for n in 0..3 {
        sinks.send(&alert(n));
    }
    sinks.shutdown().await;

    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    assert_eq!(counter(&registry, "habitd_alerts_sent_total", "file"), 3);
    assert_eq!(
        counter(&registry, "habitd_alert_sink_errors_total", "file"),
        0
    );
    assert_eq!(
        counter(&registry, "habitd_alert_sink_dropped_total", "file"),
        0
    );

    // A second daemon run appends instead of truncating.
    let registry = Registry::new();
    let sinks = AlertSinks::start(vec![SinkSpec::File(path.clone())], &registry).unwrap();
    sinks.send(&alert(3));
    sinks.shutdown().await;

    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.ends_with('\n'));
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    for (n, line) in lines.iter().enumerate() {
        assert_eq!(line["rule"], json!("habitd anomaly"));
        assert_eq!(line["priority"], json!("Warning"));
        assert_eq!(line["output_fields"]["proc.pid"], json!(n));
        assert_eq!(
            line["habitd"]["novel"][0]["item"],
            json!(format!("/bin/sh{n}"))
        );
    }
}

#[test]
fn file_writer_ends_a_torn_line_and_follows_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alerts.jsonl");
    std::fs::write(&path, "{\"torn").unwrap();
    let mut w = FileWriter::open(&path).unwrap();
    w.write_batch(b"{\"a\":1}\n").unwrap();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "{\"torn\n{\"a\":1}\n"
    );

    let rotated_path = dir.path().join("alerts.jsonl.1");
    std::fs::rename(&path, &rotated_path).unwrap();
    w.write_batch(b"{\"b\":2}\n").unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"b\":2}\n");
    assert_eq!(
        std::fs::read_to_string(&rotated_path).unwrap(),
        "{\"torn\n{\"a\":1}\n"
    );
}

/// Waits until `name{sink}` reaches `at_least` (the sink tasks run on their own).
async fn wait_counter(registry: &Registry, name: &str, sink: &str, at_least: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while counter(registry, name, sink) < at_least {
        assert!(
            Instant::now() < deadline,
            "{name}{{sink={sink}}} stayed at {} (waiting for {at_least})",
            counter(registry, name, sink)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The `proc.pid`s of the alert lines of `path`; panics on a line that is not a whole alert.
fn pids_in(path: &Path) -> Vec<u64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}"));
            v["output_fields"]["proc.pid"].as_u64().unwrap()
        })
        .collect()
}

#[tokio::test]
async fn file_sink_follows_rotation_by_mv_like_logrotate() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alerts.jsonl");
    let registry = Registry::new();
    let sinks = AlertSinks::start(vec![SinkSpec::File(path.clone())], &registry).unwrap();
    for n in 0..3 {
        sinks.send(&alert(n));
    }
    wait_counter(&registry, "habitd_alerts_sent_total", "file", 3).await;
    // logrotate's default (no copytruncate): rename, and let the writer make a new file.
    let rotated = dir.path().join("alerts.jsonl.1");
    let mv = std::process::Command::new("mv")
        .arg(&path)
        .arg(&rotated)
        .status()
        .unwrap();
    assert!(mv.success());
    for n in 3..6 {
        sinks.send(&alert(n));
    }
    wait_counter(&registry, "habitd_alerts_sent_total", "file", 6).await;
    sinks.shutdown().await;
    assert_eq!(pids_in(&rotated), [0, 1, 2]);
    assert_eq!(pids_in(&path), [3, 4, 5]);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the new file is 0600 too: {mode:o}");
    assert_eq!(
        counter(&registry, "habitd_alert_sink_dropped_total", "file"),
        0
    );
}

/// A small tmpfs, unmounted when dropped.
struct SmallTmpfs {
    dir: tempfile::TempDir,
}

impl SmallTmpfs {
    fn mount(size: &str) -> SmallTmpfs {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .unwrap_or_else(|e| panic!("cannot run mount: {e}"));
        assert!(
            out.status.success(),
            "this test needs root to mount a small tmpfs (a full disk): mount said {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        SmallTmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test]
async fn file_sink_on_a_full_disk_drops_counts_and_resumes() {
    let disk = SmallTmpfs::mount("256k");
    let path = disk.path().join("alerts.jsonl");
    let registry = Registry::new();
    let sinks = AlertSinks::start(vec![SinkSpec::File(path.clone())], &registry).unwrap();
    sinks.send(&alert(0));
    wait_counter(&registry, "habitd_alerts_sent_total", "file", 1).await;

    // Fill the disk to the last byte.
    let filler = disk.path().join("filler");
    let mut f = File::create(&filler).unwrap();
    let block = vec![0u8; 4096];
    loop {
        match f.write(&block) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling the tmpfs: {e}"),
        }
    }
    let _ = f.write(&[0u8; 1]);
    drop(f);

    // One at a time, each written or dropped before the next: the last page of the file
    // still takes a few lines, then every write fails.
    let sent = |r: &Registry| counter(r, "habitd_alerts_sent_total", "file");
    let dropped = |r: &Registry| counter(r, "habitd_alert_sink_dropped_total", "file");
    let mut written = vec![0];
    for n in 1..30 {
        let before = (sent(&registry), dropped(&registry));
        sinks.send(&alert(n));
        let deadline = Instant::now() + Duration::from_secs(10);
        while (sent(&registry), dropped(&registry)) == before {
            assert!(
                Instant::now() < deadline,
                "alert {n} neither written nor dropped"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if sent(&registry) > before.0 {
            written.push(n);
        }
    }
    // Dropped and counted (the sender never waited), errors counted.
    assert!(dropped(&registry) >= 20, "dropped {}", dropped(&registry));
    assert!(counter(&registry, "habitd_alert_sink_errors_total", "file") >= 1);
    assert_eq!(sent(&registry) + dropped(&registry), 30);
    // Only whole lines in the file: a partly written batch was cut off.
    assert_eq!(pids_in(&path), written);

    // Space returns: alerts land again, after the ones written before.
    std::fs::remove_file(&filler).unwrap();
    let resumed_from = sent(&registry);
    for n in 30..33 {
        sinks.send(&alert(n));
        written.push(n);
    }
    wait_counter(
        &registry,
        "habitd_alerts_sent_total",
        "file",
        resumed_from + 3,
    )
    .await;
    let total_dropped = dropped(&registry);
    sinks.shutdown().await;
    assert_eq!(pids_in(&path), written);
    assert_eq!(dropped(&registry), total_dropped);
}

#[tokio::test]
async fn stdout_sink_counts_what_it_writes() {
    let registry = Registry::new();
    let sinks = AlertSinks::start(vec![SinkSpec::Stdout], &registry).unwrap();
    sinks.send(&alert(0));
    sinks.shutdown().await;
    assert_eq!(counter(&registry, "habitd_alerts_sent_total", "stdout"), 1);
}

// ---- http ----

/// One request as the test server saw it.
#[derive(Debug)]
struct Received {
    head: String,
    body: Vec<u8>,
}

/// Reads one HTTP/1.1 request (head and `Content-Length` body) from `stream`.
async fn read_request(stream: &mut tokio::net::TcpStream) -> Option<Received> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(Received {
        head,
        body: buf[head_end..head_end + length].to_vec(),
    })
}

/// A local HTTP server answering the given statuses in turn (then 200), one request per
/// connection, recording what it received. It lives as long as the test's runtime.
async fn scripted_server(statuses: Vec<u16>) -> (SocketAddr, Arc<Mutex<Vec<Received>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&received);
    tokio::spawn(async move {
        let mut statuses = statuses.into_iter();
        while let Ok((mut stream, _)) = listener.accept().await {
            let Some(request) = read_request(&mut stream).await else {
                continue;
            };
            log.lock().unwrap().push(request);
            let status = statuses.next().unwrap_or(200);
            let response =
                format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
    });
    (addr, received)
}

fn fast_retries() -> SinkOptions {
    SinkOptions {
        http: HttpOptions {
            timeout: Duration::from_secs(5),
            max_attempts: 5,
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_millis(100),
        },
        ..SinkOptions::default()
    }
}

#[tokio::test]
async fn http_sink_retries_server_errors_and_delivers_once() {
    let (addr, received) = scripted_server(vec![500, 500]).await;
    let spec = SinkSpec::parse(&format!("http://{addr}/falco")).unwrap();
    let registry = Registry::new();
    let sinks = AlertSinks::start_with(vec![spec], &fast_retries(), &registry).unwrap();
    let a = alert(7);
    sinks.send(&a);
    sinks.shutdown().await;

    assert_eq!(counter(&registry, "habitd_alerts_sent_total", "http"), 1);
    assert_eq!(
        counter(&registry, "habitd_alert_sink_errors_total", "http"),
        2
    );
    assert_eq!(
        counter(&registry, "habitd_alert_sink_dropped_total", "http"),
        0
    );

    let received = received.lock().unwrap();
    assert_eq!(received.len(), 3, "two failures, then the delivery");
    for r in received.iter() {
        assert!(r.head.starts_with("POST /falco HTTP/1.1\r\n"), "{}", r.head);
        let head = r.head.to_ascii_lowercase();
        assert!(head.contains("content-type: application/json"), "{head}");
        assert!(head.contains(&format!("host: {addr}")), "{head}");
        let body: Alert = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body, a);
    }
}

#[tokio::test]
async fn http_sink_gives_up_after_max_attempts_and_on_client_errors() {
    let (addr, received) = scripted_server(vec![503; 10]).await;
    let spec = SinkSpec::parse(&format!("http://{addr}/")).unwrap();
    let registry = Registry::new();
    let mut options = fast_retries();
    options.http.max_attempts = 3;
    let sinks = AlertSinks::start_with(vec![spec], &options, &registry).unwrap();
    sinks.send(&alert(1));
    sinks.shutdown().await;
    assert_eq!(
        counter(&registry, "habitd_alert_sink_errors_total", "http"),
        3
    );
    assert_eq!(
        counter(&registry, "habitd_alert_sink_dropped_total", "http"),
        1
    );
    assert_eq!(counter(&registry, "habitd_alerts_sent_total", "http"), 0);
    assert_eq!(received.lock().unwrap().len(), 3);

    // 400: the endpoint rejects this alert as it is; one attempt only.
    let (addr, received) = scripted_server(vec![400; 10]).await;
    let spec = SinkSpec::parse(&format!("http://{addr}/")).unwrap();
    let registry = Registry::new();
    let sinks = AlertSinks::start_with(vec![spec], &fast_retries(), &registry).unwrap();
    sinks.send(&alert(1));
    sinks.shutdown().await;
    assert_eq!(
        counter(&registry, "habitd_alert_sink_errors_total", "http"),
        1
    );
    assert_eq!(
        counter(&registry, "habitd_alert_sink_dropped_total", "http"),
        1
    );
    assert_eq!(received.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn connection_refused_is_retried_then_dropped() {
    // Bind then drop: nothing listens on the port afterwards.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let spec = SinkSpec::parse(&format!("http://{addr}/")).unwrap();
    let registry = Registry::new();
    let mut options = fast_retries();
    options.http.max_attempts = 2;
    let sinks = AlertSinks::start_with(vec![spec], &options, &registry).unwrap();
    sinks.send(&alert(1));
    sinks.shutdown().await;
    assert_eq!(
        counter(&registry, "habitd_alert_sink_errors_total", "http"),
        2
    );
    assert_eq!(
        counter(&registry, "habitd_alert_sink_dropped_total", "http"),
        1
    );
}

#[tokio::test]
async fn a_hanging_endpoint_never_blocks_send_and_drops_are_counted() {
    // Accepts connections and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("alerts.jsonl");
    let specs = vec![
        SinkSpec::parse(&format!("http://{addr}/")).unwrap(),
        SinkSpec::File(file.clone()),
    ];
    let registry = Registry::new();
    let options = SinkOptions {
        queue_capacity: 4,
        http: HttpOptions {
            timeout: Duration::from_secs(60),
            ..HttpOptions::default()
        },
        ..SinkOptions::default()
    };
    let sinks = AlertSinks::start_with(specs, &options, &registry).unwrap();

    let mut slowest = Duration::ZERO;
    for n in 0..100 {
        let t = Instant::now();
        sinks.send(&alert(n));
        slowest = slowest.max(t.elapsed());
        // Let the sink tasks run so the file sink keeps draining its queue.
        if n % 4 == 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    // A blocking send would wait for the 60 s HTTP timeout.
    assert!(
        slowest < Duration::from_millis(500),
        "send took {slowest:?}"
    );
    // Queue (4) plus the one in flight are all the hanging sink can hold.
    let dropped = counter(&registry, "habitd_alert_sink_dropped_total", "http");
    assert!(dropped >= 95, "dropped {dropped}");

    // The file sink is not held up by the hanging one: a later alert reaches the file while the
    // HTTP sink is still stuck on its first.
    sinks.send(&alert(100));
    // Wait for that alert itself (earlier alerts may still be landing, so the sent counter
    // moving proves nothing about this one).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        if text.lines().any(|l| l.contains("/bin/sh100")) {
            break;
        }
        assert!(Instant::now() < deadline, "file sink stalled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let t = Instant::now();
    sinks.shutdown_within(Duration::from_secs(1)).await;
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    // Whatever was still queued or in flight at the deadline is counted too: nothing is lost
    // without a trace.
    assert_eq!(
        counter(&registry, "habitd_alert_sink_dropped_total", "http"),
        101
    );
    assert_eq!(counter(&registry, "habitd_alerts_sent_total", "http"), 0);
    let file_sent = counter(&registry, "habitd_alerts_sent_total", "file");
    let file_dropped = counter(&registry, "habitd_alert_sink_dropped_total", "file");
    assert_eq!(file_sent + file_dropped, 101);
    let lines = std::fs::read_to_string(&file).unwrap().lines().count() as u64;
    assert_eq!(lines, file_sent);
}
