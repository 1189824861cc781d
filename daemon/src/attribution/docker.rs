//! [`ContainerRuntime`] for the Docker Engine API, spoken as HTTP/1.1 over its unix socket.
//!
//! Two requests describe a container: `GET /containers/{id}/json` (configured image, image id,
//! name, labels) and `GET /images/{image id}/json` (repository digests, and the tags of an image
//! that was run by id). Each opens its own connection: attribution asks once per container, so
//! a connection pool would only add state.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use habit_profiles::workload::ImageRef;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

use super::ResolveError;
use super::runtime::{ContainerInfo, ContainerRuntime, InspectFuture};

/// Where dockerd listens by default.
pub const DEFAULT_DOCKER_SOCKET: &str = "/var/run/docker.sock";
/// How long one request may take: attribution waits for it, so a hung daemon must not stall
/// the pipeline for long.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest response body accepted; an inspect answer is a few kB.
const MAX_BODY_BYTES: usize = 4 << 20;
/// How much of an error body to quote in an error.
const MAX_ERROR_MESSAGE: usize = 200;

/// The Docker Engine, reached on a unix socket.
#[derive(Debug, Clone)]
pub struct DockerRuntime {
    socket: PathBuf,
    timeout: Duration,
    endpoint: String,
}

impl Default for DockerRuntime {
    fn default() -> Self {
        Self::new(DEFAULT_DOCKER_SOCKET)
    }
}

impl DockerRuntime {
    /// A client of the Docker Engine listening on `socket`. Nothing is connected until asked.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        let socket = socket.into();
        Self {
            endpoint: format!("Docker at {}", socket.display()),
            socket,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Describes a container; `Ok(None)` if Docker does not know it.
    pub async fn inspect_container(&self, id: &str) -> Result<Option<ContainerInfo>, ResolveError> {
        validate_id(id)?;
        let path = format!("/containers/{id}/json");
        let Some(container) = self.get_json::<ContainerJson>(&path).await? else {
            return Ok(None);
        };
        let image = match container.image.as_deref() {
            Some(image_id) if !image_id.is_empty() => {
                validate_id(image_id)?;
                self.get_json::<ImageJson>(&format!("/images/{image_id}/json"))
                    .await?
            }
            _ => None,
        };
        describe(container, image.unwrap_or_default()).map(Some)
    }

    /// GETs a JSON document; `Ok(None)` on 404.
    async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<Option<T>, ResolveError> {
        let (status, body, what) = self.send(Method::GET, path).await?;
        match status {
            StatusCode::OK => {
                serde_json::from_slice(&body)
                    .map(Some)
                    .map_err(|source| ResolveError::Json {
                        endpoint: self.endpoint.clone(),
                        what,
                        source,
                    })
            }
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(ResolveError::Status {
                endpoint: self.endpoint.clone(),
                what,
                status: status.as_u16(),
                message: error_message(&body),
            }),
        }
    }

    /// One request within `runtime.timeout`: status, body, and what was asked (for errors).
    async fn send(
        &self,
        method: Method,
        path: &str,
    ) -> Result<(StatusCode, Bytes, String), ResolveError> {
        let what = format!("{method} {path}");
        let (status, body) = tokio::time::timeout(self.timeout, self.request(method, path, &what))
            .await
            .map_err(|_| ResolveError::Timeout {
                endpoint: self.endpoint.clone(),
                what: what.clone(),
                after: self.timeout,
            })??;
        Ok((status, body, what))
    }

    /// How long one request may take (`runtime.timeout`; the response's stop adds its grace).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// `POST /containers/{id}/{verb}` (`pause`, `stop?t=N`), for the response: `Ok(true)` when
    /// done (204) or already so (304), `Ok(false)` when Docker does not know the container.
    pub async fn container_action(&self, id: &str, verb: &str) -> Result<bool, ResolveError> {
        validate_id(id)?;
        let path = format!("/containers/{id}/{verb}");
        let (status, body, what) = self.send(Method::POST, &path).await?;
        match status {
            StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED | StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(ResolveError::Status {
                endpoint: self.endpoint.clone(),
                what,
                status: status.as_u16(),
                message: error_message(&body),
            }),
        }
    }

    /// One HTTP/1.1 request without a body on a fresh connection; returns status and body.
    async fn request(
        &self,
        method: Method,
        path: &str,
        what: &str,
    ) -> Result<(StatusCode, Bytes), ResolveError> {
        let stream = UnixStream::connect(&self.socket).await.map_err(|source| {
            ResolveError::DockerUnreachable {
                socket: self.socket.clone(),
                source,
            }
        })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.http_error(what, e))?;
        // The connection task ends by itself once `sender` is dropped.
        tokio::spawn(connection);
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "docker")
            .header(header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(|e| self.http_error(what, e))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| self.http_error(what, e))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|e| self.http_error(what, e))?
            .to_bytes();
        Ok((status, body))
    }

    /// Wraps an HTTP-level error with the endpoint and request.
    fn http_error(
        &self,
        what: &str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> ResolveError {
        ResolveError::Http {
            endpoint: self.endpoint.clone(),
            what: what.to_owned(),
            source: source.into(),
        }
    }
}

impl ContainerRuntime for DockerRuntime {
    fn name(&self) -> &str {
        "docker"
    }

    fn inspect<'a>(&'a self, id: &'a str) -> InspectFuture<'a> {
        Box::pin(self.inspect_container(id))
    }
}

/// The part of `GET /containers/{id}/json` attribution needs.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ContainerJson {
    id: String,
    #[serde(default)]
    name: String,
    /// The image id, `sha256:…`.
    #[serde(default)]
    image: Option<String>,
    #[serde(default)]
    config: Option<ContainerConfigJson>,
    #[serde(default)]
    state: Option<StateJson>,
    #[serde(default)]
    network_settings: Option<NetworkSettingsJson>,
}

/// `NetworkSettings` of a container: its address on each network it is attached to (empty
/// strings for `--network host` and `none`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NetworkSettingsJson {
    /// The default bridge's address (legacy field, also set for `bridge`).
    #[serde(default, rename = "IPAddress")]
    ip_address: Option<String>,
    #[serde(default)]
    networks: Option<BTreeMap<String, EndpointJson>>,
}

/// One network endpoint of a container.
#[derive(Debug, Default, Deserialize)]
struct EndpointJson {
    #[serde(default, rename = "IPAddress")]
    ip_address: Option<String>,
    #[serde(default, rename = "GlobalIPv6Address")]
    global_ipv6_address: Option<String>,
}

impl NetworkSettingsJson {
    /// Every address the container has, parsed, without duplicates.
    fn addresses(&self) -> Vec<std::net::IpAddr> {
        let endpoints = self.networks.iter().flat_map(|n| n.values());
        let mut out: Vec<std::net::IpAddr> = self
            .ip_address
            .iter()
            .chain(endpoints.flat_map(|e| e.ip_address.iter().chain(&e.global_ipv6_address)))
            .filter_map(|a| a.parse().ok())
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// `State` of a container: the host pid of its init process (0 when not running).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StateJson {
    #[serde(default)]
    pid: u32,
}

/// `Config` of a container.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ContainerConfigJson {
    /// The image as the user or orchestrator wrote it.
    #[serde(default)]
    image: Option<String>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
}

/// The part of `GET /images/{id}/json` attribution needs.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ImageJson {
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    #[serde(default)]
    repo_digests: Option<Vec<String>>,
}

/// Builds the description from Docker's two answers.
fn describe(container: ContainerJson, image: ImageJson) -> Result<ContainerInfo, ResolveError> {
    let config = container.config.unwrap_or_default();
    let configured = config.image.unwrap_or_default();
    let image_id = container.image.filter(|i| !i.is_empty());
    let image_ref = image_ref_of(&container.id, &configured, image_id.as_deref(), &image)?;
    let digest = image_ref.digest.clone().or_else(|| {
        repo_digest(
            &image_ref,
            image.repo_digests.as_deref().unwrap_or_default(),
        )
    });
    let name = container.name.trim_start_matches('/').to_owned();
    let mut info = ContainerInfo::new(
        container.id,
        name,
        configured,
        image_ref,
        config.labels.unwrap_or_default(),
    );
    info.image_id = image_id;
    info.image_digest = digest;
    info.init_pid = container.state.map(|s| s.pid).filter(|p| *p != 0);
    info.addresses = container
        .network_settings
        .map(|n| n.addresses())
        .unwrap_or_default();
    Ok(info)
}

/// The normalised reference of a container's image. A container created from an image id
/// (`docker run 4135…`) has no name in its config; its image's first tag, else first
/// repository digest, names it then, and an image with neither cannot be keyed.
fn image_ref_of(
    container: &str,
    configured: &str,
    image_id: Option<&str>,
    image: &ImageJson,
) -> Result<ImageRef, ResolveError> {
    if !is_image_id_reference(configured, image_id) {
        return ImageRef::parse_normalized(configured).map_err(|source| ResolveError::ImageRef {
            container: container.to_owned(),
            image: configured.to_owned(),
            source,
        });
    }
    let tags = image.repo_tags.iter().flatten();
    let digests = image.repo_digests.iter().flatten();
    tags.chain(digests)
        .find_map(|name| ImageRef::parse_normalized(name).ok())
        .ok_or_else(|| ResolveError::UnnamedImage {
            container: container.to_owned(),
            image_id: image_id.unwrap_or(configured).to_owned(),
        })
}

/// Whether the configured image is (a prefix of) the image id rather than a name, as Docker
/// accepts `sha256:<hex>`, the 64-hex id and any unique hex prefix of it.
fn is_image_id_reference(configured: &str, image_id: Option<&str>) -> bool {
    let bare = configured.strip_prefix("sha256:").unwrap_or(configured);
    let hex = !bare.is_empty() && bare.bytes().all(|b| b.is_ascii_hexdigit());
    let id_hex = image_id.map(|id| id.strip_prefix("sha256:").unwrap_or(id));
    hex && (bare.len() == 64 || id_hex.is_some_and(|id| id.starts_with(bare)))
}

/// The digest among `RepoDigests` (`name@sha256:…`) of the image's own repository, else the
/// first one: the same content may have been pushed under several names.
fn repo_digest(image_ref: &ImageRef, repo_digests: &[String]) -> Option<String> {
    let parsed: Vec<ImageRef> = repo_digests
        .iter()
        .filter_map(|d| ImageRef::parse_normalized(d).ok())
        .collect();
    parsed
        .iter()
        .find(|d| d.repository == image_ref.repository)
        .or(parsed.first())
        .and_then(|d| d.digest.clone())
}

/// Refuses ids that could change the request path; real ids are hex or `sha256:<hex>`.
fn validate_id(id: &str) -> Result<(), ResolveError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b':'));
    if ok {
        Ok(())
    } else {
        Err(ResolveError::InvalidContainerId { id: id.to_owned() })
    }
}

/// Docker's `{"message": …}` error text, else the start of the body.
fn error_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct ErrorJson {
        message: String,
    }
    match serde_json::from_slice::<ErrorJson>(body) {
        Ok(e) => e.message,
        Err(_) => String::from_utf8_lossy(body)
            .chars()
            .take(MAX_ERROR_MESSAGE)
            .collect(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const IMAGE_ID: &str =
        "sha256:413574f694459e8bd07e10db7c42f0033eaceffe6c10636dbbae02701f6919c4";
    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn container(configured: &str) -> ContainerJson {
        ContainerJson {
            id: "c".repeat(64),
            name: "/web".to_owned(),
            image: Some(IMAGE_ID.to_owned()),
            state: None,
            network_settings: None,
            config: Some(ContainerConfigJson {
                image: Some(configured.to_owned()),
                labels: Some(BTreeMap::from([(
                    "io.kubernetes.pod.name".to_owned(),
                    "p1".to_owned(),
                )])),
            }),
        }
    }

    #[test]
    fn decodes_docker_container_json() {
        let json = r#"{"Id":"abc","Name":"/x","Image":"sha256:1","Config":{"Image":"nginx","Labels":null}}"#;
        let c: ContainerJson = serde_json::from_str(json).unwrap();
        assert_eq!(c.config.unwrap().image.as_deref(), Some("nginx"));
        let i: ImageJson =
            serde_json::from_str(r#"{"RepoTags":["a:1"],"RepoDigests":null}"#).unwrap();
        assert_eq!(i.repo_tags.unwrap(), ["a:1"]);
    }

    #[test]
    fn named_image_with_matching_repo_digest() {
        let image = ImageJson {
            repo_tags: Some(vec!["nginx:1.25".to_owned()]),
            repo_digests: Some(vec![
                format!("quay.io/mirror/nginx@{}", DIGEST.replace('0', "1")),
                format!("nginx@{DIGEST}"),
            ]),
        };
        let info = describe(container("nginx:1.25"), image).unwrap();
        assert_eq!(
            info.image_ref.key().as_str(),
            "docker.io/library/nginx:1.25"
        );
        assert_eq!(info.image_digest.as_deref(), Some(DIGEST));
        assert_eq!(info.image_id.as_deref(), Some(IMAGE_ID));
        assert_eq!(info.name, "web");
        assert_eq!(info.image, "nginx:1.25");
        assert_eq!(info.k8s_pod.as_deref(), Some("p1"));
    }

    #[test]
    fn first_repo_digest_when_none_matches() {
        let image = ImageJson {
            repo_tags: None,
            repo_digests: Some(vec![format!("quay.io/a/b@{DIGEST}")]),
        };
        let info = describe(container("user/app:2"), image).unwrap();
        assert_eq!(info.image_digest.as_deref(), Some(DIGEST));
        assert_eq!(info.image_ref.key().as_str(), "docker.io/user/app:2");
    }

    #[test]
    fn image_run_by_id_is_named_by_its_tag() {
        let image = ImageJson {
            repo_tags: Some(vec!["busybox:1.36".to_owned()]),
            repo_digests: None,
        };
        for configured in [IMAGE_ID, &IMAGE_ID[7..], &IMAGE_ID[7..19]] {
            let info = describe(container(configured), image.clone()).unwrap();
            assert_eq!(
                info.image_ref.key().as_str(),
                "docker.io/library/busybox:1.36",
                "{configured}"
            );
        }
        let err = describe(container(&IMAGE_ID[7..19]), ImageJson::default()).unwrap_err();
        assert!(matches!(err, ResolveError::UnnamedImage { .. }), "{err}");
    }

    #[test]
    fn hex_looking_names_that_are_not_the_id_stay_names() {
        // "cafe" is a valid repository name and not a prefix of the image id.
        let info = describe(container("cafe"), ImageJson::default()).unwrap();
        assert_eq!(
            info.image_ref.key().as_str(),
            "docker.io/library/cafe:latest"
        );
    }

    #[test]
    fn invalid_configured_image_names_the_container() {
        let err = describe(container("Bad/Name"), ImageJson::default()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("Bad/Name") && text.contains(&"c".repeat(64)),
            "{text}"
        );
    }

    #[test]
    fn ids_that_could_escape_the_path_are_refused() {
        for bad in ["", "../images", "a/b", "a?b", "a b"] {
            assert!(validate_id(bad).is_err(), "{bad}");
        }
        assert!(validate_id(IMAGE_ID).is_ok());
    }

    #[test]
    fn docker_error_messages_are_quoted() {
        assert_eq!(
            error_message(br#"{"message":"no such container"}"#),
            "no such container"
        );
        assert_eq!(error_message(b"plain"), "plain");
    }

    #[tokio::test]
    async fn unreachable_socket_says_docker_is_not_reachable_there() {
        let docker = DockerRuntime::new("/nonexistent/docker.sock");
        let err = docker.inspect_container(&"a".repeat(64)).await.unwrap_err();
        assert!(
            err.to_string()
                .starts_with("Docker not reachable at /nonexistent/docker.sock"),
            "{err}"
        );
    }

    #[test]
    fn addresses_come_from_every_network_and_host_mode_has_none() {
        let json = r#"{"Id":"c","Config":{"Image":"nginx"},"NetworkSettings":{"IPAddress":"",
            "Networks":{"eval":{"IPAddress":"172.24.0.3","GlobalIPv6Address":"fd00::3"},
            "other":{"IPAddress":"10.1.0.7","GlobalIPv6Address":""}}}}"#;
        let c: ContainerJson = serde_json::from_str(json).unwrap();
        let info = describe(c, ImageJson::default()).unwrap();
        let want: Vec<std::net::IpAddr> = vec![
            "10.1.0.7".parse().unwrap(),
            "172.24.0.3".parse().unwrap(),
            "fd00::3".parse().unwrap(),
        ];
        assert_eq!(info.addresses, want);
        let host = r#"{"Id":"c","Config":{"Image":"nginx"},"NetworkSettings":{"IPAddress":"",
            "Networks":{"host":{"IPAddress":"","GlobalIPv6Address":""}}}}"#;
        let c: ContainerJson = serde_json::from_str(host).unwrap();
        assert!(
            describe(c, ImageJson::default())
                .unwrap()
                .addresses
                .is_empty()
        );
    }
}
