//! The event pipeline: decoded kernel events -> process context and workload attribution ->
//! rules, learning or scoring, fusion -> alerts; the event printer and metrics on the side.
//! Per event in this file; the periodic read of the kernel's counters in [`counters`].
//!
//! It runs on one task and owns its state, so no locks are taken per event; the resolver is
//! shared and only awaits the container runtime on a cache miss.

mod counters;
pub mod observe;

use std::io::Write;
use std::sync::Arc;

use std::collections::HashSet;

use habit_models::rules::Rule;
use habit_probes::event::SeqRecord;
use habit_probes::{Event, EventBody};
use habit_profiles::observation::Observation;
use habit_profiles::store::WorkloadState;

use crate::alerts::alert::Alert;
use crate::attribution::WorkloadResolver;
use crate::falco::fields::RuleEvent;
use crate::falco::output::{Attributed, Clock};
use crate::learning::{Engine, Finding, Flag, unix_ms};
use crate::metrics::{Limit, LimitReached, Metrics};
use crate::pipeline::observe::{is_runtime, observations};
use crate::process::paths::absolute_path;
use crate::process::procfs::ProcSnapshot;
use crate::process::table::{ProcInfo, ProcTable};
use crate::rates::RateTracker;
use crate::rules::fusion::{Fusion, NEVER_LEARN_TAG};
use crate::sequences::SequenceTracker;

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
    printer: Option<Box<dyn Write + Send>>,
    /// Learning and scoring.
    engine: Engine,
    /// Static rules and their fusion with the baselines.
    fusion: Fusion,
    /// This counters interval's features of each workload, for the rate model.
    rates: RateTracker,
    /// Syscall sequences: kernel modes, learning data and per-thread scores.
    sequences: SequenceTracker,
    written: WrittenFiles,
    /// Reused buffers: no allocation per event for them.
    observations: Vec<Observation>,
    findings: Vec<Finding>,
}

impl Pipeline {
    pub fn new(
        resolver: Arc<WorkloadResolver>,
        metrics: Arc<Metrics>,
        printer: Option<Box<dyn Write + Send>>,
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
            rates,
            sequences,
            written,
            observations: Vec::with_capacity(8),
            findings: Vec::new(),
        }
    }

    /// Seeds the process table with processes that started before habitd.
    pub fn seed_processes(&mut self, snapshot: Vec<ProcSnapshot>) {
        for p in snapshot {
            self.procs.insert(
                p.tgid,
                ProcInfo {
                    exe: p
                        .exe
                        .map(|e| e.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    comm: p.comm,
                    args: p.cmdline,
                    ppid: p.ppid,
                    tty: p.tty,
                    cap_effective: p.cap_effective,
                },
            );
        }
    }

    /// Handles a batch of events in order; the alerts they raise are appended to `alerts`.
    pub async fn handle_batch(&mut self, events: &[Event], alerts: &mut Vec<Alert>) {
        for ev in events {
            self.handle(ev, alerts).await;
        }
        if let Some(out) = self.printer.as_mut()
            && let Err(e) = out.flush()
        {
            tracing::warn!(message = "Failed to flush printed events.", %e);
        }
    }

    /// Whether the event comes from the container runtime's own work (runc init in a
    /// container's cgroup before it executes the entrypoint): never the workload's habits.
    fn is_runtime_work(&self, ev: &Event) -> bool {
        let h = &ev.header;
        self.procs
            .get(h.tgid)
            .is_some_and(|p| is_runtime(&p.exe, &p.comm))
            || is_runtime("", &h.comm)
    }

    /// A syscall-sequence record: it names its workload (the id the kernel was given), so it
    /// is attributed only when it raises an alert. Records can be one per syscall of a traced
    /// thread: nothing here allocates unless it alerts.
    async fn handle_sequence(&mut self, ev: &Event, record: &SeqRecord, alerts: &mut Vec<Alert>) {
        self.metrics.count_event(&ev.body);
        if self.is_runtime_work(ev) {
            return;
        }
        let h = &ev.header;
        let Some(finding) = self
            .sequences
            .on_record(record, h.pid, h.tgid, &mut self.engine)
        else {
            return;
        };
        let workload = self.resolver.resolve(h.cgroup_id, None).await;
        let time = self.clock.wall(h.ts_boot_ns);
        let attributed = Attributed {
            event: ev,
            workload: &workload,
            process: self.procs.get(h.tgid).map(|p| &**p),
            path: None,
            time,
        };
        let view = RuleEvent {
            attributed: &attributed,
            procs: &self.procs,
            exe_written_by_container: false,
        };
        alerts.push(
            self.fusion
                .sequence_alert(&finding, view.output_fields(), time),
        );
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
        let workload = self.resolver.resolve(h.cgroup_id, hint).await;
        let path = absolute_path(ev);
        if matches!(ev.body, EventBody::Exec { .. }) {
            self.procs.apply(ev, path.as_deref().unwrap_or_default());
        }
        self.metrics.count_event(&ev.body);
        let time = self.clock.wall(h.ts_boot_ns);
        let attributed = Attributed {
            event: ev,
            workload: &workload,
            process: self.procs.get(h.tgid).map(|p| &**p),
            path: path.as_deref(),
            time,
        };

        // Provisional workloads (a cgroup or container not described yet) are neither learned
        // nor scored: their events may belong to any image. Nor is the container runtime's
        // own work inside a container's cgroup.
        let runtime = self.is_runtime_work(ev);
        let mut written = false;
        if !workload.is_unresolved() && !runtime {
            let container = workload.container_id.as_deref();
            written = match (&ev.body, container, path.as_deref()) {
                (EventBody::Exec { .. }, Some(c), Some(p)) => self.written.contains(c, p),
                (EventBody::Open { flags, .. }, Some(c), Some(p)) if flags & 3 != 0 => {
                    self.written.note(c, p);
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
            let parent_exe = self.procs.get(h.ppid).map(|p| p.exe.as_str());
            observations(ev, path.as_deref(), exe, parent_exe, &mut self.observations);
            self.findings.clear();
            let now = unix_ms(time);
            let state = self.engine.state(&workload.key);
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
        if let Some(out) = self.printer.as_mut()
            && let Err(e) = writeln!(out, "{}", view.to_json_line())
        {
            tracing::warn!(message = "Failed to print event.", %e);
        }
        if !matches!(ev.body, EventBody::Exec { .. }) {
            self.procs.apply(ev, "");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

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
