//! The habitd HTTP API, as a small blocking client.
//!
//! One [`Client`] per invocation: it knows the API's base URL and, if given, the bearer token.
//! Every call returns the body of a 2xx answer or an [`ApiError`] that says what an operator
//! should do next (start the daemon, pass a token, fix the request). The API is plain HTTP on
//! the node (loopback by default), so the client has no TLS stack and ignores proxy
//! environment variables: a `HTTP_PROXY` meant for the internet must not capture the
//! connection to the local daemon.
//!
//! Workload keys contain `/` and `:`. A key travels in a URL as *one* path segment:
//! [`encode_key_segment`] percent-encodes everything but unreserved characters, `:` and `@`.
//!
//! The bodies are the wire types of [`habit_profiles::api`], the very types habitd serves, so
//! that client and daemon cannot drift apart.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use habit_profiles::api::{ErrorBody, HeldAction, HeldDecision, ModeRequest};
pub use habit_profiles::api::{Mode, WorkloadView};
use habit_profiles::observation::Dimension;
use habit_profiles::workload::{ImageRef, WorkloadKey};

/// The API address habitd listens on unless told otherwise (`habitd run --listen`).
pub const DEFAULT_API: &str = "http://127.0.0.1:9477";

/// Largest answer body read, in bytes. A baseline is bounded by the profile limits to a few
/// MB; this leaves room without letting a broken server fill memory.
const MAX_BODY_BYTES: u64 = 64 * 1024 * 1024;
/// How long a connection may take to open. The daemon is local: a slow connect means it is
/// wedged or the address is wrong, and waiting longer does not help.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a whole call may take (a baseline import validates and stores a few MB).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest server message quoted when an error answer is not the API's JSON.
const MAX_QUOTED_BODY: usize = 300;

/// habitctl's `mode` argument: an API [`Mode`] by its name, each with its help.
pub fn mode_parser() -> impl TypedValueParser<Value = Mode> {
    let values = Mode::ALL.map(|mode| PossibleValue::new(mode.as_str()).help(mode_help(mode)));
    PossibleValuesParser::new(values).try_map(|name| name.parse::<Mode>())
}

/// What a mode does, for an operator.
fn mode_help(mode: Mode) -> &'static str {
    match mode {
        Mode::Learn => "Go back to learning, adding to what was learned so far",
        Mode::Detect => {
            "Stop learning and score against the baseline now; if learning had not converged, \
             the baseline is frozen from what was learned so far and marked partial"
        }
        Mode::Relearn => "Discard what was learned and learn from scratch",
    }
}

/// Why an API call failed. Each message ends in what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The `--api` value is not a URL this client can use.
    #[error("--api {url:?} {reason}")]
    BadUrl {
        /// The value given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Nothing answered at the address (refused, unresolvable, timed out while connecting).
    #[error("cannot reach habitd at {url}: {cause} (is `habitd run` running? --api)")]
    Unreachable {
        /// The API base URL.
        url: String,
        /// What the network said.
        cause: String,
    },
    /// The daemon answered 401: no token, or a wrong one.
    #[error(
        "the API refused the token: pass --token-file with the token habitd reads from \
         --api-token-file{}{}",
        token_file.as_ref().map_or_else(
            || " (no token was sent)".to_owned(),
            |file| format!(" ({} was not accepted)", file.display()),
        ),
        server_says(message)
    )]
    Unauthorized {
        /// The token file used, if any.
        token_file: Option<PathBuf>,
        /// The server's `error`, if it sent one.
        message: Option<String>,
    },
    /// The daemon answered 4xx or 5xx; `message` is its `error` (or the start of its body).
    #[error("{message} (HTTP {status} from {method} {path})")]
    Status {
        /// The HTTP status.
        status: u16,
        /// What the server said.
        message: String,
        /// The request method.
        method: &'static str,
        /// The request path.
        path: String,
    },
    /// The connection broke or the answer was not valid HTTP.
    #[error("talking to habitd at {url} failed: {source}")]
    Transport {
        /// The API base URL.
        url: String,
        /// The client's error.
        #[source]
        source: ureq::Error,
    },
    /// A 2xx answer whose body is not what the API promises.
    #[error("habitd's answer to {method} {path} is not the expected JSON: {source}")]
    BadAnswer {
        /// The request method.
        method: &'static str,
        /// The request path.
        path: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
}

fn server_says(message: &Option<String>) -> String {
    message
        .as_deref()
        .map_or_else(String::new, |m| format!("; habitd said: {m}"))
}

impl ApiError {
    /// The HTTP status of a 4xx/5xx answer, if that is what this is.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Unauthorized { .. } => Some(401),
            ApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// The bearer token and the file it came from (named in errors).
#[derive(Debug, Clone)]
pub struct Token {
    value: String,
    file: PathBuf,
}

impl Token {
    /// Reads a token file: the token is its content with surrounding whitespace trimmed.
    pub fn read(file: &Path) -> anyhow::Result<Token> {
        use anyhow::Context as _;
        let content = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the token file {}", file.display()))?;
        let value = content.trim();
        if value.is_empty() {
            anyhow::bail!("the token file {} is empty", file.display());
        }
        if value.chars().any(char::is_control) {
            anyhow::bail!(
                "the token file {} has more than one line: it must hold the token alone",
                file.display()
            );
        }
        Ok(Token {
            value: value.to_owned(),
            file: file.to_owned(),
        })
    }
}

/// The workload key an operator means. Keys of host processes (`host`, `host:<unit>`) and
/// provisional keys (`container:…`, `cgroup:…`) are taken as they are; anything else that
/// parses as an image reference is normalised like Docker does, as habitd files it
/// (`nginx:1.25` → `docker.io/library/nginx:1.25`); the rest is taken as it is.
pub fn workload_key(given: &str) -> WorkloadKey {
    const VERBATIM_PREFIXES: [&str; 3] = ["host:", "container:", "cgroup:"];
    if given == "host" || VERBATIM_PREFIXES.iter().any(|p| given.starts_with(p)) {
        return WorkloadKey::from_raw(given);
    }
    ImageRef::parse_normalized(given).map_or_else(|_| WorkloadKey::from_raw(given), |r| r.key())
}

/// Percent-encodes a workload key as one URL path segment: unreserved characters
/// (`A-Z a-z 0-9 - . _ ~`), `:` and `@` stay, every other byte (`/` above all) becomes `%XX`.
pub fn encode_key_segment(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 8);
    for byte in key.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~:@".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Normalises an `--api` value to a base URL without a trailing slash. `host:port` alone
/// means `http://host:port`.
pub fn normalise_base_url(api: &str) -> Result<String, ApiError> {
    let bad = |reason| ApiError::BadUrl {
        url: api.to_owned(),
        reason,
    };
    let api = api.trim();
    if api.is_empty() {
        return Err(bad("is empty"));
    }
    let url = if api.starts_with("https://") {
        return Err(bad(
            "uses https: habitd serves plain HTTP (on loopback, or behind your own TLS proxy); \
             use http://",
        ));
    } else if api.starts_with("http://") {
        api.to_owned()
    } else if api.contains("://") {
        return Err(bad("must be an http:// URL"));
    } else {
        format!("http://{api}")
    };
    let url = url.trim_end_matches('/').to_owned();
    if url.len() <= "http://".len() {
        return Err(bad("names no host"));
    }
    Ok(url)
}

/// The habitd API.
pub struct Client {
    agent: ureq::Agent,
    base: String,
    token: Option<Token>,
}

impl Client {
    /// A client of the API at `api` (see [`normalise_base_url`]), sending `token` if given.
    pub fn new(api: &str, token: Option<Token>) -> Result<Client, ApiError> {
        let base = normalise_base_url(api)?;
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_global(Some(CALL_TIMEOUT))
            .user_agent(concat!("habitctl/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Client {
            agent: config.into(),
            base,
            token,
        })
    }

    /// `GET /api/v1/workloads`: the raw JSON array.
    pub fn workloads_json(&self) -> Result<serde_json::Value, ApiError> {
        let path = "/api/v1/workloads";
        let body = self.call("GET", path, None)?;
        parse_json(&body, "GET", path)
    }

    /// `GET /api/v1/workloads`, typed.
    pub fn workloads(&self) -> Result<Vec<WorkloadView>, ApiError> {
        let path = "/api/v1/workloads";
        let body = self.call("GET", path, None)?;
        parse_json(&body, "GET", path)
    }

    /// `POST /api/v1/workloads/{key}/mode`: the workload afterwards.
    pub fn set_mode(&self, key: &WorkloadKey, mode: Mode) -> Result<serde_json::Value, ApiError> {
        let path = format!(
            "/api/v1/workloads/{}/mode",
            encode_key_segment(key.as_str())
        );
        let request = to_json(&ModeRequest { mode });
        let body = self.call("POST", &path, Some(request.as_bytes()))?;
        parse_json(&body, "POST", &path)
    }

    /// `GET /api/v1/workloads/{key}/held`: the items a rule flagged during learning.
    pub fn held(&self, key: &WorkloadKey) -> Result<serde_json::Value, ApiError> {
        let path = format!(
            "/api/v1/workloads/{}/held",
            encode_key_segment(key.as_str())
        );
        let body = self.call("GET", &path, None)?;
        parse_json(&body, "GET", &path)
    }

    /// `POST /api/v1/workloads/{key}/held`: approve (learn) or discard one held item.
    pub fn decide_held(
        &self,
        key: &WorkloadKey,
        approve: bool,
        dimension: Dimension,
        item: &str,
    ) -> Result<serde_json::Value, ApiError> {
        let path = format!(
            "/api/v1/workloads/{}/held",
            encode_key_segment(key.as_str())
        );
        let request = to_json(&HeldDecision {
            action: if approve {
                HeldAction::Approve
            } else {
                HeldAction::Discard
            },
            dimension,
            item: item.to_owned(),
        });
        let body = self.call("POST", &path, Some(request.as_bytes()))?;
        parse_json(&body, "POST", &path)
    }

    /// `GET /api/v1/baselines/{key}`: the baseline file as the daemon sent it.
    pub fn export_baseline(&self, key: &WorkloadKey) -> Result<Vec<u8>, ApiError> {
        let path = format!("/api/v1/baselines/{}", encode_key_segment(key.as_str()));
        self.call("GET", &path, None)
    }

    /// `PUT /api/v1/baselines/{key}`: the daemon's summary of what it stored.
    pub fn import_baseline(
        &self,
        key: &WorkloadKey,
        file: &[u8],
    ) -> Result<serde_json::Value, ApiError> {
        let path = format!("/api/v1/baselines/{}", encode_key_segment(key.as_str()));
        let body = self.call("PUT", &path, Some(file))?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(serde_json::Value::Null);
        }
        parse_json(&body, "PUT", &path)
    }

    /// One request; the body of a 2xx answer, or the error.
    fn call(
        &self,
        method: &'static str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<Vec<u8>, ApiError> {
        let url = format!("{}{path}", self.base);
        let auth = self
            .token
            .as_ref()
            .map(|token| format!("Bearer {}", token.value));
        // `body` decides the verb's shape: the API's GETs have none, its POST and PUT have one.
        let result = match body {
            None => {
                let mut request = self.agent.get(&url).header("Accept", "application/json");
                if let Some(auth) = &auth {
                    request = request.header("Authorization", auth);
                }
                request.call()
            }
            Some(body) => {
                let mut request = if method == "PUT" {
                    self.agent.put(&url)
                } else {
                    self.agent.post(&url)
                };
                request = request.header("Accept", "application/json");
                if let Some(auth) = &auth {
                    request = request.header("Authorization", auth);
                }
                request.content_type("application/json").send(body)
            }
        };
        let mut response = result.map_err(|e| self.transport_error(e))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_BODY_BYTES)
            .read_to_vec()
            .map_err(|e| self.transport_error(e))?;
        if (200..300).contains(&status) {
            return Ok(body);
        }
        let message = error_message(&body);
        if status == 401 {
            return Err(ApiError::Unauthorized {
                token_file: self.token.as_ref().map(|t| t.file.clone()),
                message,
            });
        }
        let message = message.unwrap_or_else(|| {
            response
                .status()
                .canonical_reason()
                .unwrap_or("error")
                .to_owned()
        });
        Err(ApiError::Status {
            status,
            message,
            method,
            path: path.to_owned(),
        })
    }

    fn transport_error(&self, error: ureq::Error) -> ApiError {
        let unreachable = |cause: String| ApiError::Unreachable {
            url: self.base.clone(),
            cause,
        };
        match error {
            ureq::Error::Io(e) if is_connect_failure(&e) => unreachable(e.to_string()),
            ureq::Error::HostNotFound => unreachable("host not found".to_owned()),
            ureq::Error::ConnectionFailed => unreachable("connection failed".to_owned()),
            ureq::Error::Timeout(timeout) => unreachable(format!("timed out ({timeout})")),
            ureq::Error::BadUri(uri) => ApiError::BadUrl {
                url: uri,
                reason: "is not a valid URL",
            },
            source => ApiError::Transport {
                url: self.base.clone(),
                source,
            },
        }
    }
}

fn is_connect_failure(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::AddrNotAvailable
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
            | io::ErrorKind::TimedOut
    )
}

fn parse_json<T: serde::de::DeserializeOwned>(
    body: &[u8],
    method: &'static str,
    path: &str,
) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|source| ApiError::BadAnswer {
        method,
        path: path.to_owned(),
        source,
    })
}

/// A request body. The API's types are plain structs of strings and enums: they encode.
fn to_json(body: &impl serde::Serialize) -> String {
    serde_json::to_string(body).unwrap_or_default()
}

/// The `error` of an API error answer, or the start of a body that is not the API's JSON.
fn error_message(body: &[u8]) -> Option<String> {
    if let Ok(ErrorBody { error }) = serde_json::from_slice::<ErrorBody>(body) {
        return Some(error);
    }
    if let Ok(serde_json::Value::Object(object)) = serde_json::from_slice(body)
        && let Some(error) = object.get("error")
    {
        return Some(error.to_string());
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let mut quoted: String = text.chars().take(MAX_QUOTED_BODY).collect();
    if quoted.len() < text.len() {
        quoted.push('…');
    }
    Some(quoted)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn key_is_one_path_segment() {
        assert_eq!(
            encode_key_segment("docker.io/library/nginx:1.25"),
            "docker.io%2Flibrary%2Fnginx:1.25"
        );
        assert_eq!(
            encode_key_segment("localhost:5000/a/b@sha256:ab12"),
            "localhost:5000%2Fa%2Fb@sha256:ab12"
        );
        assert_eq!(encode_key_segment("host:ssh.service"), "host:ssh.service");
        assert_eq!(encode_key_segment("a b?c#d%e"), "a%20b%3Fc%23d%25e");
        assert_eq!(encode_key_segment("ü"), "%C3%BC");
        assert!(!encode_key_segment("x/y/z").contains('/'));
    }

    #[test]
    fn keys_are_normalised_like_docker_except_host_and_provisional() {
        assert_eq!(
            workload_key("nginx:1.25").as_str(),
            "docker.io/library/nginx:1.25"
        );
        assert_eq!(
            workload_key("docker.io/library/nginx:1.25").as_str(),
            "docker.io/library/nginx:1.25"
        );
        assert_eq!(workload_key("host").as_str(), "host");
        assert_eq!(
            workload_key("host:ssh.service").as_str(),
            "host:ssh.service"
        );
        assert_eq!(
            workload_key("container:0123456789ab").as_str(),
            "container:0123456789ab"
        );
        assert_eq!(workload_key("cgroup:42").as_str(), "cgroup:42");
        assert_eq!(workload_key("Not A Ref").as_str(), "Not A Ref");
    }

    #[test]
    fn base_urls() {
        assert_eq!(
            normalise_base_url("http://127.0.0.1:9477/").unwrap(),
            "http://127.0.0.1:9477"
        );
        assert_eq!(
            normalise_base_url("127.0.0.1:9477").unwrap(),
            "http://127.0.0.1:9477"
        );
        assert_eq!(
            normalise_base_url("http://node/habitd/").unwrap(),
            "http://node/habitd"
        );
        let e = normalise_base_url("https://x").unwrap_err().to_string();
        assert!(e.contains("plain HTTP"), "{e}");
        assert!(normalise_base_url("ftp://x").is_err());
        assert!(normalise_base_url("http://").is_err());
        assert!(normalise_base_url(" ").is_err());
    }

    #[test]
    fn error_messages_come_from_the_body() {
        assert_eq!(
            error_message(br#"{"error": "unknown mode `x`"}"#).as_deref(),
            Some("unknown mode `x`")
        );
        assert_eq!(
            error_message(br#"{"error": {"field": "a"}}"#).as_deref(),
            Some(r#"{"field":"a"}"#)
        );
        assert_eq!(
            error_message(b"  plain text\n").as_deref(),
            Some("plain text")
        );
        assert_eq!(error_message(b""), None);
        let long = "x".repeat(1000);
        assert_eq!(
            error_message(long.as_bytes()).unwrap().chars().count(),
            MAX_QUOTED_BODY + 1
        );
    }

    #[test]
    fn unauthorized_names_the_flag() {
        let e = ApiError::Unauthorized {
            token_file: None,
            message: Some("missing bearer token".into()),
        }
        .to_string();
        assert!(
            e.starts_with("the API refused the token: pass --token-file"),
            "{e}"
        );
        assert!(e.contains("no token was sent"), "{e}");
        assert!(e.contains("habitd said: missing bearer token"), "{e}");
        let e = ApiError::Unauthorized {
            token_file: Some("/etc/habitd/token".into()),
            message: None,
        }
        .to_string();
        assert!(e.contains("/etc/habitd/token was not accepted"), "{e}");
    }

    #[test]
    fn unreachable_daemon_is_named() {
        // Bind, learn the port, close: nothing listens there any more.
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let client = Client::new(&format!("http://127.0.0.1:{port}"), None).unwrap();
        let e = client.workloads().unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("cannot reach habitd at http://127.0.0.1:{port}: ")),
            "{e}"
        );
        assert!(e.contains("is `habitd run` running? --api"), "{e}");
    }

    #[test]
    fn workloads_tolerate_missing_fields() {
        let w: Vec<WorkloadView> = serde_json::from_str(
            r#"[{"key": "host", "state": "learning", "future_field": 1,
                 "learning": {"started_at": 0, "elapsed_secs": 0.0, "progress": 0.0}}]"#,
        )
        .unwrap();
        assert_eq!(w[0].key.as_str(), "host");
        assert_eq!(w[0].held, 0);
        assert_eq!(w[0].unstable_reason, None);
    }

    #[test]
    fn modes_parse_by_name() {
        let cmd = clap::Command::new("t").arg(clap::Arg::new("mode").value_parser(mode_parser()));
        for mode in Mode::ALL {
            let matches = cmd
                .clone()
                .try_get_matches_from(["t", mode.as_str()])
                .unwrap();
            assert_eq!(matches.get_one::<Mode>("mode"), Some(&mode));
        }
        assert!(cmd.try_get_matches_from(["t", "sleep"]).is_err());
    }

    #[test]
    fn token_files_are_trimmed_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "  s3cret\n").unwrap();
        assert_eq!(Token::read(&path).unwrap().value, "s3cret");
        std::fs::write(&path, "\n").unwrap();
        let e = Token::read(&path).unwrap_err().to_string();
        assert!(e.contains("is empty"), "{e}");
        std::fs::write(&path, "a\nb\n").unwrap();
        let e = Token::read(&path).unwrap_err().to_string();
        assert!(e.contains("more than one line"), "{e}");
        let e = format!("{:#}", Token::read(&dir.path().join("none")).unwrap_err());
        assert!(e.contains("cannot read the token file"), "{e}");
    }
}
