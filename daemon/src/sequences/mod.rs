//! The syscall-sequence path in user space: which workloads the kernel follows and how
//! (`probes/bpf/sequence.h`), and what comes back: learning counts and calibration traces go to
//! the [`Engine`], detection reports are scored per thread with the workload's
//! [`SequenceModel`], and a thread whose score passes the calibrated threshold raises an alert
//! naming the process and the unknown syscall sequences.
//!
//! Kernel maps are only written from the daemon loop ([`SequenceTracker::sync`] each counters
//! interval, [`SequenceTracker::flush`] after each batch): the pipeline queues the writes.

use std::collections::HashMap;
use std::sync::Arc;

use habit_models::sequence::{SequenceModel, ThreadScore, gram};
use habit_probes::event::SeqRecord;
use habit_probes::loader::SequenceMaps;
use habit_probes::{ProbeError, abi, syscall_names};
use habit_profiles::workload::WorkloadKey;

use crate::learning::{Engine, SequenceMode};
use crate::metrics::Metrics;

/// Most threads scored at once; beyond, the table is cleared (a bound on memory, logged).
const MAX_THREADS: usize = 65_536;
/// New threads traced whole per cgroup and counters interval while learning: spreads the
/// calibration traces over the learning period instead of taking the first threads only.
const SAMPLES_PER_INTERVAL: usize = 2;

/// The lowest threshold a thread's statistic is held to, nats per syscall. Calibration takes the
/// quantile of held-out learning threads; when those made no unknown gram at all (a workload
/// whose threads all repeat one code path) that quantile is 0, and a single new 6-gram in a
/// long thread would alert. A mean surprise of one nat per syscall over the thread's recent
/// syscalls means its behaviour is, per syscall, e times less likely than learned: a change of
/// habit, not a stray gram.
pub const MIN_THRESHOLD: f64 = 1.0;

/// The least evidence a thread's sequence alert needs: this many syscalls (6-grams) scored.
/// A thread's statistic is a mean over its recent syscalls, and over a handful of them it
/// says nothing: after a restart, a thread with 2 syscalls, both in 6-grams never seen
/// while learning (its start-up path was not followed then), scored "2 of 2 unknown", a
/// mean far above any threshold. 64 syscalls is a few requests' worth for a server thread
/// and the length of the shortest ADFA-LD attack traces' suspicious part; a shorter
/// process that does something new is a new executable, file or connection, which the
/// other dimensions name. The thread keeps being scored and alerts once it has the evidence.
pub const MIN_EVIDENCE_SYSCALLS: u64 = 64;

/// Whether a thread's statistic raises an alert: above the threshold, with at least
/// [`MIN_EVIDENCE_SYSCALLS`] syscalls behind it, and the thread not alerted yet.
pub fn is_sequence_alert(statistic: f64, threshold: f64, grams: u64, alerted: bool) -> bool {
    statistic > threshold && grams >= MIN_EVIDENCE_SYSCALLS && !alerted
}

/// Why a thread's sequence alert was raised.
#[derive(Debug, Clone)]
pub struct SequenceFinding {
    pub workload: WorkloadKey,
    pub tid: u32,
    pub tgid: u32,
    /// The thread's statistic: mean surprise per syscall (nats) over about its last 2048.
    pub statistic: f64,
    pub threshold: f64,
    /// Fraction of calibration threads that scored at least as high.
    pub exceedance: f64,
    /// Grams scored and how many of them were never made while learning.
    pub grams: u64,
    pub unknown: u64,
    /// The most surprising unknown sequences, as syscall names.
    pub examples: Vec<String>,
}

/// A workload the kernel follows: its id in the kernel maps and what was loaded for it.
struct Followed {
    key: WorkloadKey,
    /// The model whose values are in the kernel map (detection).
    loaded: Option<Arc<SequenceModel>>,
    learning: bool,
    /// The kernel map may hold grams of this workload (a fresh id holds none: no map walk).
    used: bool,
}

impl Followed {
    /// Removes the workload's grams from the kernel map and forgets their counts, before it
    /// starts learning afresh or a new model is loaded.
    fn reset(
        &mut self,
        wid: u32,
        maps: &mut SequenceMaps,
        previous: &mut HashMap<(u32, u64), u64>,
    ) -> Result<(), ProbeError> {
        if self.used {
            maps.clear(wid)?;
            previous.retain(|(w, _), _| *w != wid);
        }
        self.used = true;
        Ok(())
    }
}

/// A thread being scored.
struct Thread {
    wid: u32,
    score: ThreadScore,
    alerted: bool,
}

impl Thread {
    fn new(wid: u32) -> Self {
        Self {
            wid,
            score: ThreadScore::default(),
            alerted: false,
        }
    }
}

pub struct SequenceTracker {
    enabled: bool,
    metrics: Arc<Metrics>,
    false_alarm_rate: f64,
    wids: HashMap<WorkloadKey, u32>,
    followed: HashMap<u32, Followed>,
    /// What each cgroup slot was last set to, and for which cgroup (a released slot is
    /// switched off by the kernel side and may come back for another cgroup).
    slots: HashMap<u32, (u64, abi::SeqSlot)>,
    /// The kernel counts of learning grams at the previous read, to learn deltas.
    previous: HashMap<(u32, u64), u64>,
    threads: HashMap<u32, Thread>,
    /// Unknown grams to value in the kernel, so that they cross the ring buffer once.
    pending: Vec<(u32, u64, u32)>,
}

impl SequenceTracker {
    /// `enabled` false leaves every slot off (the kernel only keeps the history).
    pub fn new(enabled: bool, false_alarm_rate: f64, metrics: Arc<Metrics>) -> Self {
        Self {
            enabled,
            metrics,
            false_alarm_rate,
            wids: HashMap::new(),
            followed: HashMap::new(),
            slots: HashMap::new(),
            previous: HashMap::new(),
            threads: HashMap::new(),
            pending: Vec::new(),
        }
    }

    fn wid(&mut self, key: &WorkloadKey) -> u32 {
        if let Some(&wid) = self.wids.get(key) {
            return wid;
        }
        let wid = self.wids.len() as u32 + 1;
        self.wids.insert(key.clone(), wid);
        self.followed.insert(
            wid,
            Followed {
                key: key.clone(),
                loaded: None,
                learning: false,
                used: false,
            },
        );
        wid
    }

    /// Each counters interval: learns the kernel's gram counts, loads the models of workloads
    /// that entered detection, and sets every cgroup slot's mode. `slots` are the kernel's
    /// (slot, cgroup id, workload) triples (`None`: not attributed yet, left off).
    pub fn sync(
        &mut self,
        maps: &mut SequenceMaps,
        slots: &[(u32, u64, Option<WorkloadKey>)],
        engine: &mut Engine,
    ) -> Result<(), ProbeError> {
        if !self.enabled {
            return Ok(());
        }
        self.learn_counts(maps, engine);
        for (slot, cgroup_id, key) in slots {
            let config = match key {
                Some(key) => self.slot_config(maps, key, engine)?,
                None => abi::SeqSlot::default(),
            };
            // A learning slot is rewritten every time: the kernel spends its samples and
            // counts the new grams it inserted against HABIT_SEQ_SLOT_GRAMS per interval.
            let set = (*cgroup_id, config);
            // A learning slot that inserted its bound of new grams since the last write is
            // making syscalls in ever new orders: a flood, the workload is unstable.
            if let (Some(key), Some((_, previous))) = (key, self.slots.get(slot))
                && previous.mode == abi::SEQ_LEARN
                && maps.slot_grams(*slot)? >= abi::SEQ_SLOT_GRAMS
            {
                engine.sequence_limit_reached(key, abi::SEQ_SLOT_GRAMS);
            }
            if self.slots.get(slot) != Some(&set) || config.mode == abi::SEQ_LEARN {
                maps.set_slot(*slot, config)?;
                self.slots.insert(*slot, set);
            }
        }
        Ok(())
    }

    /// The mode of a workload's slots, loading (or unloading) its model on a change.
    fn slot_config(
        &mut self,
        maps: &mut SequenceMaps,
        key: &WorkloadKey,
        engine: &Engine,
    ) -> Result<abi::SeqSlot, ProbeError> {
        let wid = self.wid(key);
        let mode = engine.sequence_mode(key);
        let Some(followed) = self.followed.get_mut(&wid) else {
            return Ok(abi::SeqSlot::default());
        };
        let (mode, samples) = match mode {
            SequenceMode::Off => {
                if followed.learning {
                    // Learning stopped without a model (the workload became unstable): its
                    // grams leave the kernel map, which every workload shares.
                    followed.reset(wid, maps, &mut self.previous)?;
                    followed.learning = false;
                    followed.used = false;
                }
                (abi::SEQ_OFF, 0)
            }
            SequenceMode::Learn { samples } => {
                if !followed.learning {
                    // Fresh learning: nothing of an earlier model or learning may count.
                    followed.reset(wid, maps, &mut self.previous)?;
                    followed.loaded = None;
                    followed.learning = true;
                }
                (abi::SEQ_LEARN, samples.min(SAMPLES_PER_INTERVAL))
            }
            SequenceMode::Detect(model) => {
                followed.learning = false;
                if !followed
                    .loaded
                    .as_ref()
                    .is_some_and(|m| Arc::ptr_eq(m, &model))
                {
                    followed.reset(wid, maps, &mut self.previous)?;
                    let values = model
                        .known_grams()
                        .map(|(gram, _)| (gram, model.kernel_value(gram), true));
                    let written = maps.set_values(wid, values)?;
                    self.metrics
                        .sequence_kernel_grams
                        .with_label_values(&[key.as_str()])
                        .set(written as i64);
                    tracing::info!(
                        message = "Sequence model loaded into the kernel.",
                        workload = %key,
                        grams = written
                    );
                    followed.loaded = Some(model);
                }
                (abi::SEQ_DETECT, 0)
            }
        };
        Ok(abi::SeqSlot {
            mode,
            wid,
            samples: samples as i32,
            grams: 0,
        })
    }

    /// Reads the counts of learning workloads' grams and gives the engine what grew.
    fn learn_counts(&mut self, maps: &SequenceMaps, engine: &mut Engine) {
        let learning: Vec<u32> = self
            .followed
            .iter()
            .filter(|(_, f)| f.learning)
            .map(|(&wid, _)| wid)
            .collect();
        if learning.is_empty() {
            return;
        }
        let mut grown: HashMap<u32, Vec<(u64, u64)>> = HashMap::new();
        for (wid, gram, count) in maps.all_counts() {
            if !learning.contains(&wid) {
                continue;
            }
            let previous = self.previous.entry((wid, gram)).or_insert(0);
            if count > *previous {
                grown
                    .entry(wid)
                    .or_default()
                    .push((gram, count - *previous));
                *previous = count;
            }
        }
        for (wid, counts) in grown {
            if let Some(f) = self.followed.get(&wid) {
                engine.learn_grams(&f.key, &counts);
            }
        }
    }

    /// One record from the kernel. Returns a finding when a thread's score passes its
    /// model's threshold (once per thread). While its container is `starting` (its start-up
    /// intervals, `rates::STARTUP_INTERVALS`) a thread is not scored: what it would have
    /// alerted is counted as set aside, and its score starts afresh after start-up (a
    /// restart's recovery path is no more the workload's habit than a new container's).
    pub fn on_record(
        &mut self,
        record: &SeqRecord,
        tid: u32,
        tgid: u32,
        starting: bool,
        engine: &mut Engine,
    ) -> Option<SequenceFinding> {
        let followed = self.followed.get(&record.wid)?;
        if record.has(abi::SEQ_REC_TRACE) {
            engine.trace_gram(&followed.key, tid, record.nsys, record.gram, false);
        }
        if record.has(abi::SEQ_REC_END)
            || (record.has(abi::SEQ_REC_TRACE) && record.nsys >= abi::SEQ_TRACE_MAX)
        {
            engine.trace_gram(&followed.key, tid, record.nsys, record.gram, true);
        }
        let scoring = abi::SEQ_REC_UNKNOWN | abi::SEQ_REC_CHECKPOINT | abi::SEQ_REC_END;
        if record.flags & scoring == 0 {
            return None;
        }
        let model = followed.loaded.as_deref()?;
        if self.threads.len() >= MAX_THREADS && !self.threads.contains_key(&tid) {
            tracing::warn!(message = "Too many scored threads; their sequence state restarts.");
            self.threads.clear();
        }
        let thread = self
            .threads
            .entry(tid)
            .or_insert_with(|| Thread::new(record.wid));
        if thread.wid != record.wid {
            // The thread id was reused by another workload's thread.
            *thread = Thread::new(record.wid);
        }
        let report = habit_models::sequence::KernelReport {
            gram: record.gram,
            nsys: record.nsys,
            known_sum: record.known_sum,
            unknown: record.unknown,
            unknown_gram: record.has(abi::SEQ_REC_UNKNOWN),
            end: record.has(abi::SEQ_REC_END),
        };
        let scorer = model.scorer();
        let statistic = scorer.on_report(&mut thread.score, &report);
        if report.unknown_gram {
            self.pending
                .push((record.wid, record.gram, model.kernel_value(record.gram)));
        }
        if let Some(statistic) = statistic {
            self.metrics.sequence_statistic.observe(statistic);
        }
        let calibration = model.calibration()?;
        let threshold = calibration
            .threshold(self.false_alarm_rate)
            .max(MIN_THRESHOLD);
        let alert = statistic.filter(|&statistic| {
            is_sequence_alert(
                statistic,
                threshold,
                thread.score.state.grams(),
                thread.alerted,
            )
        });
        if starting {
            if alert.is_some() {
                self.metrics
                    .sequence_findings_set_aside
                    .with_label_values(&["startup"])
                    .inc();
            }
            self.threads.remove(&tid);
            return None;
        }
        let finding = match alert {
            Some(statistic) => {
                thread.alerted = true;
                let state = &thread.score.state;
                Some(SequenceFinding {
                    workload: followed.key.clone(),
                    tid,
                    tgid,
                    statistic,
                    threshold,
                    exceedance: calibration.exceedance(statistic),
                    grams: state.grams(),
                    unknown: state.unknown(),
                    examples: state
                        .examples()
                        .iter()
                        .map(|&(gram, _)| gram_names(gram))
                        .collect(),
                })
            }
            _ => None,
        };
        if report.end {
            self.threads.remove(&tid);
        }
        finding
    }

    /// Writes the values of the unknown grams seen since the last flush into the kernel map.
    pub fn flush(&mut self, maps: &mut SequenceMaps) {
        if self.pending.is_empty() {
            return;
        }
        let mut by_wid: HashMap<u32, Vec<(u64, u32, bool)>> = HashMap::new();
        for (wid, gram, value) in self.pending.drain(..) {
            by_wid.entry(wid).or_default().push((gram, value, false));
        }
        for (wid, values) in by_wid {
            if let Err(e) = maps.set_values(wid, values) {
                // A full map: these grams keep crossing the ring buffer, which still works.
                tracing::debug!(message = "Cannot value unknown grams in the kernel.", %e);
            }
        }
    }
}

/// A 6-gram key as syscall names, oldest first: `openat → read → close`.
pub fn gram_names(key: u64) -> String {
    gram::decode(key)
        .into_iter()
        .map(|nr| syscall_names::name(nr).map_or_else(|| format!("sys_{nr}"), |n| n.to_string()))
        .collect::<Vec<_>>()
        .join(" → ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel (`abi`, itself checked against events.h) and the model agree on the key and
    /// on when a scored thread reports.
    #[test]
    fn kernel_and_model_share_one_contract() {
        assert_eq!(abi::SEQ_LANE_BITS, gram::LANE_BITS);
        assert_eq!(abi::SEQ_KEY_MASK, gram::KEY_MASK);
        assert_eq!(
            abi::SEQ_CHECKPOINT,
            habit_models::sequence::KERNEL_CHECKPOINT
        );
    }

    /// Two syscalls, both in unknown 6-grams, are no evidence (the restarted redis thread of
    /// issue 11); the same statistic over 64 syscalls alerts, once.
    #[test]
    fn a_sequence_alert_needs_a_minimum_of_evidence() {
        assert!(!is_sequence_alert(9.0, 2.0, 2, false));
        assert!(!is_sequence_alert(
            9.0,
            2.0,
            MIN_EVIDENCE_SYSCALLS - 1,
            false
        ));
        assert!(is_sequence_alert(9.0, 2.0, MIN_EVIDENCE_SYSCALLS, false));
        assert!(!is_sequence_alert(9.0, 2.0, 4096, true));
        assert!(!is_sequence_alert(1.5, 2.0, 4096, false));
    }

    /// Through the real model: a thread of a trained model whose 2 syscalls are all unknown
    /// scores above any threshold, yet has too few grams to alert.
    #[test]
    fn a_two_syscall_thread_of_unknown_grams_does_not_alert() {
        use habit_models::sequence::{KernelReport, ThreadScore};
        let trace: Vec<u32> = (0..4000).map(|i| [0u32, 1, 257, 3][i % 4]).collect();
        let traces = vec![trace; 4];
        let config = habit_models::sequence::SequenceConfig::default();
        let model = SequenceModel::train(&traces, config).unwrap_or_else(|e| panic!("{e}"));
        let scorer = model.scorer();
        let mut thread = ThreadScore::default();
        // Two syscalls, two grams never seen (the kernel sends each unknown gram).
        let mut best = None;
        for (n, gram) in [
            (1u64, gram::encode(&[59, 59])),
            (2, gram::encode(&[59, 59, 59])),
        ] {
            let report = KernelReport {
                gram,
                nsys: n,
                known_sum: 0,
                unknown: n as u32,
                unknown_gram: true,
                end: n == 2,
            };
            best = scorer.on_report(&mut thread, &report).or(best);
        }
        let statistic = best.unwrap_or(0.0);
        assert!(statistic > MIN_THRESHOLD, "{statistic}");
        assert_eq!(thread.state.unknown(), 2);
        assert!(!is_sequence_alert(
            statistic,
            MIN_THRESHOLD,
            thread.state.grams(),
            false
        ));
    }

    #[test]
    fn grams_read_as_syscall_names() {
        // read(0), write(1), openat(257) on x86-64.
        let key = gram::encode(&[0, 1, 257]);
        assert_eq!(gram_names(key), "read → write → openat");
    }
}
