//! A real standalone containerd for the end-to-end tests (Debian's `containerd` with the CRI
//! plugin, its root, state and socket under a temporary directory), images imported into its
//! `k8s.io` namespace from Docker, and pods and containers created through CRI, as the kubelet
//! does. Everything is removed in `Drop`, also when a test panics.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// The generated CRI v1 client (see the root `build.rs`).
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod api {
    include!(concat!(env!("OUT_DIR"), "/runtime.v1.rs"));
}

use api::image_service_client::ImageServiceClient;
use api::runtime_service_client::RuntimeServiceClient;

/// Fails (never skips) with what to install when containerd is missing.
pub fn require_containerd() {
    for bin in ["containerd", "ctr", "runc"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {bin}")])
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(
            found,
            "{bin} is missing: these tests start a real containerd with the CRI plugin \
             (apt-get install containerd; scripts/test.sh installs it)"
        );
    }
}

/// A running containerd of our own.
pub struct Containerd {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    rt: tokio::runtime::Runtime,
    channel: Channel,
    pods: Vec<String>,
}

impl Containerd {
    /// Starts containerd with the CRI plugin (host-network pods need no CNI;
    /// `restrict_oom_score_adj`, since runc may not lower oom_score_adj here), the pause image
    /// `pause_image` (which must be imported before a pod is created).
    pub fn start(pause_image: &str) -> Containerd {
        require_containerd();
        // Short path: a unix socket path has at most 107 bytes.
        let dir = tempfile::Builder::new()
            .prefix("ctd")
            .tempdir_in("/tmp")
            .unwrap();
        let socket = dir.path().join("containerd.sock");
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
                 [grpc]\n  address = \"{s}\"\n\
                 [plugins.\"io.containerd.grpc.v1.cri\"]\n  restrict_oom_score_adj = true\n  \
                 sandbox_image = \"{pause_image}\"\n",
                d = dir.path().display(),
                s = socket.display()
            ),
        )
        .unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let path = socket.clone();
        let channel = {
            let _guard = rt.enter();
            Endpoint::from_static("http://cri.invalid")
                .timeout(Duration::from_secs(30))
                .connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move { UnixStream::connect(path).await.map(TokioIo::new) }
                }))
        };
        let mut c = Containerd {
            child: None,
            dir,
            socket,
            rt,
            channel,
            pods: Vec::new(),
        };
        c.restart();
        c
    }

    /// (Re)starts the containerd process on the same root, state and socket.
    pub fn restart(&mut self) {
        if let Err(e) = self.try_restart() {
            panic!("{e}");
        }
    }

    /// Like [`Self::restart`], without panicking (for `Drop`).
    fn try_restart(&mut self) -> Result<(), String> {
        self.stop();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("containerd.log"))
            .unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(self.dir.path().join("config.toml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("containerd (apt-get install containerd): {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.socket.exists() && self.version().is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!("containerd did not start:\n{}", self.log()))
    }

    /// Stops the containerd process (its containers keep running under their shims).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_file(&self.socket);
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    fn runtime(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel.clone())
    }

    pub fn version(&self) -> Result<String, tonic::Status> {
        let mut c = self.runtime();
        self.rt.block_on(async move {
            let v = c
                .version(api::VersionRequest {
                    version: "v1".into(),
                })
                .await?
                .into_inner();
            Ok(format!("{} {}", v.runtime_name, v.runtime_version))
        })
    }

    /// `docker save IMAGE | ctr -n k8s.io images import -`.
    pub fn import_from_docker(&self, image: &str) {
        let mut save = Command::new("docker")
            .args(["save", image])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(["-n", "k8s.io", "images", "import", "-"])
            .stdin(save.stdout.take().unwrap())
            .output()
            .unwrap();
        assert!(save.wait().unwrap().success(), "docker save {image} failed");
        assert!(
            out.status.success(),
            "ctr images import {image} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The tags of an image as containerd's CRI image service lists them.
    pub fn image_tags(&self, image: &str) -> Vec<String> {
        let mut c = ImageServiceClient::new(self.channel.clone());
        let image = image.to_owned();
        self.rt.block_on(async move {
            c.image_status(api::ImageStatusRequest {
                image: Some(api::ImageSpec {
                    image,
                    ..Default::default()
                }),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .image
            .map(|i| i.repo_tags)
            .unwrap_or_default()
        })
    }

    /// Runs a host-network pod sandbox (as the kubelet would for `hostNetwork: true`).
    /// `shared_pids`: one pid namespace for the pod (`shareProcessNamespace: true`), else one
    /// per container (the kubelet's default).
    pub fn run_pod(
        &mut self,
        name: &str,
        namespace: &str,
        uid: &str,
        app: &str,
        shared_pids: bool,
    ) -> Pod {
        let log_dir = self.dir.path().join("pods").join(uid);
        std::fs::create_dir_all(&log_dir).unwrap();
        let config = api::PodSandboxConfig {
            metadata: Some(api::PodSandboxMetadata {
                name: name.into(),
                uid: uid.into(),
                namespace: namespace.into(),
                attempt: 0,
            }),
            // A host-network sandbox must leave the hostname empty.
            hostname: String::new(),
            log_directory: log_dir.display().to_string(),
            labels: [
                ("app".to_owned(), app.to_owned()),
                ("io.kubernetes.pod.name".to_owned(), name.to_owned()),
                (
                    "io.kubernetes.pod.namespace".to_owned(),
                    namespace.to_owned(),
                ),
                ("io.kubernetes.pod.uid".to_owned(), uid.to_owned()),
            ]
            .into(),
            linux: Some(api::LinuxPodSandboxConfig {
                security_context: Some(api::LinuxSandboxSecurityContext {
                    namespace_options: Some(api::NamespaceOption {
                        network: api::NamespaceMode::Node as i32,
                        pid: if shared_pids {
                            api::NamespaceMode::Pod as i32
                        } else {
                            api::NamespaceMode::Container as i32
                        },
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut c = self.runtime();
        let request = api::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        };
        let id = self
            .rt
            .block_on(async move { c.run_pod_sandbox(request).await })
            .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", self.log()))
            .into_inner()
            .pod_sandbox_id;
        self.pods.push(id.clone());
        Pod { id, config }
    }

    /// Creates and starts a container of `image` running `command` in `pod`; its id.
    pub fn run_container(
        &self,
        pod: &Pod,
        name: &str,
        attempt: u32,
        image: &str,
        command: &[&str],
    ) -> String {
        let meta = pod.config.metadata.clone().unwrap_or_default();
        let config = api::ContainerConfig {
            metadata: Some(api::ContainerMetadata {
                name: name.into(),
                attempt,
            }),
            image: Some(api::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            command: command.iter().map(|s| s.to_string()).collect(),
            log_path: format!("{name}_{attempt}.log"),
            labels: [
                ("io.kubernetes.container.name".to_owned(), name.to_owned()),
                ("io.kubernetes.pod.name".to_owned(), meta.name.clone()),
                (
                    "io.kubernetes.pod.namespace".to_owned(),
                    meta.namespace.clone(),
                ),
                ("io.kubernetes.pod.uid".to_owned(), meta.uid.clone()),
            ]
            .into(),
            ..Default::default()
        };
        let mut c = self.runtime();
        let request = api::CreateContainerRequest {
            pod_sandbox_id: pod.id.clone(),
            config: Some(config),
            sandbox_config: Some(pod.config.clone()),
        };
        let id = self
            .rt
            .block_on(async { c.create_container(request).await })
            .unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", self.log()))
            .into_inner()
            .container_id;
        let request = api::StartContainerRequest {
            container_id: id.clone(),
        };
        self.rt
            .block_on(async { c.start_container(request).await })
            .unwrap_or_else(|e| panic!("StartContainer: {e}\n{}", self.log()));
        id
    }

    /// Stops (10 s grace) and removes a container.
    pub fn remove_container(&self, id: &str) {
        let mut c = self.runtime();
        let id = id.to_owned();
        self.rt.block_on(async move {
            let _ = c
                .stop_container(api::StopContainerRequest {
                    container_id: id.clone(),
                    timeout: 10,
                })
                .await;
            let _ = c
                .remove_container(api::RemoveContainerRequest { container_id: id })
                .await;
        });
    }

    /// `ContainerStatus`: the container's state (`api::ContainerState`), `None` when the
    /// runtime does not know it.
    pub fn container_state(&self, id: &str) -> Option<api::ContainerState> {
        let mut c = self.runtime();
        let request = api::ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        };
        let status = self
            .rt
            .block_on(async move { c.container_status(request).await })
            .ok()?
            .into_inner()
            .status?;
        api::ContainerState::try_from(status.state).ok()
    }

    /// `ExecSync` in a container; (exit code, stdout).
    pub fn exec_sync(&self, id: &str, cmd: &[&str]) -> (i32, String) {
        let mut c = self.runtime();
        let request = api::ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: 10,
        };
        let r = self
            .rt
            .block_on(async move { c.exec_sync(request).await })
            .unwrap()
            .into_inner();
        (r.exit_code, String::from_utf8_lossy(&r.stdout).into_owned())
    }

    fn remove_pods(&mut self) {
        let mut c = self.runtime();
        for id in std::mem::take(&mut self.pods) {
            self.rt.block_on(async {
                let _ = c
                    .stop_pod_sandbox(api::StopPodSandboxRequest {
                        pod_sandbox_id: id.clone(),
                    })
                    .await;
                let _ = c
                    .remove_pod_sandbox(api::RemovePodSandboxRequest {
                        pod_sandbox_id: id.clone(),
                    })
                    .await;
            });
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // A test that failed while containerd was stopped still leaves its pods to remove
        // (their shims and containers run on without containerd).
        if !self.pods.is_empty() && (self.child.is_some() || self.try_restart().is_ok()) {
            self.remove_pods();
        }
        self.stop();
        // Mounts left by a crashed test (rootfs of containers) would keep the directory busy.
        let dir = self.dir.path().display().to_string();
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
            let mut points: Vec<&str> = mounts
                .lines()
                .filter_map(|l| l.split_whitespace().nth(1))
                .filter(|p| p.starts_with(&dir))
                .collect();
            points.sort_by_key(|p| std::cmp::Reverse(p.len()));
            for p in points {
                let _ = Command::new("umount").args(["-l", p]).status();
            }
        }
    }
}

/// A pod sandbox created by [`Containerd::run_pod`].
pub struct Pod {
    pub id: String,
    pub config: api::PodSandboxConfig,
}

/// The socket's path as text.
pub fn display(p: &Path) -> String {
    p.display().to_string()
}
