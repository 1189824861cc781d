//! The response: opt-in (`[response] enabled = true`), it acts on the alerts its policy
//! selects — kill the alert's process, or pause or stop its container — and reports every
//! decision as an alert of its own (rule [`RESPONSE_RULE`]) and in
//! `habitd_response_actions_total{action, outcome}`.
//!
//! Parts, each testable alone: the [`Policy`] (which alerts, which workloads; pure), the
//! [`limit::RateLimit`] (how many actions per workload and window; pure), [`process`] (a
//! verified kill through a pidfd) and [`container`] (the runtimes' pause and stop). The
//! [`Responder`] ties them together in the event loop, between the pipeline and the alert
//! sinks: a kill is a few syscalls and happens at once, within the batch that raised the
//! alert; a container action is a runtime request and runs on its own task, its alert coming
//! back through [`Responder::finished`].
//!
//! Never acted on: habitd itself, the container runtime's processes, the host's init, kernel
//! threads, habitd's own container, and host workloads unless a `host…` glob of
//! `response.workloads` names them.

pub mod container;
mod limit;
mod policy;
pub mod process;

use std::collections::HashMap;
use std::time::{Instant, SystemTime};

use anyhow::{Result, bail};
use prometheus::IntCounterVec;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::alerts::alert::Alert;
use crate::config::{Config, ResponseAction};
use crate::metrics::Metrics;
use container::ContainerActions;
use limit::{Admission, RateLimit};
pub use policy::{Policy, RESPONSE_RULE, Trigger};

/// Container actions whose alerts wait to be sent; more are sent as they finish.
const FINISHED_QUEUE: usize = 256;
/// Targets remembered as acted on (so that the several alerts of one process or container act
/// once); forgotten wholesale when full.
const MAX_ACTED: usize = 4096;

/// What became of one selected alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The action was taken (the signal sent, the runtime said done).
    Done,
    /// It was tried and failed (the error is in the alert).
    Failed,
    /// The target was gone: the process exited (or its pid is another process now), the
    /// container was removed.
    Gone,
    /// The target is protected (habitd, the runtime, init, a kernel thread, habitd's container).
    Refused,
    /// `dry_run`: what would have been done.
    DryRun,
    /// Over the workload's rate limit: alerted only.
    RateLimited,
}

impl Outcome {
    /// Every outcome, for the metric's labels.
    pub const ALL: [Outcome; 6] = [
        Outcome::Done,
        Outcome::Failed,
        Outcome::Gone,
        Outcome::Refused,
        Outcome::DryRun,
        Outcome::RateLimited,
    ];

    /// The name in alerts and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::Failed => "failed",
            Outcome::Gone => "gone",
            Outcome::Refused => "refused",
            Outcome::DryRun => "dry_run",
            Outcome::RateLimited => "rate_limited",
        }
    }
}

/// The response in the event loop.
pub struct Responder {
    enabled: bool,
    dry_run: bool,
    action: ResponseAction,
    policy: Policy,
    limit: RateLimit,
    /// Targets already acted on (`pid:N` with the process's start time, `container:ID`).
    acted: HashMap<String, Option<u64>>,
    /// habitd's own pid and container (never acted on).
    self_tgid: u32,
    self_container: Option<String>,
    containers: ContainerActions,
    metric: IntCounterVec,
    hostname: String,
    finished_tx: mpsc::Sender<Alert>,
    finished_rx: mpsc::Receiver<Alert>,
}

impl Responder {
    /// The response configured in `config` (checked by the configuration already). Fails when
    /// `kill` is asked of a habitd that does not share the host's pid namespace (its pidfds
    /// would name other processes than the probes' pids).
    pub fn new(
        config: &Config,
        cri_sockets: &[std::path::PathBuf],
        metrics: &Metrics,
        hostname: String,
    ) -> Result<Responder> {
        let r = &config.response;
        let self_tgid = crate::host::self_tgid();
        if r.enabled
            && !r.dry_run
            && r.action == ResponseAction::Kill
            && self_tgid != std::process::id()
        {
            bail!(
                "response.action = \"kill\" needs habitd in the host's pid namespace (hostPID: \
                 true in a pod): habitd is pid {} here and {self_tgid} on the host",
                std::process::id()
            );
        }
        let (finished_tx, finished_rx) = mpsc::channel(FINISHED_QUEUE);
        let responder = Responder {
            // A dry run needs no `enabled`: it cannot do anything.
            enabled: r.enabled || r.dry_run,
            dry_run: r.dry_run,
            action: r.action,
            policy: Policy::from_config(r)?,
            limit: RateLimit::new(r.max_actions, r.rate_window),
            acted: HashMap::new(),
            self_tgid,
            self_container: own_container(),
            containers: ContainerActions::new(
                &config.runtime.docker_socket,
                cri_sockets,
                config.runtime.timeout,
                r.stop_grace,
            ),
            metric: metrics.response_actions.clone(),
            hostname,
            finished_tx,
            finished_rx,
        };
        if responder.enabled {
            tracing::info!(
                message = "Response enabled.",
                action = r.action.name(),
                dry_run = r.dry_run,
                fused = r.fused,
                min_priority = %r.min_priority,
                workloads = ?r.workloads,
                rules = ?r.rules,
                max_actions = r.max_actions,
                rate_window = ?r.rate_window
            );
        }
        Ok(responder)
    }

    /// Acts on the alerts of `alerts` that the policy selects; the response alerts of the
    /// actions decided at once are appended to `alerts` (container actions come later,
    /// through [`Responder::finished`]).
    pub fn respond(&mut self, alerts: &mut Vec<Alert>) {
        if !self.enabled {
            return;
        }
        let mut responses = Vec::new();
        for alert in alerts.iter() {
            if let Some(trigger) = self.policy.select(alert)
                && let Some(response) = self.respond_to(alert, trigger)
            {
                responses.push(response);
            }
        }
        alerts.append(&mut responses);
    }

    /// The response alert of a container action that finished (pending while none has).
    pub async fn finished(&mut self) -> Option<Alert> {
        self.finished_rx.recv().await
    }

    fn respond_to(&mut self, alert: &Alert, trigger: Trigger) -> Option<Alert> {
        let action = self.action;
        let workload = alert.habitd.workload.clone();
        let container = container_of(alert);
        let pid = alert
            .output_fields
            .get("proc.pid")
            .and_then(Value::as_u64)
            .and_then(|p| u32::try_from(p).ok());
        // The target, the key under which it is acted on once, and (for a process) its start
        // time, which tells a reused pid from the process acted on.
        let (target, key, start) = match action {
            ResponseAction::Kill => match pid {
                Some(pid) => (
                    format!("pid {pid}"),
                    format!("pid:{pid}"),
                    process::start_ticks(crate::host::proc(), pid),
                ),
                None => {
                    // A rate anomaly names no process: nothing to kill, and no failure.
                    tracing::debug!(
                        message = "Response: the alert names no process (no proc.pid).",
                        rule = %alert.rule,
                        workload = %workload
                    );
                    return None;
                }
            },
            ResponseAction::Pause | ResponseAction::Stop => match &container {
                Some(c) => {
                    let short = &c[..c.len().min(12)];
                    (
                        format!("container {short}"),
                        format!("container:{short}"),
                        None,
                    )
                }
                None => {
                    return Some(self.report(
                        alert,
                        trigger,
                        Outcome::Failed,
                        "",
                        "the alert names no container (a host process)".into(),
                    ));
                }
            },
        };
        // One process or container is acted on once, whatever number of alerts it raises (a
        // reverse shell is an exec of nc, then of sh in the same process, possibly dead by
        // then); a pid whose start time changed is another process.
        let duplicate = self
            .acted
            .get(&key)
            .is_some_and(|recorded| match (recorded, start) {
                (Some(r), Some(s)) => *r == s,
                _ => true,
            });
        if duplicate {
            tracing::debug!(
                message = "Response: target already acted on.",
                target = %target,
                rule = %alert.rule
            );
            return None;
        }
        if let (Some(own), Some(c)) = (&self.self_container, &container)
            && (own.starts_with(c.as_str()) || c.starts_with(own.as_str()))
        {
            return Some(self.report(
                alert,
                trigger,
                Outcome::Refused,
                &target,
                format!("{target} is habitd's own container"),
            ));
        }
        if action == ResponseAction::Kill && pid == Some(self.self_tgid) {
            return Some(self.report(
                alert,
                trigger,
                Outcome::Refused,
                &target,
                format!("{target} is habitd itself"),
            ));
        }
        match self.limit.admit(&workload, Instant::now()) {
            Admission::Allowed => {}
            Admission::Limited { first } => {
                self.count(Outcome::RateLimited);
                tracing::debug!(
                    message = "Response: rate limited, alert only.",
                    workload = %workload,
                    target = %target,
                    rule = %alert.rule
                );
                return first.then(|| {
                    self.alert(
                        alert,
                        trigger,
                        Outcome::RateLimited,
                        &target,
                        "the workload's response rate limit is reached (response.max_actions per \
                         response.rate_window): alerts only until its window has room"
                            .into(),
                    )
                });
            }
        }
        if self.acted.len() >= MAX_ACTED {
            self.acted.clear();
        }
        self.acted.insert(key, start);
        if self.dry_run {
            let what = format!("dry run: would {} {target}", action.name());
            return Some(self.report(alert, trigger, Outcome::DryRun, &target, what));
        }
        match action {
            ResponseAction::Kill => {
                let kill = process::KillTarget {
                    pid: pid.unwrap_or(0),
                    not_after: alert.time,
                    container: container.as_deref(),
                    self_tgid: self.self_tgid,
                };
                let (outcome, what) = process::kill(crate::host::proc(), &kill);
                Some(self.report(alert, trigger, outcome, &target, what))
            }
            ResponseAction::Pause | ResponseAction::Stop => {
                let id = container.unwrap_or_default();
                let containers = self.containers.clone();
                let pending = self.alert(alert, trigger, Outcome::Done, &target, String::new());
                let metric = self.metric.clone();
                let tx = self.finished_tx.clone();
                tokio::spawn(async move {
                    let (outcome, what) = containers.act(action, &id).await;
                    metric
                        .with_label_values(&[action.name(), outcome.name()])
                        .inc();
                    let done = finish(pending, outcome, &what, SystemTime::now());
                    log_outcome(&done, outcome, &what);
                    let _ = tx.send(done).await;
                });
                None
            }
        }
    }

    /// Counts an outcome, logs it and builds its alert.
    fn report(
        &self,
        alert: &Alert,
        trigger: Trigger,
        outcome: Outcome,
        target: &str,
        what: String,
    ) -> Alert {
        self.count(outcome);
        let a = self.alert(alert, trigger, outcome, target, what.clone());
        log_outcome(&a, outcome, &what);
        a
    }

    fn count(&self, outcome: Outcome) {
        self.metric
            .with_label_values(&[self.action.name(), outcome.name()])
            .inc();
    }

    /// The response alert: rule [`RESPONSE_RULE`], the triggering alert's workload, priority
    /// and fields, and under `habitd.response.*` what was done to which target and how it went.
    fn alert(
        &self,
        alert: &Alert,
        trigger: Trigger,
        outcome: Outcome,
        target: &str,
        what: String,
    ) -> Alert {
        let now = SystemTime::now();
        let mut fields = alert.output_fields.clone();
        fields.insert("habitd.response.action".into(), json!(self.action.name()));
        fields.insert("habitd.response.outcome".into(), json!(outcome.name()));
        fields.insert("habitd.response.target".into(), json!(target));
        fields.insert("habitd.response.detail".into(), json!(what));
        fields.insert("habitd.response.dry_run".into(), json!(self.dry_run));
        fields.insert("habitd.response.trigger".into(), json!(trigger.name()));
        fields.insert("habitd.response.rule".into(), json!(alert.rule));
        fields.insert(
            "habitd.response.alert_time".into(),
            json!(crate::alerts::alert::rfc3339(alert.time)),
        );
        let mut a = Alert::new(
            now,
            RESPONSE_RULE,
            alert.priority,
            String::new(),
            alert.habitd.workload.as_str(),
            alert.habitd.baseline_state.as_str(),
            &self.hostname,
        )
        .with_output_fields(fields)
        .with_tags(["habitd", "response", self.action.name(), outcome.name()]);
        // The trigger's score, but not its novel items: the aggregator would fold the responses
        // to alerts of one novel item (each a different process) into one summary.
        a.habitd.anomaly_score = alert.habitd.anomaly_score;
        finish(a, outcome, &what, now)
    }
}

/// Sets the outcome, detail, time (`now`, when it was decided or done) and sentence of a
/// response alert.
fn finish(mut a: Alert, outcome: Outcome, what: &str, now: SystemTime) -> Alert {
    if let Some(Some(trigger_time)) = a
        .output_fields
        .get("habitd.response.alert_time")
        .and_then(Value::as_str)
        .map(|t| humantime::parse_rfc3339(t).ok())
    {
        a.output_fields.insert(
            "habitd.response.latency_ms".into(),
            json!(
                now.duration_since(trigger_time)
                    .unwrap_or_default()
                    .as_secs_f64()
                    * 1000.0
            ),
        );
    }
    a.time = now;
    a.output_fields
        .insert("habitd.response.outcome".into(), json!(outcome.name()));
    a.output_fields
        .insert("habitd.response.detail".into(), json!(what));
    if let Some(tag) = a.tags.last_mut() {
        *tag = outcome.name().to_string();
    }
    let action = a.output_fields["habitd.response.action"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let target = a.output_fields["habitd.response.target"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let rule = a.output_fields["habitd.response.rule"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let mut output = format!(
        "Response {action} {target} in {} for \"{rule}\": {} ({what})",
        a.habitd.workload,
        outcome.name()
    );
    crate::alerts::alert::append_field_details(&mut output, &a.output_fields);
    a.output = output;
    a
}

fn log_outcome(a: &Alert, outcome: Outcome, what: &str) {
    match outcome {
        Outcome::Done | Outcome::DryRun => {
            tracing::warn!(message = "Response.", outcome = outcome.name(), workload = %a.habitd.workload, %what)
        }
        _ => {
            tracing::warn!(message = "Response not carried out.", outcome = outcome.name(), workload = %a.habitd.workload, %what)
        }
    }
}

/// The alert's container id (full when known), `None` for host processes.
fn container_of(alert: &Alert) -> Option<String> {
    ["container.full_id", "container.id"]
        .iter()
        .filter_map(|k| alert.output_fields.get(*k).and_then(Value::as_str))
        .find(|id| !id.is_empty() && *id != "host")
        .map(str::to_owned)
}

/// habitd's own container id, when it runs in one (from its cgroup paths).
fn own_container() -> Option<String> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    cgroups.lines().find_map(|l| {
        let path = l.splitn(3, ':').nth(2)?;
        crate::attribution::cgroup::container_id_from_path(path)
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use habit_models::priority::Priority;

    use super::*;

    const NGINX: &str = "docker.io/library/nginx:1.25";

    fn responder(edit: impl FnOnce(&mut Config)) -> (Responder, Metrics) {
        let mut config = Config::default();
        config.response.enabled = true;
        config.response.dry_run = true;
        config.response.max_actions = 2;
        edit(&mut config);
        let metrics = Metrics::new().unwrap();
        let r = Responder::new(&config, &[], &metrics, "node".into()).unwrap();
        (r, metrics)
    }

    /// A fused alert of process `pid` in a container, `secs` after the epoch.
    fn fused(pid: u32, secs: u64) -> Alert {
        let mut fields = serde_json::Map::new();
        fields.insert("proc.pid".into(), json!(pid));
        fields.insert("container.id".into(), json!("0123456789ab"));
        Alert::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
            "Reverse shell or netcat with exec",
            Priority::Critical,
            "o",
            NGINX,
            "stable",
            "node",
        )
        .with_output_fields(fields)
        .with_novel("exec", "/bin/nc")
    }

    fn outcomes(alerts: &[Alert]) -> Vec<(String, String)> {
        alerts
            .iter()
            .filter(|a| a.rule == RESPONSE_RULE)
            .map(|a| {
                let f = &a.output_fields;
                (
                    f["habitd.response.outcome"].as_str().unwrap().to_owned(),
                    f["habitd.response.target"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    fn count(metrics: &Metrics, outcome: Outcome) -> u64 {
        metrics
            .response_actions
            .with_label_values(&["kill", outcome.name()])
            .get()
    }

    #[test]
    fn dry_run_reports_then_the_rate_limit_alerts_once_and_counts_the_rest() {
        let (mut r, metrics) = responder(|_| ());
        // Pids no process has here (above pid_max's default): nothing could be harmed.
        let mut alerts: Vec<Alert> = (0..5)
            .map(|i| fused(4_999_990 + i, 100 + u64::from(i)))
            .collect();
        r.respond(&mut alerts);
        assert_eq!(
            outcomes(&alerts),
            [
                ("dry_run".to_string(), "pid 4999990".to_string()),
                ("dry_run".to_string(), "pid 4999991".to_string()),
                ("rate_limited".to_string(), "pid 4999992".to_string()),
            ]
        );
        assert_eq!(count(&metrics, Outcome::DryRun), 2);
        assert_eq!(count(&metrics, Outcome::RateLimited), 3);
        assert_eq!(count(&metrics, Outcome::Done), 0);
        let first = alerts.iter().find(|a| a.rule == RESPONSE_RULE).unwrap();
        assert!(
            first.output.contains("would kill pid 4999990"),
            "{}",
            first.output
        );
        assert_eq!(first.habitd.workload, NGINX);
        assert_eq!(first.tags, ["habitd", "response", "kill", "dry_run"]);
        // Response alerts are not responded to.
        let before = alerts.len();
        let mut again: Vec<Alert> = alerts
            .iter()
            .filter(|a| a.rule == RESPONSE_RULE)
            .cloned()
            .collect();
        r.respond(&mut again);
        assert_eq!(again.len(), 3);
        assert_eq!(alerts.len(), before);
    }

    #[test]
    fn one_process_is_acted_on_once_and_habitd_never() {
        let (mut r, metrics) = responder(|c| c.response.max_actions = 10);
        let mut alerts = vec![fused(4_999_990, 100), fused(4_999_990, 100)];
        r.respond(&mut alerts);
        assert_eq!(outcomes(&alerts).len(), 1);
        let mut me = fused(std::process::id(), 100);
        me.output_fields.remove("container.id");
        me.habitd.workload = "docker.io/library/habitd:1".into();
        let mut alerts = vec![me];
        r.respond(&mut alerts);
        assert_eq!(
            outcomes(&alerts),
            [("refused".to_string(), format!("pid {}", std::process::id()))]
        );
        assert_eq!(count(&metrics, Outcome::Refused), 1);
        // An alert without a process (a rate anomaly): nothing to act on, nothing counted.
        let mut nameless = fused(1, 100);
        nameless.output_fields.remove("proc.pid");
        let mut alerts = vec![nameless];
        r.respond(&mut alerts);
        assert!(outcomes(&alerts).is_empty());
        assert_eq!(count(&metrics, Outcome::Failed), 0);
    }

    #[test]
    fn a_reused_pid_is_another_process_and_a_dead_one_is_not_acted_on_twice() {
        let (mut r, _metrics) = responder(|c| c.response.max_actions = 10);
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        // An earlier process of the same pid was acted on (start time 1 tick after boot).
        r.acted.insert(format!("pid:{pid}"), Some(1));
        let mut alerts = vec![fused(pid, 100)];
        r.respond(&mut alerts);
        assert_eq!(outcomes(&alerts).len(), 1, "a new process");
        let mut alerts = vec![fused(pid, 101)];
        r.respond(&mut alerts);
        assert!(outcomes(&alerts).is_empty(), "the same process again");
        child.kill().unwrap();
        child.wait().unwrap();
        // Dead now (its start time unreadable): its later alerts are still the same target.
        let mut alerts = vec![fused(pid, 102)];
        r.respond(&mut alerts);
        assert!(outcomes(&alerts).is_empty(), "the dead process again");
    }

    #[test]
    fn off_means_nothing_happens_and_the_metric_is_at_zero() {
        let (mut r, metrics) = responder(|c| {
            c.response.enabled = false;
            c.response.dry_run = false;
        });
        let mut alerts = vec![fused(4_999_990, 100)];
        r.respond(&mut alerts);
        assert_eq!(alerts.len(), 1);
        // A dry run alone (`--response-dry-run`) runs the policy.
        let (mut dry, _) = responder(|c| c.response.enabled = false);
        let mut alerts = vec![fused(4_999_990, 100)];
        dry.respond(&mut alerts);
        assert_eq!(
            outcomes(&alerts),
            [("dry_run".to_string(), "pid 4999990".to_string())]
        );
        let text = metrics.render();
        for action in ResponseAction::ALL {
            for outcome in Outcome::ALL {
                let sample = format!(
                    "habitd_response_actions_total{{action=\"{}\",outcome=\"{}\"}} 0",
                    action.name(),
                    outcome.name()
                );
                assert!(text.contains(&sample), "{sample}");
            }
        }
    }
}
