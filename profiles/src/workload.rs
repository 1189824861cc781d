//! Workload identity: the key every event, profile and baseline is filed under.
//!
//! A workload is either a container image or a host service. Images are keyed by their
//! reference normalised exactly like Docker's `reference.ParseNormalizedNamed` followed by
//! `TagNameOnly` (`nginx:1.25` → `docker.io/library/nginx:1.25`), so that the same image gets the
//! same key whichever short form a user or an orchestrator wrote. Host processes are keyed by
//! their systemd unit (`host:ssh.service`) or, outside any unit, `host`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The registry Docker assumes when a reference names none.
const DEFAULT_DOMAIN: &str = "docker.io";
/// The old name of [`DEFAULT_DOMAIN`], still accepted and rewritten by Docker.
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
/// The namespace of official images on the default registry (`nginx` → `library/nginx`).
const OFFICIAL_REPO_PREFIX: &str = "library/";
/// The tag Docker implies when a reference has neither tag nor digest.
const DEFAULT_TAG: &str = "latest";
/// Docker rejects repository names (domain and path) longer than this.
const NAME_TOTAL_LENGTH_MAX: usize = 255;
/// Docker rejects tags longer than this.
const TAG_LENGTH_MAX: usize = 128;
/// How many hex digits of a container id an unresolved-container key keeps (as `docker ps`).
const SHORT_ID_LEN: usize = 12;

/// Why an image reference could not be parsed. Every variant names the offending part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkloadError {
    /// The reference was empty.
    #[error("invalid image reference: empty")]
    Empty,
    /// The reference is a bare 64-hex string, which Docker treats as an image id, not a name.
    #[error("invalid image reference {reference:?}: a 64-hex string is an image id, not a name")]
    LooksLikeImageId {
        /// The whole reference as given.
        reference: String,
    },
    /// The repository path contains upper-case letters (Docker requires lower case).
    #[error(
        "invalid image reference {reference:?}: repository name {repository:?} must be lowercase"
    )]
    Uppercase {
        /// The whole reference as given.
        reference: String,
        /// The repository path (without registry) that is not lower case.
        repository: String,
    },
    /// The registry part (`host[:port]`) is not a valid host name, IP address or port.
    #[error(
        "invalid image reference {reference:?}: registry {domain:?} is not a valid host[:port]"
    )]
    InvalidDomain {
        /// The whole reference as given.
        reference: String,
        /// The registry part.
        domain: String,
    },
    /// One `/`-separated component of the repository path is malformed.
    #[error(
        "invalid image reference {reference:?}: path component {component:?} must be lowercase \
         alphanumerics joined by '.', '_', '__' or dashes"
    )]
    InvalidPathComponent {
        /// The whole reference as given.
        reference: String,
        /// The malformed component (may be empty, e.g. for `a//b`).
        component: String,
    },
    /// The tag is malformed (`[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`).
    #[error(
        "invalid image reference {reference:?}: tag {tag:?} must match [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}"
    )]
    InvalidTag {
        /// The whole reference as given.
        reference: String,
        /// The malformed tag.
        tag: String,
    },
    /// The digest is malformed or uses an algorithm Docker does not support.
    #[error(
        "invalid image reference {reference:?}: digest {digest:?} must be sha256:<64 hex>, \
         sha384:<96 hex> or sha512:<128 hex> in lower case"
    )]
    InvalidDigest {
        /// The whole reference as given.
        reference: String,
        /// The malformed digest.
        digest: String,
    },
    /// The repository name (registry and path) is longer than Docker allows.
    #[error(
        "invalid image reference {reference:?}: repository name is {len} characters, more than 255"
    )]
    NameTooLong {
        /// The whole reference as given.
        reference: String,
        /// The length of the normalised repository name.
        len: usize,
    },
}

/// A workload key from outside that [`WorkloadKey::parse`] refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid workload key {key:?}: {why}")]
pub struct UnsafeKey {
    /// The key as given (its first 80 characters).
    pub key: String,
    /// Why it is refused.
    pub why: &'static str,
}

/// The identity of a workload; the key of profiles, baselines and per-workload metrics.
///
/// Forms: `host`, `host:<systemd unit>`, an image key (`docker.io/library/nginx:1.25`, or
/// `repository@sha256:…` for an image referenced by digest only), and the provisional
/// `container:<12 hex>` for a container whose runtime has not answered yet (see
/// [`WorkloadKey::unresolved_container`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WorkloadKey(String);

impl WorkloadKey {
    /// Prefix of keys of host processes in a systemd unit.
    const HOST_UNIT_PREFIX: &'static str = "host:";
    /// Prefix of provisional keys of containers not yet known to their runtime.
    const UNRESOLVED_CONTAINER_PREFIX: &'static str = "container:";
    /// Prefix of provisional keys of cgroups missing from the index.
    const UNRESOLVED_CGROUP_PREFIX: &'static str = "cgroup:";

    /// The key of host processes outside any systemd service: `host`.
    pub fn host() -> Self {
        Self("host".to_owned())
    }

    /// The key of host processes of one systemd unit: `host:ssh.service`.
    pub fn host_unit(unit: &str) -> Self {
        Self(format!("{}{unit}", Self::HOST_UNIT_PREFIX))
    }

    /// The image repository of an image key (`repository:tag` or `repository@digest`), or
    /// `None` for host keys: workloads of one repository are versions of one application.
    pub fn repository(&self) -> Option<&str> {
        let key = self.0.as_str();
        if key == "host" || key.starts_with("host:") {
            return None;
        }
        if let Some((repository, _)) = key.split_once('@') {
            return Some(repository);
        }
        match key.rsplit_once(':') {
            Some((repository, tag)) if !tag.contains('/') => Some(repository),
            _ => Some(key),
        }
    }

    /// The key of containers of one image: `repository:tag`, or `repository@digest` when the
    /// image was referenced by digest alone (following Docker, which implies `latest` only when
    /// a reference has neither tag nor digest). A digest beside a tag is not part of the key: the
    /// design records it beside the key so that a re-pushed tag keeps its baseline.
    pub fn image(image: &ImageRef) -> Self {
        match (&image.tag, &image.digest) {
            (Some(tag), _) => Self(format!("{}:{tag}", image.repository)),
            (None, Some(digest)) => Self(format!("{}@{digest}", image.repository)),
            (None, None) => Self(format!("{}:{DEFAULT_TAG}", image.repository)),
        }
    }

    /// A provisional key, `container:<first 12 hex of id>`, for events of a container whose
    /// runtime does not know it yet (the event raced container creation, or the runtime is
    /// unreachable). Such events must not be merged into the host's workload, and the pipeline
    /// should not learn from them; the key is replaced by the image key once the runtime answers.
    pub fn unresolved_container(container_id: &str) -> Self {
        let short: String = container_id.chars().take(SHORT_ID_LEN).collect();
        Self(format!("{}{short}", Self::UNRESOLVED_CONTAINER_PREFIX))
    }

    /// A provisional key, `cgroup:<id>`, for events of a cgroup that is not (yet) in the cgroup
    /// index: attributing them to `host` would teach the host's baseline a container's habits.
    pub fn unresolved_cgroup(cgroup_id: u64) -> Self {
        Self(format!("{}{cgroup_id}", Self::UNRESOLVED_CGROUP_PREFIX))
    }

    /// Whether this key is provisional (an unknown cgroup or an undescribed container).
    pub fn is_provisional(&self) -> bool {
        self.is_unresolved_container() || self.0.starts_with(Self::UNRESOLVED_CGROUP_PREFIX)
    }

    /// Wraps a key read back from storage or an API path, without validation.
    pub fn from_raw(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// The longest key accepted from outside (API paths, baseline files): a Docker repository
    /// name is at most 255 characters, a tag 128, a digest 135.
    pub const MAX_LEN: usize = 512;

    /// A key given from outside (an API path, a baseline file's `workload`), refused when it
    /// could mean something else as a file name: empty, too long, absolute (`/…`), a `.` or `..`
    /// or empty path segment, a NUL or another control character. The API percent-decodes
    /// its paths first, so `%2e%2e%2f` is checked as `../`. Keys habitd makes itself (image
    /// references Docker's grammar accepts, `host:<unit>`) always pass.
    pub fn parse(key: &str) -> Result<Self, UnsafeKey> {
        let refuse = |why: &'static str| {
            Err(UnsafeKey {
                key: key.chars().take(80).collect(),
                why,
            })
        };
        if key.is_empty() {
            return refuse("is empty");
        }
        if key.len() > Self::MAX_LEN {
            return refuse("is longer than 512 bytes");
        }
        if key.chars().any(char::is_control) {
            return refuse("contains a control character");
        }
        if key.starts_with('/') {
            return refuse("is an absolute path");
        }
        if key
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
        {
            return refuse("has an empty, '.' or '..' path segment");
        }
        Ok(Self(key.to_owned()))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is a host key (`host` or `host:<unit>`).
    pub fn is_host(&self) -> bool {
        self.0 == "host" || self.0.starts_with(Self::HOST_UNIT_PREFIX)
    }

    /// Whether this is a provisional `container:<id>` key (see [`Self::unresolved_container`]).
    pub fn is_unresolved_container(&self) -> bool {
        self.0.starts_with(Self::UNRESOLVED_CONTAINER_PREFIX)
    }
}

impl fmt::Display for WorkloadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for WorkloadKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A container image reference, normalised like Docker does.
///
/// `repository` always includes the registry (`docker.io/library/nginx`). `tag` is `None` only
/// when the reference carried a digest and no tag; a reference with neither gets `latest`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ImageRef {
    /// The fully qualified repository, e.g. `docker.io/library/nginx`, `localhost:5000/a/b`.
    pub repository: String,
    /// The tag; `latest` if the reference had neither tag nor digest, `None` if digest only.
    pub tag: Option<String>,
    /// The content digest (`sha256:…`) if the reference pinned one.
    pub digest: Option<String>,
}

impl ImageRef {
    /// Parses and normalises a reference like Docker's `ParseNormalizedNamed` + `TagNameOnly`:
    /// `nginx` → `docker.io/library/nginx:latest`, `user/app` → `docker.io/user/app:latest`,
    /// `index.docker.io/x` → `docker.io/library/x:latest`, `localhost:5000/a/b:t` kept as is.
    ///
    /// The first path component is taken as a registry only if it contains `.` or `:`, is
    /// `localhost`, or has upper-case letters (Docker's rule), so `user/app` stays on Docker Hub.
    pub fn parse_normalized(reference: &str) -> Result<Self, WorkloadError> {
        if reference.is_empty() {
            return Err(WorkloadError::Empty);
        }
        if reference.len() == 64 && reference.bytes().all(is_lower_hex) {
            return Err(WorkloadError::LooksLikeImageId {
                reference: reference.to_owned(),
            });
        }
        let (name_and_tag, digest) = match reference.split_once('@') {
            Some((name, digest)) => (name, Some(parse_digest(reference, digest)?)),
            None => (reference, None),
        };
        let (domain, remainder) = split_docker_domain(name_and_tag);
        let (path, tag) = match remainder.split_once(':') {
            Some((path, tag)) => (path, Some(tag)),
            None => (remainder.as_str(), None),
        };
        if path.to_lowercase() != path {
            return Err(WorkloadError::Uppercase {
                reference: reference.to_owned(),
                repository: path.to_owned(),
            });
        }
        validate_domain(reference, domain)?;
        validate_path(reference, path)?;
        if let Some(tag) = tag {
            validate_tag(reference, tag)?;
        }
        let repository = format!("{domain}/{path}");
        if repository.len() > NAME_TOTAL_LENGTH_MAX {
            return Err(WorkloadError::NameTooLong {
                reference: reference.to_owned(),
                len: repository.len(),
            });
        }
        let tag = match (tag, &digest) {
            (Some(tag), _) => Some(tag.to_owned()),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_TAG.to_owned()),
        };
        Ok(Self {
            repository,
            tag,
            digest,
        })
    }

    /// The workload key of this image (see [`WorkloadKey::image`]).
    pub fn key(&self) -> WorkloadKey {
        WorkloadKey::image(self)
    }
}

impl fmt::Display for ImageRef {
    /// The full normalised reference: `repository[:tag][@digest]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// Splits `name` into registry and remainder exactly like Docker's `splitDockerDomain`, adding
/// the default registry and the `library/` namespace of official images where Docker does.
fn split_docker_domain(name: &str) -> (&str, String) {
    let (domain, remainder) = match name.split_once('/') {
        Some((first, rest)) if looks_like_domain(first) => (first, rest),
        _ => (DEFAULT_DOMAIN, name),
    };
    let domain = if domain == LEGACY_DEFAULT_DOMAIN {
        DEFAULT_DOMAIN
    } else {
        domain
    };
    let remainder = if domain == DEFAULT_DOMAIN && !remainder.contains('/') {
        format!("{OFFICIAL_REPO_PREFIX}{remainder}")
    } else {
        remainder.to_owned()
    };
    (domain, remainder)
}

/// Docker's test of whether a first path component names a registry rather than a namespace.
fn looks_like_domain(first: &str) -> bool {
    first.contains(['.', ':']) || first == "localhost" || first.to_lowercase() != first
}

/// Checks `host[:port]`, where host is a DNS name, an IPv4 address or a bracketed IPv6 address.
fn validate_domain(reference: &str, domain: &str) -> Result<(), WorkloadError> {
    let bad = || WorkloadError::InvalidDomain {
        reference: reference.to_owned(),
        domain: domain.to_owned(),
    };
    let (host, port) = split_host_port(domain).ok_or_else(bad)?;
    if let Some(port) = port
        && (port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(bad());
    }
    let host_ok = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        !inner.is_empty()
            && inner
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
    } else {
        !host.is_empty() && host.split('.').all(is_domain_component)
    };
    if host_ok { Ok(()) } else { Err(bad()) }
}

/// Splits `host[:port]`, aware of bracketed IPv6 hosts whose own colons are not a port.
fn split_host_port(domain: &str) -> Option<(&str, Option<&str>)> {
    if domain.starts_with('[') {
        let end = domain.find(']')?;
        let (host, rest) = domain.split_at(end + 1);
        return match rest.strip_prefix(':') {
            Some(port) => Some((host, Some(port))),
            None if rest.is_empty() => Some((host, None)),
            None => None,
        };
    }
    match domain.split_once(':') {
        Some((host, port)) => Some((host, Some(port))),
        None => Some((domain, None)),
    }
}

/// `[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]`.
fn is_domain_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        }
        _ => false,
    }
}

/// Checks every `/`-separated component of the repository path.
fn validate_path(reference: &str, path: &str) -> Result<(), WorkloadError> {
    for component in path.split('/') {
        if !is_path_component(component) {
            return Err(WorkloadError::InvalidPathComponent {
                reference: reference.to_owned(),
                component: component.to_owned(),
            });
        }
    }
    Ok(())
}

/// `[a-z0-9]+ (([_.]|__|[-]+) [a-z0-9]+)*`: runs of lower-case alphanumerics joined by one
/// `.`, one or two `_`, or any number of `-`.
fn is_path_component(component: &str) -> bool {
    let is_alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let mut separators = component.split(is_alnum).filter(|s| !s.is_empty());
    let starts_and_ends_alnum = component.starts_with(is_alnum) && component.ends_with(is_alnum);
    starts_and_ends_alnum
        && separators
            .all(|sep| sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-'))
}

/// `[\w][\w.-]{0,127}` with `\w` = `[A-Za-z0-9_]`.
fn validate_tag(reference: &str, tag: &str) -> Result<(), WorkloadError> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let ok = tag.len() <= TAG_LENGTH_MAX
        && tag.bytes().next().is_some_and(word)
        && tag.bytes().all(|b| word(b) || b == b'.' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(WorkloadError::InvalidTag {
            reference: reference.to_owned(),
            tag: tag.to_owned(),
        })
    }
}

/// Accepts the digests Docker accepts (go-digest's registered algorithms with their exact
/// lower-case hex length) and returns it unchanged.
fn parse_digest(reference: &str, digest: &str) -> Result<String, WorkloadError> {
    let expected_len = match digest.split_once(':') {
        Some(("sha256", hex)) => Some((64, hex)),
        Some(("sha384", hex)) => Some((96, hex)),
        Some(("sha512", hex)) => Some((128, hex)),
        _ => None,
    };
    match expected_len {
        Some((len, hex)) if hex.len() == len && hex.bytes().all(is_lower_hex) => {
            Ok(digest.to_owned())
        }
        _ => Err(WorkloadError::InvalidDigest {
            reference: reference.to_owned(),
            digest: digest.to_owned(),
        }),
    }
}

/// `[0-9a-f]`.
fn is_lower_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn keys_from_outside_cannot_name_another_file() {
        for bad in [
            "",
            "..",
            "../../etc/passwd",
            "docker.io/library/../../../etc/shadow",
            "docker.io/./nginx:1",
            "/etc/passwd",
            "/",
            "docker.io//nginx:1",
            "nginx:1/",
            "nginx\0:1",
            "nginx\n:1",
        ] {
            let e = WorkloadKey::parse(bad).unwrap_err();
            assert!(
                e.to_string().starts_with("invalid workload key"),
                "{bad:?}: {e}"
            );
        }
        assert!(WorkloadKey::parse(&"a".repeat(513)).is_err());
        // Every key habitd makes passes.
        for good in [
            "host",
            "host:ssh.service",
            "host:systemd-fsck@dev-disk-by\\x2duuid-1234.service",
            "docker.io/library/nginx:1.25",
            "registry.example.com:5000/team/app..v2:1.0",
            "ghcr.io/a/b@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "container:3ad7c1e2b9f0",
            "cgroup:9876",
        ] {
            assert_eq!(WorkloadKey::parse(good).unwrap().as_str(), good);
        }
        let made = [
            WorkloadKey::host(),
            WorkloadKey::host_unit("nginx.service"),
            WorkloadKey::unresolved_container("3ad7c1e2b9f0aa"),
            WorkloadKey::unresolved_cgroup(42),
            WorkloadKey::image(&ImageRef::parse_normalized("nginx:1.25").unwrap()),
        ];
        for key in made {
            assert!(WorkloadKey::parse(key.as_str()).is_ok(), "{key}");
        }
    }

    const HEX64: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn key(reference: &str) -> String {
        ImageRef::parse_normalized(reference)
            .unwrap()
            .key()
            .to_string()
    }

    #[test]
    fn official_images_get_registry_library_and_latest() {
        assert_eq!(key("nginx"), "docker.io/library/nginx:latest");
        assert_eq!(key("nginx:1.25"), "docker.io/library/nginx:1.25");
        assert_eq!(key("docker.io/nginx"), "docker.io/library/nginx:latest");
        assert_eq!(key("library/nginx:1.25"), "docker.io/library/nginx:1.25");
    }

    #[test]
    fn user_repositories_stay_on_docker_hub() {
        assert_eq!(key("user/app"), "docker.io/user/app:latest");
        assert_eq!(key("user/app:v2.0-rc_1"), "docker.io/user/app:v2.0-rc_1");
        assert_eq!(key("a/b/c"), "docker.io/a/b/c:latest");
    }

    #[test]
    fn legacy_index_is_rewritten_to_docker_io() {
        assert_eq!(
            key("index.docker.io/nginx"),
            "docker.io/library/nginx:latest"
        );
        assert_eq!(key("index.docker.io/user/app:1"), "docker.io/user/app:1");
    }

    #[test]
    fn other_registries_are_kept() {
        assert_eq!(key("localhost:5000/a/b:t"), "localhost:5000/a/b:t");
        assert_eq!(key("localhost/app"), "localhost/app:latest");
        assert_eq!(key("quay.io/x/y"), "quay.io/x/y:latest");
        assert_eq!(
            key("registry.example.com:443/team/svc:3"),
            "registry.example.com:443/team/svc:3"
        );
        assert_eq!(key("[::1]:5000/app:1"), "[::1]:5000/app:1");
        assert_eq!(key("10.0.0.1:5000/app"), "10.0.0.1:5000/app:latest");
        // Docker: an upper-case first component is a registry, not a namespace.
        assert_eq!(key("Registry/app"), "Registry/app:latest");
    }

    #[test]
    fn digest_without_tag_keys_by_digest() {
        let reference = format!("quay.io/x/y@sha256:{HEX64}");
        let image = ImageRef::parse_normalized(&reference).unwrap();
        assert_eq!(image.repository, "quay.io/x/y");
        assert_eq!(image.tag, None);
        assert_eq!(
            image.digest.as_deref(),
            Some(format!("sha256:{HEX64}").as_str())
        );
        assert_eq!(image.key().as_str(), reference);
        assert_eq!(image.to_string(), reference);
    }

    #[test]
    fn digest_beside_tag_is_recorded_but_not_keyed() {
        let image = ImageRef::parse_normalized(&format!("nginx:1.25@sha256:{HEX64}")).unwrap();
        assert_eq!(image.tag.as_deref(), Some("1.25"));
        assert_eq!(
            image.digest.as_deref(),
            Some(format!("sha256:{HEX64}").as_str())
        );
        assert_eq!(image.key().as_str(), "docker.io/library/nginx:1.25");
        assert_eq!(
            image.to_string(),
            format!("docker.io/library/nginx:1.25@sha256:{HEX64}")
        );
    }

    #[test]
    fn uppercase_repository_is_rejected_naming_it() {
        let err = ImageRef::parse_normalized("user/MyApp:1").unwrap_err();
        assert_eq!(
            err,
            WorkloadError::Uppercase {
                reference: "user/MyApp:1".into(),
                repository: "user/MyApp".into()
            }
        );
        assert!(err.to_string().contains("user/MyApp"), "{err}");
        assert!(matches!(
            ImageRef::parse_normalized("Nginx"),
            Err(WorkloadError::Uppercase { .. })
        ));
    }

    #[test]
    fn malformed_parts_are_named() {
        assert_eq!(ImageRef::parse_normalized(""), Err(WorkloadError::Empty));
        assert!(matches!(
            ImageRef::parse_normalized(HEX64),
            Err(WorkloadError::LooksLikeImageId { .. })
        ));
        let err = ImageRef::parse_normalized("a//b").unwrap_err();
        assert!(
            matches!(err, WorkloadError::InvalidPathComponent { ref component, .. } if component.is_empty())
        );
        for bad in ["-app", "app-", "a..b", "a___b", "a_.b", "user/ap p"] {
            let err = ImageRef::parse_normalized(bad).unwrap_err();
            assert!(
                matches!(err, WorkloadError::InvalidPathComponent { .. }),
                "{bad}: {err}"
            );
        }
        let err = ImageRef::parse_normalized("nginx:-bad").unwrap_err();
        assert!(matches!(err, WorkloadError::InvalidTag { ref tag, .. } if tag == "-bad"));
        assert!(err.to_string().contains("-bad"));
        let long_tag = format!("nginx:{}", "t".repeat(129));
        assert!(matches!(
            ImageRef::parse_normalized(&long_tag),
            Err(WorkloadError::InvalidTag { .. })
        ));
        let err = ImageRef::parse_normalized("nginx@sha256:abc").unwrap_err();
        assert!(
            matches!(err, WorkloadError::InvalidDigest { ref digest, .. } if digest == "sha256:abc")
        );
        assert!(matches!(
            ImageRef::parse_normalized(&format!("nginx@md5:{HEX64}")),
            Err(WorkloadError::InvalidDigest { .. })
        ));
        let err = ImageRef::parse_normalized("bad_host.io:5000/app").unwrap_err();
        assert!(
            matches!(err, WorkloadError::InvalidDomain { ref domain, .. } if domain == "bad_host.io:5000")
        );
        assert!(matches!(
            ImageRef::parse_normalized("host.io:port/app"),
            Err(WorkloadError::InvalidDomain { .. })
        ));
        let long = format!("quay.io/{}", "a".repeat(250));
        assert!(matches!(
            ImageRef::parse_normalized(&long),
            Err(WorkloadError::NameTooLong { .. })
        ));
    }

    #[test]
    fn path_separators_follow_docker_grammar() {
        assert_eq!(key("my-app"), "docker.io/library/my-app:latest");
        assert_eq!(key("my--app"), "docker.io/library/my--app:latest");
        assert_eq!(key("my__app"), "docker.io/library/my__app:latest");
        assert_eq!(key("my.app_x"), "docker.io/library/my.app_x:latest");
    }

    #[test]
    fn host_keys() {
        assert_eq!(WorkloadKey::host().as_str(), "host");
        assert_eq!(
            WorkloadKey::host_unit("ssh.service").as_str(),
            "host:ssh.service"
        );
        assert!(WorkloadKey::host().is_host());
        assert!(WorkloadKey::host_unit("ssh.service").is_host());
        assert!(!WorkloadKey::image(&ImageRef::parse_normalized("nginx").unwrap()).is_host());
    }

    #[test]
    fn unresolved_container_key_uses_short_id() {
        let key = WorkloadKey::unresolved_container(HEX64);
        assert_eq!(key.as_str(), "container:0123456789ab");
        assert!(key.is_unresolved_container());
        assert!(!key.is_host());
    }

    #[test]
    fn key_serializes_as_plain_string_and_orders_by_text() {
        let key = WorkloadKey::host_unit("ssh.service");
        assert_eq!(serde_json::to_string(&key).unwrap(), "\"host:ssh.service\"");
        let back: WorkloadKey = serde_json::from_str("\"host:ssh.service\"").unwrap();
        assert_eq!(back, key);
        let mut keys = [WorkloadKey::host_unit("b"), WorkloadKey::host()];
        keys.sort();
        assert_eq!(keys[0], WorkloadKey::host());
        assert_eq!(format!("{key}"), "host:ssh.service");
    }
}
