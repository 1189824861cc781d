//! De-duplication of repeated alerts: the first occurrence goes out at once, identical repeats
//! within a window are only counted, and one summary reports them when the window ends.
//!
//! A workload that trips the same anomaly in a loop (a cron job's new binary, a retrying
//! connection) would otherwise flood the sinks with copies that say nothing new, and a flood hides
//! the alert that matters. Delaying the *first* occurrence would cost detection time, so only
//! repeats wait.
//!
//! The aggregator is pure and synchronous: time comes from the alerts (`Alert::time`, event time)
//! and from the caller's periodic tick ([`Aggregator::flush_due`]), so tests drive it with explicit
//! times and the daemon decides which task owns it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::alert::{Alert, Novel, clamp_score, rfc3339};

/// How long repeats of an alert are folded into one summary.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);

/// Most distinct alerts tracked at once; bounds memory under an alert storm (principle 4).
pub const DEFAULT_MAX_KEYS: usize = 10_000;

/// What makes two alerts "identical".
///
/// Anomalies are identified by workload, rule, the set of novel `(dimension, item)` pairs and
/// the program that did it (`proc.exepath`), so the same new binary run by many processes is
/// one anomaly, while a *different* program doing the same novel thing is news of its own: a
/// server that connects to the address a reverse shell connected to a minute earlier (redis
/// made to `REPLICAOF` the attacker) must not fold into the shell's alert as a repeat. A rule
/// hit without novelty has no
/// item to tell hits apart, so its `output` sentence stands in for it: otherwise every hit of a
/// rule in a workload would fold into the first, hiding different commands behind one alert.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct AlertKey {
    workload: String,
    rule: String,
    /// Sorted, so the order in which a scorer listed the items does not matter.
    novel: Vec<Novel>,
    /// Only for alerts without novel items.
    output: Option<String>,
    /// The executable of the process (`proc.exepath`), when the alert has one.
    program: Option<String>,
}

impl AlertKey {
    fn of(alert: &Alert) -> Self {
        let mut novel = alert.habitd.novel.clone();
        novel.sort_unstable();
        novel.dedup();
        let output = novel.is_empty().then(|| alert.output.clone());
        let program = alert
            .output_fields
            .get("proc.exepath")
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        Self {
            workload: alert.habitd.workload.clone(),
            rule: alert.rule.clone(),
            novel,
            output,
            program,
        }
    }
}

/// Where an entry sits in the expiry order: its window end, then arrival order (unique).
type Slot = (SystemTime, u64);

/// One tracked alert and its repeats.
#[derive(Debug)]
struct Entry {
    /// The first occurrence, as emitted; the summary is built from it.
    first: Alert,
    first_seen: SystemTime,
    last_seen: SystemTime,
    /// Repeats after the first occurrence.
    repeats: u64,
    /// Highest score among all occurrences, so a summary never understates a repeat.
    max_score: f64,
    slot: Slot,
}

impl Entry {
    /// The summary alert, or `None` when nothing repeated (the first alert said it all).
    fn into_summary(self) -> Option<Alert> {
        if self.repeats == 0 {
            return None;
        }
        let mut alert = self.first;
        let times = if self.repeats == 1 { "time" } else { "times" };
        alert.output = format!(
            "{} (repeated {} {times} between {} and {})",
            alert.output,
            self.repeats,
            rfc3339(self.first_seen),
            rfc3339(self.last_seen)
        );
        alert.time = self.last_seen;
        alert.habitd.anomaly_score = clamp_score(self.max_score);
        alert.habitd.count = Some(self.repeats);
        alert.habitd.first_seen = Some(self.first_seen);
        alert.habitd.last_seen = Some(self.last_seen);
        Some(alert)
    }
}

/// Folds identical alerts within a window; see the module documentation.
#[derive(Debug)]
pub struct Aggregator {
    window: Duration,
    max_keys: usize,
    entries: HashMap<Arc<AlertKey>, Entry>,
    /// Expiry order, oldest window end first: what [`Aggregator::flush_due`] and eviction take.
    expiry: BTreeMap<Slot, Arc<AlertKey>>,
    next_seq: u64,
    evicted: u64,
}

impl Default for Aggregator {
    fn default() -> Self {
        Self::new(DEFAULT_WINDOW, DEFAULT_MAX_KEYS)
    }
}

impl Aggregator {
    /// An aggregator folding repeats for `window`, tracking at most `max_keys` distinct alerts
    /// (at least 1).
    pub fn new(window: Duration, max_keys: usize) -> Self {
        Self {
            window,
            max_keys: max_keys.max(1),
            entries: HashMap::new(),
            expiry: BTreeMap::new(),
            next_seq: 0,
            evicted: 0,
        }
    }

    /// Takes one alert and pushes what must be sent now onto `out` (a buffer the caller owns and
    /// drains): the alert itself if it is a first occurrence, nothing if it repeats one whose
    /// window is still open. Also pushes the summary of a window that this alert proves over
    /// (a repeat arriving after the window ended but before the tick flushed it), and of the
    /// oldest entry if tracking this alert needs its slot.
    pub fn observe(&mut self, alert: Alert, out: &mut Vec<Alert>) {
        let key = AlertKey::of(&alert);
        if let Some(entry) = self.entries.get_mut(&key) {
            if alert.time < entry.slot.0 {
                entry.repeats += 1;
                entry.first_seen = entry.first_seen.min(alert.time);
                entry.last_seen = entry.last_seen.max(alert.time);
                entry.max_score = entry.max_score.max(alert.habitd.anomaly_score);
                return;
            }
            // The window is over: close it, then this alert opens a new one.
            let slot = entry.slot;
            if let Some(summary) = self.remove(slot) {
                out.push(summary);
            }
        }
        if self.entries.len() >= self.max_keys
            && let Some((&oldest, _)) = self.expiry.first_key_value()
        {
            self.evicted += 1;
            if let Some(summary) = self.remove(oldest) {
                out.push(summary);
            }
        }
        let slot = (alert.time + self.window, self.next_seq);
        self.next_seq += 1;
        let key = Arc::new(key);
        self.expiry.insert(slot, Arc::clone(&key));
        self.entries.insert(
            key,
            Entry {
                first: alert.clone(),
                first_seen: alert.time,
                last_seen: alert.time,
                repeats: 0,
                max_score: alert.habitd.anomaly_score,
                slot,
            },
        );
        out.push(alert);
    }

    /// Ends every window that closed at or before `now` and returns the summaries of those with
    /// repeats. Call it from a periodic tick (every few seconds); a window ends at most one tick
    /// late.
    pub fn flush_due(&mut self, now: SystemTime) -> Vec<Alert> {
        let mut out = Vec::new();
        while let Some((&slot, _)) = self.expiry.first_key_value()
            && slot.0 <= now
        {
            if let Some(summary) = self.remove(slot) {
                out.push(summary);
            }
        }
        out
    }

    /// Ends every window (at shutdown), returning the summaries of those with repeats.
    pub fn flush_all(&mut self) -> Vec<Alert> {
        let mut out = Vec::new();
        while let Some((&slot, _)) = self.expiry.first_key_value() {
            if let Some(summary) = self.remove(slot) {
                out.push(summary);
            }
        }
        out
    }

    /// Distinct alerts whose window is open.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No window is open.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries ended early because the bound was reached (cumulative), for a metric: a rising
    /// count means the window or the bound is too small for this node's alert rate.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Forgets the entry in `slot` and returns its summary, if it has one.
    fn remove(&mut self, slot: Slot) -> Option<Alert> {
        let key = self.expiry.remove(&slot)?;
        self.entries.remove(&key)?.into_summary()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use habit_models::priority::Priority;
    use serde_json::{Map, json};
    use std::time::UNIX_EPOCH;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_714_564_800 + secs)
    }

    fn novel(secs: u64, item: &str) -> Alert {
        let mut fields = Map::new();
        fields.insert("proc.name".into(), json!("sh"));
        Alert::novelty(
            at(secs),
            "docker.io/library/nginx:1.25",
            "stable",
            "exec",
            item,
            0.9,
            Priority::Warning,
            fields,
            "node-1",
        )
    }

    fn observe(agg: &mut Aggregator, alert: Alert) -> Vec<Alert> {
        let mut out = Vec::new();
        agg.observe(alert, &mut out);
        out
    }

    #[test]
    fn first_occurrence_goes_out_at_once_unchanged() {
        let mut agg = Aggregator::default();
        let a = novel(0, "/bin/sh");
        assert_eq!(observe(&mut agg, a.clone()), vec![a]);
        assert_eq!(agg.len(), 1);
    }

    #[test]
    fn repeats_are_counted_and_summarised_when_the_window_ends() {
        let mut agg = Aggregator::new(Duration::from_secs(60), 100);
        observe(&mut agg, novel(0, "/bin/sh"));
        assert!(observe(&mut agg, novel(10, "/bin/sh")).is_empty());
        let mut louder = novel(20, "/bin/sh");
        louder.habitd.anomaly_score = 0.99;
        assert!(observe(&mut agg, louder).is_empty());
        assert!(observe(&mut agg, novel(59, "/bin/sh")).is_empty());

        assert!(agg.flush_due(at(59)).is_empty(), "window still open");
        let summaries = agg.flush_due(at(60));
        assert_eq!(summaries.len(), 1);
        let s = &summaries[0];
        assert_eq!(s.habitd.count, Some(3));
        assert_eq!(s.habitd.first_seen, Some(at(0)));
        assert_eq!(s.habitd.last_seen, Some(at(59)));
        assert_eq!(s.time, at(59));
        assert_eq!(s.habitd.anomaly_score, 0.99);
        assert_eq!(s.rule, "habitd anomaly");
        assert_eq!(
            s.habitd.novel,
            vec![Novel::new("exec", "/bin/sh")],
            "the summary still explains itself"
        );
        assert!(
            s.output.ends_with(
                "(proc.name=sh) (repeated 3 times between 2024-05-01T12:00:00.000000000Z \
                 and 2024-05-01T12:00:59.000000000Z)"
            ),
            "{}",
            s.output
        );
        let json: serde_json::Value = serde_json::to_value(s).unwrap();
        assert_eq!(json["habitd"]["count"], json!(3));
        assert!(agg.is_empty());
        // A new window starts with a new first occurrence.
        assert_eq!(observe(&mut agg, novel(61, "/bin/sh")).len(), 1);
    }

    #[test]
    fn a_key_without_repeats_ends_silently() {
        let mut agg = Aggregator::default();
        observe(&mut agg, novel(0, "/bin/sh"));
        assert!(agg.flush_due(at(3600)).is_empty());
        assert!(agg.is_empty());
    }

    #[test]
    fn different_items_workloads_and_rules_are_different_keys() {
        let mut agg = Aggregator::default();
        assert_eq!(observe(&mut agg, novel(0, "/bin/sh")).len(), 1);
        assert_eq!(observe(&mut agg, novel(1, "/bin/bash")).len(), 1);
        let mut other = novel(2, "/bin/sh");
        other.habitd.workload = "host".into();
        assert_eq!(observe(&mut agg, other).len(), 1);
        assert_eq!(agg.len(), 3);
    }

    #[test]
    fn the_same_novel_item_by_another_program_is_another_alert() {
        let mut agg = Aggregator::default();
        let by = |secs, exe: &str| {
            let mut a = novel(secs, "172.18.0.1 33371/tcp");
            a.habitd.novel = vec![Novel::new("network", "172.18.0.1 33371/tcp")];
            a.output_fields.insert("proc.exepath".into(), json!(exe));
            a
        };
        // A reverse shell connects out; the server itself connects to the same address later.
        assert_eq!(observe(&mut agg, by(0, "/bin/busybox")).len(), 1);
        assert!(
            observe(&mut agg, by(5, "/bin/busybox")).is_empty(),
            "a repeat"
        );
        let server = observe(&mut agg, by(10, "/usr/bin/redis-server"));
        assert_eq!(server.len(), 1, "another program: its own alert");
        assert_eq!(server[0].habitd.count, None);
        // Rate alerts (no program) still fold.
        let rate = |secs| {
            Alert::new(
                at(secs),
                super::super::alert::ANOMALY_RULE,
                Priority::Warning,
                "r",
                "w",
                "stable",
                "h",
            )
            .with_novel("rate", "syscall rate 40x baseline")
        };
        assert_eq!(observe(&mut agg, rate(0)).len(), 1);
        assert!(observe(&mut agg, rate(1)).is_empty());
    }

    #[test]
    fn rule_hits_without_novelty_differ_by_output() {
        let mut agg = Aggregator::default();
        let hit = |secs, output: &str| {
            Alert::new(
                at(secs),
                "Read sensitive file",
                Priority::Warning,
                output,
                "host",
                "stable",
                "h",
            )
        };
        assert_eq!(observe(&mut agg, hit(0, "cat read /etc/shadow")).len(), 1);
        assert_eq!(observe(&mut agg, hit(1, "vi read /etc/shadow")).len(), 1);
        assert!(observe(&mut agg, hit(2, "cat read /etc/shadow")).is_empty());
    }

    #[test]
    fn novel_item_order_does_not_matter() {
        let mut agg = Aggregator::default();
        let base = Alert::new(at(0), "r", Priority::Notice, "o", "host", "stable", "h");
        let ab = base
            .clone()
            .with_novel("exec", "/a")
            .with_novel("file", "/b");
        let mut ba = base.with_novel("file", "/b").with_novel("exec", "/a");
        ba.time = at(1);
        assert_eq!(observe(&mut agg, ab).len(), 1);
        assert!(observe(&mut agg, ba).is_empty());
    }

    #[test]
    fn a_repeat_after_the_window_closes_the_old_one_before_the_tick() {
        let mut agg = Aggregator::new(Duration::from_secs(60), 100);
        observe(&mut agg, novel(0, "/bin/sh"));
        observe(&mut agg, novel(30, "/bin/sh"));
        let out = observe(&mut agg, novel(90, "/bin/sh"));
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].habitd.count, Some(1));
        assert!(out[0].output.contains("(repeated 1 time between"));
        assert_eq!(out[1].habitd.count, None);
        assert_eq!(out[1].time, at(90));
        assert_eq!(agg.len(), 1);
    }

    #[test]
    fn bounded_evicting_the_oldest_with_its_summary() {
        let mut agg = Aggregator::new(Duration::from_secs(60), 2);
        observe(&mut agg, novel(0, "/a"));
        observe(&mut agg, novel(1, "/b"));
        observe(&mut agg, novel(2, "/a")); // a repeat of the oldest
        let out = observe(&mut agg, novel(3, "/c"));
        assert_eq!(agg.len(), 2);
        assert_eq!(agg.evicted(), 1);
        assert_eq!(out.len(), 2, "summary of /a, then /c itself: {out:?}");
        assert_eq!(out[0].habitd.novel[0].item, "/a");
        assert_eq!(out[0].habitd.count, Some(1));
        assert_eq!(out[1].habitd.novel[0].item, "/c");
        assert_eq!(out[1].habitd.count, None);

        // /b had no repeats: its eviction emits nothing but the new alert.
        let out = observe(&mut agg, novel(4, "/d"));
        assert_eq!(agg.evicted(), 2);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].habitd.novel[0].item, "/d");
    }

    #[test]
    fn flush_all_reports_every_open_window_with_repeats() {
        let mut agg = Aggregator::default();
        observe(&mut agg, novel(0, "/a"));
        observe(&mut agg, novel(1, "/a"));
        observe(&mut agg, novel(2, "/b"));
        let out = agg.flush_all();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].habitd.count, Some(1));
        assert!(agg.is_empty());
    }
}
