//! The event pipeline: decoded kernel events -> process context and workload attribution ->
//! rules, learning or scoring, fusion -> alerts; the event printer and metrics on the side.
//! Per event in this file; the periodic read of the kernel's counters in [`counters`].
//!
//! It runs on one task and owns its state, so no locks are taken per event; the resolver is
//! shared and only awaits the container runtime on a cache miss.

mod counters;
pub mod observe;
pub mod pending;
pub mod printer;
mod stopping;

use std::sync::Arc;

use std::collections::HashSet;

use habit_models::rules::Rule;
use habit_probes::event::SeqRecord;
use habit_probes::{Event, EventBody};
use habit_profiles::observation::Observation;
use habit_profiles::profile::ContainerOrigin;
use habit_profiles::store::WorkloadState;
use habit_profiles::workload::WorkloadKey;

use crate::alerts::alert::Alert;
use crate::attribution::{Resolution, Workload, WorkloadResolver};
use crate::falco::fields::RuleEvent;
use crate::falco::output::{Attributed, Clock};
use crate::learning::{Engine, Finding, Flag, unix_ms};
use crate::metrics::{Limit, LimitReached, Metrics};
use crate::pipeline::observe::observations;
use crate::process::paths::{absolute_path, second_path};
use crate::process::procfs::ProcSnapshot;
use crate::process::runtime::RUNTIME_PARENT;
use crate::process::table::{ProcInfo, ProcTable};
use crate::rates::RateTracker;
use crate::rules::fusion::{ALWAYS_TAG, Fusion, NEVER_LEARN_TAG};
use crate::sequences::SequenceTracker;
use pending::{Pending, Release};
use printer::EventPrinter;

/// Most processes tracked at once (a node has at most pid_max; this bounds our memory).
const PROC_TABLE_LIMIT: usize = 1 << 20;

/// Most (container, path) pairs remembered as written by their container.
const WRITTEN_LIMIT: usize = 65_536;

/// Files each container wrote since it started: an exec of one of them is a binary dropped
/// then executed (`proc.is_exe_upper_layer`). Bounded: forgotten wholesale when full, which
/// `habitd_limit_reached_total{limit="written_files"}` counts and a warning reports.
struct WrittenFiles {
    files: HashSet<String>,
    limit: usize,
    full: LimitReached,
}

impl WrittenFiles {
    fn new(limit: usize, metrics: &Metrics) -> Self {
        Self {
            files: HashSet::new(),
            limit,
            full: LimitReached::new(Limit::WrittenFiles, limit, metrics),
        }
    }

    fn key(container: &str, path: &str) -> String {
        format!("{container}\0{path}")
    }

    fn note(&mut self, container: &str, path: &str) {
        let key = Self::key(container, path);
        if self.files.len() >= self.limit && !self.files.contains(&key) {
            self.files.clear();
            self.full.reached(1);
        }
        self.files.insert(key);
    }

    fn contains(&self, container: &str, path: &str) -> bool {
        self.files.contains(&Self::key(container, path))
    }
}

pub struct Pipeline {
    resolver: Arc<WorkloadResolver>,
    metrics: Arc<Metrics>,
    procs: ProcTable,
    clock: Clock,
    /// Where `--print-events` writes; `None` when disabled.
    printer: Option<EventPrinter>,
    /// Learning and scoring.
    engine: Engine,
    /// Static rules and their fusion with the baselines.
    fusion: Fusion,
    /// This counters interval's features of each workload, for the rate model.
    rates: RateTracker,
    /// Syscall sequences: kernel modes, learning data and per-thread scores.
    sequences: SequenceTracker,
    /// Sequence alerts waiting to see whether their container is stopping.
    stopping: stopping::StoppingCheck,
    written: WrittenFiles,
    /// Events of containers not described yet, held until they are.
    pending: Pending,
    /// The latest time learning and scoring were given (they need it not to go backwards).
    learned_until: u64,
    /// Container cgroups whose first exec was seen (to recognise an entrypoint).
    execs_seen: HashSet<u64>,
    /// Reused buffers: no allocation per event for them.
    observations: Vec<Observation>,
    findings: Vec<Finding>,
}

impl Pipeline {
    pub fn new(
        resolver: Arc<WorkloadResolver>,
        metrics: Arc<Metrics>,
        printer: Option<EventPrinter>,
        engine: Engine,
        fusion: Fusion,
        rates: RateTracker,
        sequences: SequenceTracker,
    ) -> Self {
        let procs = ProcTable::new(PROC_TABLE_LIMIT, &metrics);
        let written = WrittenFiles::new(WRITTEN_LIMIT, &metrics);
        Self {
            resolver,
            metrics,
            procs,
            clock: Clock::new(),
            printer,
            engine,
            fusion,
            stopping: stopping::StoppingCheck::new(rates.interval()),
            rates,
            sequences,
            written,
            pending: Pending::new(
                pending::PendingConfig::default(),
                pending::PendingMetrics::new(),
            ),
            execs_seen: HashSet::new(),
            learned_until: 0,
            observations: Vec::with_capacity(8),
            findings: Vec::new(),
        }
    }

    /// Replaces the buffer of events waiting for a description (bounds and metrics).
    pub fn set_pending(&mut self, pending: Pending) {
        self.pending = pending;
    }

    /// Seeds the process table with processes that started before habitd.
    pub fn seed_processes(&mut self, snapshot: Vec<ProcSnapshot>) {
        for p in snapshot {
            let exe = p
                .exe
                .map(|e| e.to_string_lossy().into_owned())
                .unwrap_or_default();
            let runtime = self.procs.seeded_is_runtime(p.tgid, &exe);
            self.procs.insert(
                p.tgid,
                ProcInfo {
                    exe,
                    comm: p.comm,
                    args: p.cmdline,
                    ppid: p.ppid,
                    tty: p.tty,
                    cap_effective: p.cap_effective,
                    runtime,
                },
            );
        }
    }

    /// Handles a batch of events in order; the alerts they raise are appended to `alerts`.
    pub async fn handle_batch(&mut self, events: &[Event], alerts: &mut Vec<Alert>) {
        self.release_pending(alerts).await;
        for ev in events {
            self.handle(ev, alerts).await;
        }
        self.flush_printer();
        if let Some(newest) = events.iter().map(|e| e.header.ts_boot_ns).max() {
            let at = self.clock.wall(newest);
            if let Ok(unix) = at.duration_since(std::time::UNIX_EPOCH) {
                self.metrics.events_handled_until.set(unix.as_secs_f64());
            }
        }
    }

    /// Writes the printed lines of the events handled so far.
    fn flush_printer(&mut self) {
        if let Some(printer) = self.printer.as_mut() {
            printer.flush();
        }
    }

    /// Whether the event comes from the container runtime's own work (runc init in a
    /// container's cgroup before it executes the entrypoint): never the workload's habits.
    /// Decided by the process table from where the process was executed; nothing the event's
    /// thread can set (its comm) counts (`process::runtime`).
    fn is_runtime_work(&self, ev: &Event) -> bool {
        self.procs.get(ev.header.tgid).is_some_and(|p| p.runtime)
    }

    /// A syscall-sequence record: it names its workload (the id the kernel was given), so it
    /// is attributed only when it raises an alert. Records can be one per syscall of a traced
    /// thread: nothing here allocates unless it alerts.
    async fn handle_sequence(&mut self, ev: &Event, record: &SeqRecord, alerts: &mut Vec<Alert>) {
        self.metrics.count_event(&ev.body);
        self.procs
            .refresh_missed_exec(ev.header.tgid, &ev.header.comm, crate::host::proc());
        if self.is_runtime_work(ev) {
            return;
        }
        let h = &ev.header;
        let time = self.clock.wall(h.ts_boot_ns);
        // A container's start-up is not evidence (it is not the workload's habit either for
        // the rate model, `rates`): its threads are scored from the end of it, afresh.
        let starting = self.rates.is_starting(h.cgroup_id, time);
        let Some(finding) =
            self.sequences
                .on_record(record, h.pid, h.tgid, starting, &mut self.engine)
        else {
            return;
        };
        let workload = match self.resolver.resolve_now(h.cgroup_id, None).await {
            Resolution::Ready(w) | Resolution::Pending(w) => w,
        };
        let attributed = Attributed {
            event: ev,
            workload: &workload,
            process: self.procs.get(h.tgid).map(|p| &**p),
            path: None,
            path2: None,
            time,
        };
        let view = RuleEvent {
            attributed: &attributed,
            procs: &self.procs,
            exe_written_by_container: false,
        };
        let alert = self
            .fusion
            .sequence_alert(&finding, view.output_fields(), time);
        self.stopping
            .wait(alert, h.cgroup_id, std::time::SystemTime::now(), alerts);
    }

    async fn handle(&mut self, ev: &Event, alerts: &mut Vec<Alert>) {
        if let EventBody::Sequence(record) = &ev.body {
            return self.handle_sequence(ev, record, alerts).await;
        }
        let h = &ev.header;
        let hint = match &ev.body {
            EventBody::Exec { cgroup_v1_name, .. } => Some(cgroup_v1_name.as_str()),
            _ => None,
        };
        let cgroup = h.cgroup_id;
        // Events of a cgroup already held queue behind the earlier ones, in order.
        if self.pending.holds(cgroup) {
            if let Some(released) = self.pending.hold(ev, hint) {
                let workload = match self.resolver.resolve_now(cgroup, hint).await {
                    Resolution::Ready(w) | Resolution::Pending(w) => w,
                };
                self.process_all(released, &workload, alerts);
            }
            return;
        }
        match self.resolver.resolve_now(cgroup, hint).await {
            Resolution::Ready(workload) => {
                self.pending.described(cgroup);
                self.process(ev, &workload, alerts);
            }
            Resolution::Pending(workload) if self.pending.gave_up(cgroup) => {
                self.process(ev, &workload, alerts);
            }
            // A container named only by this exec's v1 cgroup hint, in a cgroup that is the
            // host's (a host without v2 container cgroups, or a runtime helper that joined a
            // container's v1 cgroups: dockerd's `setup-resolver`). Holding it would hold the
            // host's cgroup, and every host event queued behind it would be released as that
            // container's (a scale-up once attributed the test's own clients, dockerd and
            // iptables to a replica). It goes on under the provisional key, unlearned.
            Resolution::Pending(workload) if self.resolver.is_host_cgroup(cgroup).await => {
                self.process(ev, &workload, alerts);
            }
            Resolution::Pending(workload) => {
                if let Some(released) = self.pending.hold(ev, hint) {
                    self.process_all(released, &workload, alerts);
                }
            }
        }
    }

    /// Lets go the held events whose container is now described (under its workload) or whose
    /// deadline passed (under the provisional key). Called before each batch and on a timer.
    pub async fn release_pending(&mut self, alerts: &mut Vec<Alert>) {
        self.release_held(alerts, false).await;
    }

    /// At shutdown: lets go every held event (those of undescribed containers under their
    /// provisional key, as at their deadline), so that none is dropped unhandled and unprinted.
    pub async fn release_all_pending(&mut self, alerts: &mut Vec<Alert>) {
        self.release_held(alerts, true).await;
        self.stopping.release_all(alerts);
    }

    async fn release_held(&mut self, alerts: &mut Vec<Alert>, all: bool) {
        if self.pending.len() == 0 {
            return;
        }
        let now = std::time::Instant::now();
        for (cgroup, hint) in self.pending.cgroups() {
            let (why, workload) = match self.resolver.resolve_now(cgroup, hint.as_deref()).await {
                Resolution::Ready(w) => (Release::Described, w),
                Resolution::Pending(w) if all || self.pending.is_due(cgroup, now) => {
                    (Release::Deadline, w)
                }
                Resolution::Pending(_) => continue,
            };
            let events = self.pending.take(cgroup, why);
            if why == Release::Deadline {
                tracing::info!(
                    message = "No runtime described this container in time: its first events go on unlearned under the provisional key.",
                    workload = %workload.key,
                    events = events.len()
                );
            }
            self.process_all(events, &workload, alerts);
        }
        // Released events are printed now, not with the next batch.
        self.flush_printer();
    }

    fn process_all(
        &mut self,
        events: std::collections::VecDeque<Event>,
        workload: &Workload,
        alerts: &mut Vec<Alert>,
    ) {
        for ev in &events {
            self.process(ev, workload, alerts);
        }
    }

    /// The time given to learning and scoring: never earlier than the last one given. Events
    /// reach learning out of order (held events after later ones of other cgroups; CPUs' ring
    /// buffer records interleave; the counters use the wall clock), and a profile's interval
    /// accounting needs time not to go backwards.
    fn learn_time(&mut self, t: u64) -> u64 {
        self.learned_until = self.learned_until.max(t);
        self.learned_until
    }

    /// Handles one event attributed to `workload`.
    fn process(&mut self, ev: &Event, workload: &Workload, alerts: &mut Vec<Alert>) {
        let h = &ev.header;
        let path = absolute_path(ev);
        let path2 = second_path(ev);
        // A program the container runtime executes itself (runc init becoming the `docker
        // exec`'d command) was started by the runtime, whatever its parent pid says by then.
        let exec_by_runtime = matches!(ev.body, EventBody::Exec { .. })
            && self.procs.get(h.tgid).is_some_and(|p| p.runtime);
        if matches!(ev.body, EventBody::Exec { .. }) {
            self.procs.apply(ev, path.as_deref().unwrap_or_default());
        } else {
            self.procs
                .refresh_missed_exec(h.tgid, &h.comm, crate::host::proc());
        }
        self.metrics.count_event(&ev.body);
        let time = self.clock.wall(h.ts_boot_ns);
        let learn_now = self.learn_time(unix_ms(time));
        let attributed = Attributed {
            event: ev,
            workload,
            process: self.procs.get(h.tgid).map(|p| &**p),
            path: path.as_deref(),
            path2: path2.as_deref(),
            time,
        };

        // Provisional workloads (a cgroup or container not described yet) are neither learned
        // nor scored: their events may belong to any image. Nor is the container runtime's
        // own work inside a container's cgroup.
        let runtime = self.is_runtime_work(ev);
        let mut written = false;
        let entrypoint = !runtime && is_entrypoint(&mut self.execs_seen, ev, workload);
        if !workload.is_unresolved() && !workload.is_pod_sandbox() && !runtime {
            let container = workload.container_id.as_deref();
            written = match (&ev.body, container, path.as_deref()) {
                (EventBody::Exec { .. }, Some(c), Some(p)) => self.written.contains(c, p),
                (EventBody::Open { flags, .. }, Some(c), Some(p)) if flags & 3 != 0 => {
                    self.written.note(c, p);
                    false
                }
                // A binary dropped under another name and renamed or linked into place.
                (EventBody::FileChange(_), Some(c), _) => {
                    if let Some(p) = path2.as_deref() {
                        self.written.note(c, p);
                    }
                    false
                }
                _ => false,
            };
            let rule_event = RuleEvent {
                attributed: &attributed,
                procs: &self.procs,
                exe_written_by_container: written,
            };
            let mut hits: Vec<&Rule> = Vec::new();
            self.fusion.rules.matching_rules(&rule_event, &mut hits);

            self.rates
                .on_event(&workload.key, h.cgroup_id, &ev.body, path.as_deref(), time);
            self.observations.clear();
            let exe = self.procs.get(h.tgid).map(|p| p.exe.as_str());
            let parent = self.procs.get(h.ppid);
            let parent_exe = exec_parent(
                exec_by_runtime || parent.is_some_and(|p| p.runtime),
                parent.map(|p| p.exe.as_str()),
            );
            // A connection to a container habitd has described is to that container's
            // workload (any replica), not to the replica's address.
            let peer = match &ev.body {
                EventBody::Connect { remote, .. } => {
                    self.resolver.workload_at(remote.ip().to_canonical())
                }
                _ => None,
            };
            observations(
                ev,
                path.as_deref(),
                path2.as_deref(),
                exe,
                parent_exe,
                peer.as_ref().map(WorkloadKey::as_str),
                &mut self.observations,
            );
            self.findings.clear();
            let now = learn_now;
            if let Some(info) = &workload.container {
                // For the baseline's metadata: image digest and id, pod namespace and labels.
                let origin = ContainerOrigin {
                    digest: info.image_digest.as_deref(),
                    image_id: info.image_id.as_deref(),
                    namespace: info.k8s_namespace.as_deref(),
                    labels: &info.k8s_pod_labels,
                };
                self.engine
                    .note_container(&workload.key, &info.id, &origin, now);
            }
            let state = self.engine.state(&workload.key);
            if entrypoint
                && state == WorkloadState::Learning
                && !hits.is_empty()
                && hits
                    .iter()
                    .all(|r| !r.has_tag(NEVER_LEARN_TAG) && !r.has_tag(ALWAYS_TAG))
            {
                // A learning workload's entrypoint is its configuration: learned, and its rule
                // hits (a shell entrypoint) counted as explained instead of alerted.
                for r in &hits {
                    self.metrics.rule_hits.with_label_values(&[r.name()]).inc();
                    self.metrics
                        .alerts_suppressed
                        .with_label_values(&[r.name()])
                        .inc();
                }
                tracing::debug!(
                    message = "Rule hit on a container's entrypoint while learning: learned.",
                    workload = %workload.key
                );
                hits.clear();
            }
            if !hits.is_empty() && state == WorkloadState::Learning {
                // Never learn an attack: what a rule flags is held, not learned.
                let flags: Vec<Flag<'_>> = hits
                    .iter()
                    .map(|r| Flag {
                        rule: r.name(),
                        never_learn: r.has_tag(NEVER_LEARN_TAG),
                    })
                    .collect();
                self.engine
                    .hold(&workload.key, container, &self.observations, &flags, now);
            } else {
                self.engine.observe(
                    &workload.key,
                    container,
                    &self.observations,
                    now,
                    &mut self.findings,
                );
            }
            self.fusion.decide(
                &hits,
                &rule_event,
                &self.findings,
                !self.observations.is_empty(),
                state,
                workload.key.as_str(),
                alerts,
            );
        }

        // The one Falco view, as the rules read it (printed only with --print-events).
        let view = RuleEvent {
            attributed: &attributed,
            procs: &self.procs,
            exe_written_by_container: written,
        };
        if let Some(printer) = self.printer.as_mut() {
            printer.print(&view);
        }
        if !matches!(ev.body, EventBody::Exec { .. }) {
            self.procs.apply(ev, "");
        }
    }
}

/// The parent an exec's process edge names: the container runtime when the process that
/// executed was the runtime itself (runc init running a `docker exec`'d command) or its
/// parent is (the shim, once runc exited), else its parent's executable. By the time the exec is processed, runc's parent may have exited and
/// the process been re-parented, or its parent not be in the table: the edge then went missing
/// in one learning round of three and stayed held, and the same `docker exec` in detection
/// was "novel: <runtime> -> /bin/sh".
fn exec_parent(exec_by_runtime: bool, parent_exe: Option<&str>) -> Option<&str> {
    if exec_by_runtime {
        Some(RUNTIME_PARENT)
    } else {
        parent_exe
    }
}

/// Whether a process is pid 1 of its pid namespace (the last `NSpid` of its status is 1);
/// false when it is gone.
fn is_pid_one_of_its_namespace(tgid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{tgid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("NSpid:"))
                .and_then(|pids| pids.split_whitespace().last().map(|p| p == "1"))
        })
        .unwrap_or(false)
}

/// Whether an exec is a container's entrypoint: the first exec seen in the container's
/// cgroup, by the container's init process as its runtime names it, or by the process that is
/// pid 1 of its pid namespace (a restarted container's description can be older than it).
///
/// An entrypoint is configuration (the image's or the pod's command), so a rule it matches
/// (unless the rule is `habitd.never_learn` or `habitd.always`) neither keeps it out of the
/// baseline nor alerts while the workload learns: a shell entrypoint is learned and its
/// restarts raise nothing.
fn is_entrypoint(execs_seen: &mut HashSet<u64>, ev: &Event, workload: &Workload) -> bool {
    let Some(container) = &workload.container else {
        return false;
    };
    if !matches!(ev.body, EventBody::Exec { .. }) {
        return false;
    }
    if execs_seen.len() >= WRITTEN_LIMIT {
        execs_seen.clear();
    }
    execs_seen.insert(ev.header.cgroup_id)
        && (container.init_pid == Some(ev.header.tgid)
            || is_pid_one_of_its_namespace(ev.header.tgid))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_program_the_runtime_executes_has_the_runtime_as_parent() {
        // runc init became the command: the runtime, whatever the parent pid says.
        assert_eq!(exec_parent(true, None), Some(RUNTIME_PARENT));
        assert_eq!(
            exec_parent(true, Some("/usr/bin/containerd-shim-runc-v2")),
            Some(RUNTIME_PARENT)
        );
        assert_eq!(exec_parent(true, Some("/bin/sh")), Some(RUNTIME_PARENT));
        // Anything else: its parent, if known.
        assert_eq!(exec_parent(false, Some("/bin/sh")), Some("/bin/sh"));
        assert_eq!(exec_parent(false, None), None);
    }

    #[test]
    fn written_files_forgotten_when_full_is_a_metric_and_one_warning() {
        let metrics = Metrics::new().unwrap();
        let mut written = WrittenFiles::new(2, &metrics);
        written.note("c1", "/tmp/a");
        written.note("c1", "/tmp/b");
        written.note("c1", "/tmp/b"); // already known: nothing is forgotten
        assert_eq!(written.full.count(), 0);
        assert!(written.contains("c1", "/tmp/a"));
        written.note("c1", "/tmp/c"); // full: forgotten, then noted
        assert!(!written.contains("c1", "/tmp/a"));
        assert!(written.contains("c1", "/tmp/c"));
        written.note("c2", "/tmp/d");
        written.note("c2", "/tmp/e"); // full again
        assert_eq!(written.full.count(), 2);
        assert_eq!(written.full.lines(), 1, "one warning per period");
        assert!(
            metrics
                .render()
                .contains("habitd_limit_reached_total{limit=\"written_files\"} 2")
        );
    }
}
