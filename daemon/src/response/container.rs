//! Pausing or stopping the container of an alert through its runtime: the Docker Engine API
//! (`POST /containers/{id}/pause`, `…/stop?t=N`) or a CRI runtime's `StopContainer`. The
//! alert does not say which runtime runs the container, so Docker is asked first and each CRI
//! runtime after it, until one knows the container. CRI has no pause: a paused CRI container
//! is refused here (and `action = "pause"` with `runtime.cri_sockets` set is a config error).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::attribution::cri::CriRuntime;
use crate::attribution::docker::DockerRuntime;
use crate::config::ResponseAction;

use super::Outcome;

/// The runtimes the response talks to, with a timeout that covers a stop's grace period.
#[derive(Clone)]
pub struct ContainerActions {
    docker: DockerRuntime,
    cri: Vec<CriRuntime>,
    stop_grace: Duration,
}

impl ContainerActions {
    /// Clients of Docker at `docker_socket` and of the CRI runtimes at `cri_sockets`, whose
    /// requests may take `timeout` plus `stop_grace`.
    pub fn new(
        docker_socket: &Path,
        cri_sockets: &[PathBuf],
        timeout: Duration,
        stop_grace: Duration,
    ) -> Self {
        let timeout = timeout + stop_grace;
        Self {
            docker: DockerRuntime::new(docker_socket).with_timeout(timeout),
            cri: cri_sockets
                .iter()
                .map(|s| CriRuntime::new(s, timeout))
                .collect(),
            stop_grace,
        }
    }

    /// Pauses or stops container `id`; the outcome and what happened.
    pub async fn act(&self, action: ResponseAction, id: &str) -> (Outcome, String) {
        let verb = match action {
            ResponseAction::Pause => "pause".to_string(),
            ResponseAction::Stop => format!("stop?t={}", self.stop_grace.as_secs()),
            ResponseAction::Kill => {
                return (
                    Outcome::Failed,
                    "kill is not a container action".to_string(),
                );
            }
        };
        let short = &id[..id.len().min(12)];
        let mut errors = Vec::new();
        match self.docker.container_action(id, &verb).await {
            Ok(true) => {
                return (
                    Outcome::Done,
                    format!("{} container {short} (docker)", past(action)),
                );
            }
            Ok(false) => {}
            Err(e) => errors.push(e.to_string()),
        }
        for cri in &self.cri {
            if action == ResponseAction::Pause {
                errors.push("CRI runtimes cannot pause a container".to_string());
                break;
            }
            match cri.stop_container(id, self.stop_grace).await {
                Ok(true) => {
                    return (
                        Outcome::Done,
                        format!("{} container {short} (CRI)", past(action)),
                    );
                }
                Ok(false) => {}
                Err(e) => errors.push(e.to_string()),
            }
        }
        if errors.is_empty() {
            (
                Outcome::Gone,
                format!("no runtime knows container {short} (already removed)"),
            )
        } else {
            (
                Outcome::Failed,
                format!(
                    "cannot {} container {short}: {}",
                    action.name(),
                    errors.join("; ")
                ),
            )
        }
    }
}

fn past(action: ResponseAction) -> &'static str {
    match action {
        ResponseAction::Kill => "killed",
        ResponseAction::Pause => "paused",
        ResponseAction::Stop => "stopped",
    }
}
