//! The cgroup v2 (unified) hierarchy: where it is mounted, which path a cgroup id names, and
//! what a path says about the workload (container id, systemd service).
//!
//! A cgroup id as the kernel reports it (`bpf_get_current_cgroup_id()`) is the inode number of
//! the cgroup's directory in the unified hierarchy, so the index is built by walking that
//! hierarchy and reading inode numbers. The hierarchy is mounted at `/sys/fs/cgroup` on a pure
//! v2 host and at `/sys/fs/cgroup/unified` on a v1/v2 hybrid; both are found via mountinfo.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{ResolveError, lock};

/// The mount table of the daemon's own mount namespace.
const MOUNTINFO: &str = "/proc/self/mountinfo";
/// Length of a full container id (Docker, containerd, CRI-O, Podman).
const CONTAINER_ID_LEN: usize = 64;
/// Prefixes that systemd-managed runtimes put before the container id in a scope name.
const CONTAINER_SCOPE_PREFIXES: [&str; 5] = [
    "docker-",
    "cri-containerd-",
    "crio-",
    "libpod-",
    "containerd-",
];

/// Finds where the unified (cgroup2) hierarchy is mounted, from `/proc/self/mountinfo`.
pub fn find_unified_mount() -> Result<PathBuf, ResolveError> {
    let text = fs::read_to_string(MOUNTINFO).map_err(|source| ResolveError::Io {
        path: MOUNTINFO.into(),
        source,
    })?;
    unified_mount_from_mountinfo(&text).ok_or_else(|| ResolveError::NoUnifiedHierarchy {
        mountinfo: MOUNTINFO.into(),
    })
}

/// The mount point of the cgroup2 file system in a mountinfo text. A mount of the hierarchy's
/// root (`/`) is preferred over a bind mount of a subtree, whose inode paths would be partial.
pub fn unified_mount_from_mountinfo(mountinfo: &str) -> Option<PathBuf> {
    let mut fallback = None;
    for line in mountinfo.lines() {
        let Some((root, mount_point)) = cgroup2_mount(line) else {
            continue;
        };
        if root == "/" {
            return Some(mount_point);
        }
        fallback.get_or_insert(mount_point);
    }
    fallback
}

/// `(root, mount point)` of a mountinfo line if its file system type is cgroup2.
/// Format: `id parent major:minor root mount-point options [optional…] - fstype source opts`.
fn cgroup2_mount(line: &str) -> Option<(&str, PathBuf)> {
    let (before, after) = line.split_once(" - ")?;
    if after.split_whitespace().next()? != "cgroup2" {
        return None;
    }
    let mut fields = before.split_whitespace();
    let root = fields.nth(3)?;
    let mount_point = fields.next()?;
    Some((root, PathBuf::from(unescape_mountinfo(mount_point))))
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\011`, `\012`, `\134`).
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The container id in a cgroup path: the innermost component that is a 64-hex id, bare
/// (`/docker/<id>`, `/kubepods/…/pod<uid>/<id>`) or in a runtime's systemd scope
/// (`docker-<id>.scope`, `cri-containerd-<id>.scope`, `crio-<id>.scope`, `libpod-<id>`).
/// Monitor scopes such as `crio-conmon-<id>.scope` are not containers and do not match.
/// Also accepts a single component, e.g. a v1 cgroup name read by a probe.
pub fn container_id_from_path(path: &str) -> Option<String> {
    path.rsplit('/')
        .find_map(container_id_from_component)
        .map(str::to_owned)
}

/// The container id one path component carries, if any.
fn container_id_from_component(component: &str) -> Option<&str> {
    let name = component.strip_suffix(".scope").unwrap_or(component);
    let id = CONTAINER_SCOPE_PREFIXES
        .iter()
        .find_map(|prefix| name.strip_prefix(prefix))
        .unwrap_or(name);
    let is_id = id.len() == CONTAINER_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    is_id.then_some(id)
}

/// The innermost systemd service in a cgroup path (`/system.slice/ssh.service` →
/// `ssh.service`): processes a service forks into sub-cgroups still belong to it.
pub fn systemd_unit_from_path(path: &str) -> Option<String> {
    path.rsplit('/')
        .find(|c| c.len() > ".service".len() && c.ends_with(".service"))
        .map(str::to_owned)
}

/// The cgroup id of a process: the inode of its unified-hierarchy directory, as
/// `bpf_get_current_cgroup_id()` reports it for that process's events. `Ok(None)` if the
/// process is in no v2 cgroup (pure v1 host).
#[cfg(test)]
pub fn cgroup_id_of_pid(unified_root: &Path, pid: u32) -> Result<Option<u64>, ResolveError> {
    cgroup_id_in(Path::new("/proc"), unified_root, pid)
}

/// [`cgroup_id_of_pid`] with an explicit procfs root.
pub(crate) fn cgroup_id_in(
    proc_root: &Path,
    unified_root: &Path,
    pid: u32,
) -> Result<Option<u64>, ResolveError> {
    let file = proc_root.join(pid.to_string()).join("cgroup");
    let text = fs::read_to_string(&file).map_err(|source| ResolveError::Io {
        path: file.clone(),
        source,
    })?;
    let Some(relative) = unified_path_in_proc_cgroup(&text) else {
        return Ok(None);
    };
    let dir = unified_root.join(relative.trim_start_matches('/'));
    let meta = fs::metadata(&dir).map_err(|source| ResolveError::Io { path: dir, source })?;
    Ok(Some(meta.ino()))
}

/// The path of the `0::/path` line of `/proc/<pid>/cgroup` (the unified hierarchy).
fn unified_path_in_proc_cgroup(text: &str) -> Option<&str> {
    text.lines().find_map(|line| line.strip_prefix("0::"))
}

/// Bounds of a [`CgroupIndex`].
#[derive(Debug, Clone)]
pub struct IndexLimits {
    /// Deepest directory indexed, the root being depth 0.
    pub max_depth: usize,
    /// Most cgroups indexed; past it the walk stops and logs a warning.
    pub max_entries: usize,
    /// Least time between two walks, so that a storm of unknown ids costs one walk per interval.
    pub min_refresh_interval: Duration,
}

impl Default for IndexLimits {
    fn default() -> Self {
        Self {
            // Kubernetes' deepest layout (kubepods/qos/pod/container/sub) is about 6 levels.
            max_depth: 16,
            // Nodes have thousands of cgroups; this bounds memory at a few MB.
            max_entries: 100_000,
            // A walk of a busy node takes milliseconds: ten a second cost a few percent of a
            // core at worst, and a new container's first events wait at most this long.
            min_refresh_interval: Duration::from_millis(100),
        }
    }
}

/// Maps cgroup ids to paths (relative to the hierarchy root, `/`-prefixed like
/// `/proc/<pid>/cgroup`), re-walking the hierarchy on a miss at most once per interval.
#[derive(Debug)]
pub struct CgroupIndex {
    root: PathBuf,
    limits: IndexLimits,
    state: Mutex<IndexState>,
}

/// The mutable part of the index.
#[derive(Debug, Default)]
struct IndexState {
    by_id: HashMap<u64, String>,
    last_walk: Option<Instant>,
}

impl CgroupIndex {
    /// An empty index of the hierarchy mounted at `root` (the first miss walks it).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self::with_limits(root, IndexLimits::default())
    }

    /// An empty index with explicit limits.
    pub fn with_limits(root: impl Into<PathBuf>, limits: IndexLimits) -> Self {
        Self {
            root: root.into(),
            limits,
            state: Mutex::default(),
        }
    }

    /// An index of the unified hierarchy of this host, found via mountinfo.
    pub fn discover() -> Result<Self, ResolveError> {
        Ok(Self::new(find_unified_mount()?))
    }

    /// Where the indexed hierarchy is mounted.
    #[cfg(test)]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path of a cgroup id, if the last walk saw it. No I/O.
    pub fn lookup(&self, cgroup_id: u64) -> Option<String> {
        lock(&self.state).by_id.get(&cgroup_id).cloned()
    }

    /// How many cgroups are indexed.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        lock(&self.state).by_id.len()
    }

    /// Whether nothing is indexed (never walked, or an empty hierarchy).
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops a cgroup id (its directory was removed).
    pub fn remove(&self, cgroup_id: u64) {
        lock(&self.state).by_id.remove(&cgroup_id);
    }

    /// Whether the rate limit would allow a walk now. No I/O.
    pub fn refresh_due(&self) -> bool {
        let state = lock(&self.state);
        Self::due(&state, &self.limits)
    }

    /// How long until the rate limit allows the next walk (zero when it is due).
    pub fn until_due(&self) -> Duration {
        let state = lock(&self.state);
        state.last_walk.map_or(Duration::ZERO, |t| {
            self.limits.min_refresh_interval.saturating_sub(t.elapsed())
        })
    }

    /// Re-walks the hierarchy unless one was done less than the interval ago; returns whether
    /// it walked. Blocking file-system I/O: call from a blocking thread in async code.
    pub fn refresh_if_due(&self) -> Result<bool, ResolveError> {
        {
            let mut state = lock(&self.state);
            if !Self::due(&state, &self.limits) {
                return Ok(false);
            }
            // Claimed before walking, so that concurrent misses do not walk in parallel.
            state.last_walk = Some(Instant::now());
        }
        self.walk_and_swap()?;
        Ok(true)
    }

    /// Walks the hierarchy now, whatever the rate limit (e.g. at start-up); returns the number
    /// of cgroups indexed.
    pub fn refresh(&self) -> Result<usize, ResolveError> {
        lock(&self.state).last_walk = Some(Instant::now());
        self.walk_and_swap()
    }

    /// The cgroup id of a process in this hierarchy (see [`cgroup_id_of_pid`]).
    #[cfg(test)]
    pub fn cgroup_id_of_pid(&self, pid: u32) -> Result<Option<u64>, ResolveError> {
        cgroup_id_of_pid(&self.root, pid)
    }

    /// Whether the interval since the last walk has passed.
    fn due(state: &IndexState, limits: &IndexLimits) -> bool {
        state
            .last_walk
            .is_none_or(|t| t.elapsed() >= limits.min_refresh_interval)
    }

    /// Walks without holding the lock, then replaces the map.
    fn walk_and_swap(&self) -> Result<usize, ResolveError> {
        let by_id = walk(&self.root, &self.limits)?;
        let count = by_id.len();
        lock(&self.state).by_id = by_id;
        Ok(count)
    }
}

/// Walks the hierarchy under `root` depth-first within the limits. Directories that vanish
/// during the walk are skipped; only an unreadable root is an error.
fn walk(root: &Path, limits: &IndexLimits) -> Result<HashMap<u64, String>, ResolveError> {
    let root_meta = fs::metadata(root).map_err(|source| ResolveError::Io {
        path: root.to_path_buf(),
        source,
    })?;
    let mut by_id = HashMap::from([(root_meta.ino(), "/".to_owned())]);
    let mut stack = vec![(root.to_path_buf(), String::new(), 0_usize)];
    while let Some((dir, relative, depth)) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            if by_id.len() >= limits.max_entries {
                tracing::warn!(
                    message = "Cgroup hierarchy exceeds the index limit; some cgroups stay unattributed.",
                    root = %root.display(),
                    max_entries = limits.max_entries
                );
                return Ok(by_id);
            }
            let child = format!("{relative}/{}", entry.file_name().to_string_lossy());
            // d_ino of a cgroupfs entry is the kernfs id, the same number the kernel reports.
            by_id.insert(entry.ino(), child.clone());
            if depth + 1 < limits.max_depth {
                stack.push((entry.path(), child, depth + 1));
            }
        }
    }
    Ok(by_id)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const ID: &str = "8c878c2023c29d4a38f42a750660ec54dde8a270148c1cd71cc24402c8c0ec38";

    #[test]
    fn container_ids_in_every_runtime_layout() {
        let layouts = [
            format!("/docker/{ID}"),
            format!("/system.slice/docker-{ID}.scope"),
            format!("/kubepods/besteffort/pod1d3b2c4e-1111-2222-3333-444455556666/{ID}"),
            format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1d3b.slice/cri-containerd-{ID}.scope"
            ),
            format!("/kubepods.slice/kubepods-pod1.slice/crio-{ID}.scope"),
            format!("/machine.slice/libpod-{ID}.scope"),
            format!("/machine.slice/libpod-{ID}"),
            format!("/docker/{ID}/init.scope"),
            format!("docker-{ID}.scope"),
            ID.to_owned(),
        ];
        for path in layouts {
            assert_eq!(container_id_from_path(&path).as_deref(), Some(ID), "{path}");
        }
    }

    #[test]
    fn innermost_container_wins_and_non_containers_do_not_match() {
        let inner = "f".repeat(64);
        let nested = format!("/docker/{ID}/docker/{inner}");
        assert_eq!(container_id_from_path(&nested), Some(inner));
        for path in [
            "/".to_owned(),
            "/system.slice/ssh.service".to_owned(),
            format!("/machine.slice/crio-conmon-{ID}.scope"),
            format!("/docker/{}", &ID[..63]),
            format!("/docker/{}", ID.to_uppercase()),
            "/user.slice/user-1000.slice/session-3.scope".to_owned(),
        ] {
            assert_eq!(container_id_from_path(&path), None, "{path}");
        }
    }

    #[test]
    fn systemd_units_innermost_service() {
        assert_eq!(
            systemd_unit_from_path("/system.slice/ssh.service").as_deref(),
            Some("ssh.service")
        );
        assert_eq!(
            systemd_unit_from_path(
                "/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service"
            )
            .as_deref(),
            Some("foo.service")
        );
        assert_eq!(
            systemd_unit_from_path("/system.slice/nginx.service/worker").as_deref(),
            Some("nginx.service")
        );
        assert_eq!(systemd_unit_from_path("/"), None);
        assert_eq!(systemd_unit_from_path("/user.slice/session-3.scope"), None);
        assert_eq!(systemd_unit_from_path("/.service"), None);
    }

    #[test]
    fn mountinfo_hybrid_and_pure_v2() {
        let hybrid = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw
";
        assert_eq!(
            unified_mount_from_mountinfo(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let pure = "\
30 23 0:26 /sub /mnt/cg\\040sub rw - cgroup2 cgroup2 rw
29 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate
";
        assert_eq!(
            unified_mount_from_mountinfo(pure),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        let only_bind = "30 23 0:26 /sub /mnt/cg\\040sub rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            unified_mount_from_mountinfo(only_bind),
            Some(PathBuf::from("/mnt/cg sub"))
        );
        assert_eq!(
            unified_mount_from_mountinfo("35 31 0:32 / /x rw - cgroup cgroup rw\n"),
            None
        );
    }

    #[test]
    fn this_host_has_a_unified_hierarchy() {
        let root = find_unified_mount().unwrap();
        let id = cgroup_id_of_pid(&root, std::process::id()).unwrap();
        assert!(id.is_some(), "no 0:: line in /proc/self/cgroup");
    }

    #[test]
    fn proc_cgroup_v2_line() {
        let text = "4:memory:/docker/x\n0::/system.slice/ssh.service\n";
        assert_eq!(
            unified_path_in_proc_cgroup(text),
            Some("/system.slice/ssh.service")
        );
        assert_eq!(unified_path_in_proc_cgroup("4:memory:/\n"), None);
    }

    fn ino(path: &Path) -> u64 {
        fs::metadata(path).unwrap().ino()
    }

    fn limits(interval: Duration) -> IndexLimits {
        IndexLimits {
            min_refresh_interval: interval,
            ..IndexLimits::default()
        }
    }

    #[test]
    fn index_maps_inodes_to_relative_paths() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fs::create_dir_all(root.join("system.slice/ssh.service")).unwrap();
        fs::create_dir_all(root.join(format!("docker/{ID}"))).unwrap();
        fs::write(root.join("cgroup.procs"), "").unwrap();
        let index = CgroupIndex::with_limits(root, limits(Duration::from_secs(60)));
        assert!(index.is_empty());
        assert!(index.refresh_if_due().unwrap());
        assert_eq!(
            index.len(),
            5,
            "root, system.slice, ssh.service, docker, the container"
        );
        assert_eq!(index.lookup(ino(root)).as_deref(), Some("/"));
        assert_eq!(
            index
                .lookup(ino(&root.join("system.slice/ssh.service")))
                .as_deref(),
            Some("/system.slice/ssh.service")
        );
        let container = format!("/docker/{ID}");
        assert_eq!(
            index.lookup(ino(&root.join(&container[1..]))),
            Some(container)
        );
        index.remove(ino(root));
        assert_eq!(index.lookup(ino(root)), None);
    }

    #[test]
    fn refresh_on_miss_is_rate_limited() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let index = CgroupIndex::with_limits(root, limits(Duration::from_millis(200)));
        assert!(index.refresh_if_due().unwrap());
        let late = root.join("late");
        fs::create_dir(&late).unwrap();
        assert!(!index.refresh_due());
        assert!(
            !index.refresh_if_due().unwrap(),
            "second walk within the interval"
        );
        assert_eq!(index.lookup(ino(&late)), None);
        std::thread::sleep(Duration::from_millis(250));
        assert!(index.refresh_if_due().unwrap());
        assert_eq!(index.lookup(ino(&late)).as_deref(), Some("/late"));
    }

    #[test]
    fn walk_respects_depth_and_entry_bounds() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fs::create_dir_all(root.join("a/b/c/d")).unwrap();
        let shallow = CgroupIndex::with_limits(
            root,
            IndexLimits {
                max_depth: 2,
                ..IndexLimits::default()
            },
        );
        assert_eq!(shallow.refresh().unwrap(), 3, "root, /a, /a/b");
        assert_eq!(shallow.lookup(ino(&root.join("a/b/c"))), None);
        let small = CgroupIndex::with_limits(
            root,
            IndexLimits {
                max_entries: 2,
                ..IndexLimits::default()
            },
        );
        assert_eq!(small.refresh().unwrap(), 2);
    }

    #[test]
    fn missing_root_is_an_error_naming_it() {
        let index = CgroupIndex::new("/nonexistent/cgroup/root");
        let err = index.refresh().unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/cgroup/root"),
            "{err}"
        );
    }
}
