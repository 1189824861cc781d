//! Alert sinks: where alert JSON lines go (`stdout`, `file:PATH`, `http://HOST:PORT/PATH`).
//!
//! Each sink runs on its own tokio task behind its own bounded queue, so a slow or dead sink
//! (an HTTP endpoint that hangs, a full disk) only ever costs that sink's alerts: the caller's
//! [`AlertSinks::send`] never waits, never fails, and the other sinks keep delivering. When a
//! queue is full the alert is dropped for that sink, counted in
//! `habitd_alert_sink_dropped_total{sink}` and logged once per episode (principle 4: a limit
//! reached is a metric and a log line, never a stall or a silent loss).
//!
//! Delivery is at most once: a line that fails is retried (HTTP) or dropped and counted (stdout,
//! file), never written twice on purpose.

use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{CONNECTION, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::alert::Alert;

/// Alerts waiting per sink before new ones are dropped for it.
pub const DEFAULT_QUEUE_CAPACITY: usize = 10_000;

/// How long [`AlertSinks::shutdown`] waits for queued alerts to be delivered.
pub const DEFAULT_SHUTDOWN_DEADLINE: Duration = Duration::from_secs(3);

/// The accepted sink forms, for error messages.
const ACCEPTED_FORMS: &str = "`stdout`, `file:PATH` or `http://HOST[:PORT]/PATH`";

/// One configured sink, parsed from `--alerts` / the `alerts` config key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkSpec {
    /// JSON lines on standard output (the default; container log collectors pick it up).
    Stdout,
    /// JSON lines appended to a file, fsync'd per batch.
    File(PathBuf),
    /// Each alert POSTed as JSON to a plain-HTTP endpoint (a Falcosidekick, a log shipper).
    Http(HttpTarget),
}

/// Where an HTTP sink posts, split once at parse time so delivery does no parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    /// The URL as given, for logs.
    url: String,
    /// The `Host` header value: the URL's authority.
    authority: String,
    /// `host:port` to connect to (port 80 when the URL has none).
    connect_addr: String,
    /// Path and query to request; `/` when the URL has none.
    path: String,
}

impl HttpTarget {
    /// The URL as configured.
    #[cfg(test)]
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// A sink that cannot be configured or started. Every variant names the offending value, since
/// the operator has to find it in a flag or a config file.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Not one of the accepted forms.
    #[error("unknown alert sink {spec:?}: expected {forms}", forms = ACCEPTED_FORMS)]
    Unknown {
        /// The value as given.
        spec: String,
    },
    /// `https://`: habitd has no TLS client yet.
    #[error(
        "alert sink {spec:?}: https is not supported yet; post to an http:// endpoint (for example a local relay that forwards over TLS)"
    )]
    HttpsUnsupported {
        /// The value as given.
        spec: String,
    },
    /// `file:` with nothing after it.
    #[error("alert sink {spec:?}: the file path is empty (expected `file:PATH`)")]
    EmptyPath {
        /// The value as given.
        spec: String,
    },
    /// `http://` that is not a usable URL.
    #[error("alert sink {spec:?} is not a usable http URL: {reason}")]
    InvalidUrl {
        /// The value as given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The alert file cannot be opened for appending at start-up.
    #[error("cannot open alert file {path:?} for appending")]
    OpenFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The sink metrics cannot be registered (most likely: already registered on this registry).
    #[error("cannot register the alert sink metrics")]
    Metrics(#[source] prometheus::Error),
    /// [`AlertSinks::start`] was called outside a tokio runtime.
    #[error("alert sinks must be started inside a tokio runtime")]
    NoRuntime,
}

impl SinkSpec {
    /// Parses `stdout`, `file:PATH` or `http://HOST[:PORT][/PATH]`.
    pub fn parse(spec: &str) -> Result<SinkSpec, SinkError> {
        if spec == "stdout" {
            return Ok(SinkSpec::Stdout);
        }
        if let Some(path) = strip_prefix_ignore_case(spec, "file:") {
            if path.is_empty() {
                return Err(SinkError::EmptyPath {
                    spec: spec.to_owned(),
                });
            }
            return Ok(SinkSpec::File(PathBuf::from(path)));
        }
        if strip_prefix_ignore_case(spec, "https://").is_some() {
            return Err(SinkError::HttpsUnsupported {
                spec: spec.to_owned(),
            });
        }
        if strip_prefix_ignore_case(spec, "http://").is_some() {
            return parse_http(spec).map(SinkSpec::Http);
        }
        Err(SinkError::Unknown {
            spec: spec.to_owned(),
        })
    }

    /// The `sink` metric label: the kind, never the path or URL, to keep cardinality low.
    pub fn kind(&self) -> &'static str {
        match self {
            SinkSpec::Stdout => "stdout",
            SinkSpec::File(_) => "file",
            SinkSpec::Http(_) => "http",
        }
    }
}

impl std::str::FromStr for SinkSpec {
    type Err = SinkError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SinkSpec::parse(s)
    }
}

impl fmt::Display for SinkSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SinkSpec::Stdout => f.write_str("stdout"),
            SinkSpec::File(path) => write!(f, "file:{}", path.display()),
            SinkSpec::Http(target) => f.write_str(&target.url),
        }
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

fn parse_http(spec: &str) -> Result<HttpTarget, SinkError> {
    let invalid = |reason: &str| SinkError::InvalidUrl {
        spec: spec.to_owned(),
        reason: reason.to_owned(),
    };
    let uri: Uri = spec
        .parse()
        .map_err(|e: hyper::http::uri::InvalidUri| invalid(&e.to_string()))?;
    let authority = uri.authority().ok_or_else(|| invalid("no host"))?;
    if authority.as_str().contains('@') {
        return Err(invalid(
            "credentials in the URL are not supported (they would end up in logs)",
        ));
    }
    let host = authority.host();
    if host.is_empty() {
        return Err(invalid("no host"));
    }
    // `Uri` accepts any digits after the colon and `port_u16` then reads as "no port"; an
    // explicit port must be a real one rather than silently become 80.
    let port = match authority.as_str().strip_prefix(host) {
        Some(rest) if !rest.is_empty() => rest
            .strip_prefix(':')
            .and_then(|p| p.parse::<u16>().ok())
            .filter(|&p| p != 0)
            .ok_or_else(|| invalid("the port must be a number from 1 to 65535"))?,
        _ => 80,
    };
    let path = match uri.path_and_query().map(|p| p.as_str()) {
        Some(p) if !p.is_empty() => p.to_owned(),
        _ => "/".to_owned(),
    };
    Ok(HttpTarget {
        url: spec.to_owned(),
        authority: authority.as_str().to_owned(),
        // `host()` keeps the brackets of an IPv6 literal, which `host:port` parsing needs.
        connect_addr: format!("{host}:{port}"),
        path,
    })
}

/// Tuning of the sinks; `Default` is what the daemon uses.
#[derive(Debug, Clone)]
pub struct SinkOptions {
    /// Alerts queued per sink before new ones are dropped for it.
    pub queue_capacity: usize,
    /// Most lines written (and fsync'd) at once by the stdout and file sinks; one fsync per
    /// batch keeps a burst cheap while every line is on disk soon after it was sent.
    pub batch_max: usize,
    /// HTTP delivery.
    pub http: HttpOptions,
}

impl Default for SinkOptions {
    fn default() -> Self {
        Self {
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            // 512 lines of ~1 KiB: well under a second of writing, bounded memory per batch.
            batch_max: 512,
            http: HttpOptions::default(),
        }
    }
}

/// HTTP delivery: timeout per attempt and exponential backoff between attempts.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Limit for one attempt: connect, send, response head.
    pub timeout: Duration,
    /// Attempts per alert (at least 1) before it is dropped and counted.
    pub max_attempts: u32,
    /// Wait before the second attempt; doubles after each failure.
    pub backoff_initial: Duration,
    /// Longest wait between attempts.
    pub backoff_max: Duration,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(5),
            // 100 ms, 200 ms, 400 ms, 800 ms: a restarting receiver gets ~1.5 s to come back
            // before an alert is given up, while a dead one holds the queue only that long.
            max_attempts: 5,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
        }
    }
}

/// The three metric families, registered once per [`AlertSinks::start`].
struct MetricFamilies {
    sent: IntCounterVec,
    errors: IntCounterVec,
    dropped: IntCounterVec,
}

impl MetricFamilies {
    fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let sent = IntCounterVec::new(
            Opts::new(
                "habitd_alerts_sent_total",
                "Alerts delivered, by sink kind (stdout, file, http)",
            ),
            &["sink"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "habitd_alert_sink_errors_total",
                "Failed alert writes or HTTP attempts (each retry counts), by sink kind",
            ),
            &["sink"],
        )?;
        let dropped = IntCounterVec::new(
            Opts::new(
                "habitd_alert_sink_dropped_total",
                "Alerts given up (queue full, retries exhausted, write failed, shutdown deadline), by sink kind",
            ),
            &["sink"],
        )?;
        registry.register(Box::new(sent.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(dropped.clone()))?;
        Ok(Self {
            sent,
            errors,
            dropped,
        })
    }

    fn for_sink(&self, kind: &str) -> Result<SinkMetrics, prometheus::Error> {
        Ok(SinkMetrics {
            sent: self.sent.get_metric_with_label_values(&[kind])?,
            errors: self.errors.get_metric_with_label_values(&[kind])?,
            dropped: self.dropped.get_metric_with_label_values(&[kind])?,
        })
    }
}

/// One sink's counters (handles looked up once, incremented per batch or attempt).
#[derive(Clone)]
struct SinkMetrics {
    sent: IntCounter,
    errors: IntCounter,
    dropped: IntCounter,
}

/// A started sink as [`AlertSinks`] sees it.
struct RunningSink {
    /// The spec, for logs.
    name: String,
    tx: mpsc::Sender<Bytes>,
    /// Alerts accepted into the queue and not yet delivered or dropped, so that the ones still
    /// queued when the shutdown deadline passes are counted as dropped.
    pending: Arc<AtomicU64>,
    /// The queue was full at the last send: log the start and the end of an overflow episode,
    /// not every dropped alert.
    overflowing: AtomicBool,
    metrics: SinkMetrics,
    task: JoinHandle<()>,
}

impl RunningSink {
    fn offer(&self, line: Bytes) {
        // Counted before the send so the task's decrement can never come first.
        self.pending.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(line) {
            Ok(()) => {
                if self.overflowing.swap(false, Ordering::Relaxed) {
                    tracing::info!(message = "Alert sink queue accepts alerts again.", sink = %self.name);
                }
            }
            Err(error) => {
                self.pending.fetch_sub(1, Ordering::Relaxed);
                self.metrics.dropped.inc();
                if !self.overflowing.swap(true, Ordering::Relaxed) {
                    let reason = match error {
                        mpsc::error::TrySendError::Full(_) => "queue full",
                        mpsc::error::TrySendError::Closed(_) => "sink task stopped",
                    };
                    tracing::warn!(
                        message = "Dropping alerts for a sink; see habitd_alert_sink_dropped_total.",
                        sink = %self.name,
                        reason,
                    );
                }
            }
        }
    }
}

/// The running sinks. Dropping it closes the queues; the tasks finish what is queued and exit.
pub struct AlertSinks {
    sinks: Vec<RunningSink>,
}

impl fmt::Debug for AlertSinks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.sinks.iter().map(|s| &s.name))
            .finish()
    }
}

impl AlertSinks {
    /// Starts every sink with [`SinkOptions::default`] and registers the sink metrics on
    /// `metrics` (once per registry). Must run inside a tokio runtime. A file sink opens its file
    /// here, so a bad path stops the start instead of losing every alert later.
    pub fn start(specs: Vec<SinkSpec>, metrics: &Registry) -> Result<AlertSinks, SinkError> {
        Self::start_with(specs, &SinkOptions::default(), metrics)
    }

    /// [`AlertSinks::start`] with explicit tuning.
    pub fn start_with(
        specs: Vec<SinkSpec>,
        options: &SinkOptions,
        metrics: &Registry,
    ) -> Result<AlertSinks, SinkError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| SinkError::NoRuntime)?;
        // Open files first: nothing is spawned or registered if one cannot be opened.
        let mut runners = Vec::with_capacity(specs.len());
        for spec in &specs {
            runners.push(match spec {
                SinkSpec::Stdout => Runner::Lines(LineWriter::Stdout),
                SinkSpec::File(path) => {
                    let writer = FileWriter::open(path).map_err(|source| SinkError::OpenFile {
                        path: path.clone(),
                        source,
                    })?;
                    Runner::Lines(LineWriter::File(writer))
                }
                SinkSpec::Http(target) => Runner::Http(target.clone()),
            });
        }
        let families = MetricFamilies::register(metrics).map_err(SinkError::Metrics)?;
        let mut sinks = Vec::with_capacity(specs.len());
        for (spec, runner) in specs.iter().zip(runners) {
            let sink_metrics = families.for_sink(spec.kind()).map_err(SinkError::Metrics)?;
            let (tx, rx) = mpsc::channel(options.queue_capacity.max(1));
            let pending = Arc::new(AtomicU64::new(0));
            let task = match runner {
                Runner::Http(target) => runtime.spawn(run_http_sink(
                    rx,
                    target,
                    options.http.clone(),
                    sink_metrics.clone(),
                    Arc::clone(&pending),
                )),
                Runner::Lines(writer) => runtime.spawn(run_line_sink(
                    rx,
                    writer,
                    spec.to_string(),
                    options.batch_max.max(1),
                    sink_metrics.clone(),
                    Arc::clone(&pending),
                )),
            };
            tracing::info!(message = "Alert sink started.", sink = %spec);
            sinks.push(RunningSink {
                name: spec.to_string(),
                tx,
                pending,
                overflowing: AtomicBool::new(false),
                metrics: sink_metrics,
                task,
            });
        }
        Ok(AlertSinks { sinks })
    }

    /// Queues `alert` on every sink. Never blocks and never fails: a sink whose queue is full
    /// drops it (counted), because holding up detection for a slow sink would be worse.
    pub fn send(&self, alert: &Alert) {
        let line = match alert.to_json_line() {
            Ok(line) => Bytes::from(line),
            Err(error) => {
                // Cannot happen with string-keyed maps; counted rather than lost silently.
                tracing::warn!(message = "Cannot serialise an alert; dropped.", rule = %alert.rule, %error);
                for sink in &self.sinks {
                    sink.metrics.dropped.inc();
                }
                return;
            }
        };
        for sink in &self.sinks {
            // A clone of `Bytes` shares the line, so N sinks cost one serialisation.
            sink.offer(line.clone());
        }
    }

    /// Stops accepting alerts and waits up to [`DEFAULT_SHUTDOWN_DEADLINE`] for the queues to
    /// drain; see [`AlertSinks::shutdown_within`].
    pub async fn shutdown(self) {
        self.shutdown_within(DEFAULT_SHUTDOWN_DEADLINE).await;
    }

    /// Stops accepting alerts and waits until `deadline` from now for the queued ones to be
    /// delivered (the file sink fsyncs its last batch). Sinks still busy then are stopped, and
    /// what they had not delivered is counted as dropped and logged.
    pub async fn shutdown_within(self, deadline: Duration) {
        let deadline = tokio::time::Instant::now() + deadline;
        let mut running = Vec::with_capacity(self.sinks.len());
        for sink in self.sinks {
            // Closing the queue lets the task end once it has drained it.
            drop(sink.tx);
            running.push((sink.name, sink.task, sink.pending, sink.metrics));
        }
        for (name, mut task, pending, metrics) in running {
            if tokio::time::timeout_at(deadline, &mut task).await.is_ok() {
                continue;
            }
            task.abort();
            // Wait for the abort so `pending` no longer moves.
            let _ = task.await;
            let lost = pending.swap(0, Ordering::Relaxed);
            metrics.dropped.inc_by(lost);
            tracing::warn!(
                message = "Alert sink did not drain before the shutdown deadline.",
                sink = %name,
                dropped = lost,
            );
        }
    }
}

/// What a sink task runs, decided (and its file opened) before anything is spawned.
enum Runner {
    Lines(LineWriter),
    Http(HttpTarget),
}

/// The blocking writers behind the stdout and file sinks.
enum LineWriter {
    Stdout,
    File(FileWriter),
}

impl LineWriter {
    /// Writes the lines, each followed by a newline, as one write; then flushes (stdout) or
    /// fsyncs (file) so the batch is durable before it is counted as sent.
    fn write_batch(&mut self, lines: &[Bytes]) -> io::Result<()> {
        let buf = join_lines(lines);
        match self {
            LineWriter::Stdout => {
                // The lock keeps other stdout writers (`--print-events`) from splitting a line.
                let mut out = io::stdout().lock();
                out.write_all(&buf)?;
                out.flush()
            }
            LineWriter::File(file) => file.write_batch(&buf),
        }
    }
}

fn join_lines(lines: &[Bytes]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    for line in lines {
        buf.extend_from_slice(line);
        buf.push(b'\n');
    }
    buf
}

/// An append-only alert file that survives errors and log rotation.
struct FileWriter {
    path: PathBuf,
    /// `None` after an error: the next batch reopens the path.
    file: Option<File>,
}

impl FileWriter {
    fn open(path: &Path) -> io::Result<Self> {
        Ok(Self {
            path: path.to_owned(),
            file: Some(open_append(path)?),
        })
    }

    fn write_batch(&mut self, buf: &[u8]) -> io::Result<()> {
        if let Some(file) = &self.file
            && rotated(&self.path, file)
        {
            tracing::info!(message = "Alert file was moved or replaced; reopening.", path = %self.path.display());
            self.file = None;
        }
        let file = match &mut self.file {
            Some(file) => file,
            None => self.file.insert(open_append(&self.path)?),
        };
        let before = file.metadata()?.len();
        let result = file.write_all(buf).and_then(|()| file.sync_data());
        if result.is_err() {
            // A full disk takes part of a batch: cut it off, so the file holds whole lines only
            // (if even that fails, the next open ends the torn line).
            let _ = file.set_len(before);
            self.file = None;
        }
        result
    }
}

/// Opens `path` for appending, creating it as 0600 (alerts name processes, paths and peers:
/// not for every local user). Reading is enabled only to check the last byte: a line torn by an
/// earlier failed write is ended with a newline, so the next alert starts a line of its own.
fn open_append(path: &Path) -> io::Result<File> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)?;
    let len = file.metadata()?.len();
    if len > 0 {
        let mut last = [0u8; 1];
        file.read_exact_at(&mut last, len - 1)?;
        if last[0] != b'\n' {
            file.write_all(b"\n")?;
        }
    }
    Ok(file)
}

/// The path no longer names the open file (logrotate moved it, or it was deleted): appending
/// would write where nobody looks.
fn rotated(path: &Path, file: &File) -> bool {
    match (std::fs::metadata(path), file.metadata()) {
        (Ok(on_disk), Ok(open)) => on_disk.ino() != open.ino() || on_disk.dev() != open.dev(),
        _ => true,
    }
}

/// The stdout/file sink task: drain up to `batch_max` lines, write them on the blocking pool
/// (disk and pipe writes would stall a runtime worker), count, repeat until the queue closes.
async fn run_line_sink(
    mut rx: mpsc::Receiver<Bytes>,
    writer: LineWriter,
    name: String,
    batch_max: usize,
    metrics: SinkMetrics,
    pending: Arc<AtomicU64>,
) {
    let writer = Arc::new(Mutex::new(writer));
    let mut batch = Vec::with_capacity(batch_max);
    while rx.recv_many(&mut batch, batch_max).await > 0 {
        let lines = std::mem::take(&mut batch);
        let n = lines.len() as u64;
        let writer = Arc::clone(&writer);
        let result = tokio::task::spawn_blocking(move || {
            // A panic in an earlier batch cannot leave the writer inconsistent: it reopens on
            // error, so the poisoned lock is simply taken over.
            let mut writer = writer.lock().unwrap_or_else(PoisonError::into_inner);
            writer.write_batch(&lines)
        })
        .await;
        let error = match result {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(error.to_string()),
            Err(join) => Some(join.to_string()),
        };
        match error {
            None => metrics.sent.inc_by(n),
            Some(error) => {
                metrics.errors.inc();
                metrics.dropped.inc_by(n);
                tracing::warn!(message = "Alert sink write failed; batch dropped.", sink = %name, alerts = n, %error);
            }
        }
        pending.fetch_sub(n, Ordering::Relaxed);
    }
}

/// The HTTP sink task: one alert at a time, in order, each retried with backoff. Taking one at a
/// time keeps the queue the only buffer, so its bound is the real bound.
async fn run_http_sink(
    mut rx: mpsc::Receiver<Bytes>,
    target: HttpTarget,
    options: HttpOptions,
    metrics: SinkMetrics,
    pending: Arc<AtomicU64>,
) {
    while let Some(body) = rx.recv().await {
        if deliver(&target, &options, body, &metrics).await {
            metrics.sent.inc();
        } else {
            metrics.dropped.inc();
        }
        pending.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Posts one alert, retrying what may succeed later; `false` once it is given up.
async fn deliver(
    target: &HttpTarget,
    options: &HttpOptions,
    body: Bytes,
    metrics: &SinkMetrics,
) -> bool {
    let attempts = options.max_attempts.max(1);
    let mut backoff = options.backoff_initial;
    for attempt in 1..=attempts {
        let result = match tokio::time::timeout(options.timeout, post(target, body.clone())).await {
            Ok(result) => result,
            Err(_) => Err(PostError::Timeout(options.timeout)),
        };
        let error = match result {
            Ok(()) => return true,
            Err(error) => error,
        };
        metrics.errors.inc();
        if attempt == attempts || !error.is_retryable() {
            tracing::warn!(
                message = "Alert HTTP delivery failed; alert dropped.",
                url = %target.url,
                attempt,
                %error,
            );
            return false;
        }
        tracing::debug!(message = "Alert HTTP delivery failed; retrying.", url = %target.url, attempt, %error);
        tokio::time::sleep(backoff).await;
        backoff = backoff.saturating_mul(2).min(options.backoff_max);
    }
    false
}

/// Why one HTTP attempt failed.
#[derive(Debug, thiserror::Error)]
enum PostError {
    #[error("connect failed: {0}")]
    Connect(#[source] io::Error),
    #[error("HTTP exchange failed: {0}")]
    Http(#[source] hyper::Error),
    #[error("cannot build the request: {0}")]
    Request(#[source] hyper::http::Error),
    #[error("endpoint answered {0}")]
    Status(StatusCode),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

impl PostError {
    /// Client errors other than timeouts and rate limits mean the endpoint rejects this alert
    /// as it is; sending it again would only fail again.
    fn is_retryable(&self) -> bool {
        match self {
            PostError::Status(status) if status.is_client_error() => {
                matches!(
                    *status,
                    StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS
                )
            }
            PostError::Request(_) => false,
            _ => true,
        }
    }
}

/// Aborts the connection task when the attempt ends, however it ends (success, error, or the
/// timeout dropping the attempt), so a hung endpoint cannot pin sockets.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One POST over a fresh HTTP/1.1 connection (`Connection: close`). Alerts are rare after
/// aggregation, and a fresh connection never fails on a peer's idle-close race, which keep-alive
/// reuse would count as delivery errors.
async fn post(target: &HttpTarget, body: Bytes) -> Result<(), PostError> {
    let stream = TcpStream::connect(target.connect_addr.as_str())
        .await
        .map_err(PostError::Connect)?;
    // Best effort: the request is one small write either way.
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(PostError::Http)?;
    let _connection = AbortOnDrop(tokio::spawn(async move {
        // Its errors surface through `send_request` as well.
        let _ = connection.await;
    }));
    let request = Request::post(target.path.as_str())
        .header(HOST, target.authority.as_str())
        .header(CONTENT_TYPE, "application/json")
        .header(CONNECTION, "close")
        .header(USER_AGENT, concat!("habitd/", env!("CARGO_PKG_VERSION")))
        .body(Full::new(body))
        .map_err(PostError::Request)?;
    let response = sender
        .send_request(request)
        .await
        .map_err(PostError::Http)?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(PostError::Status(status))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
#[path = "sinks_tests.rs"]
mod tests;
