//! Tamper evidence: what [`Probes::check_integrity`](habit_probes::Probes::check_integrity)
//! finds (a program detached, a map only habitd writes written by someone else) becomes an
//! alert, a metric, an error log and a line of `/healthz`.
//!
//! One alert per finding as it first appears: a map rewritten again after habitd put it back
//! is a new finding; a detached program stays one finding while it stays detached. `/healthz`
//! keeps every finding since start (with its count and last time) and says `"status":
//! "tampered"` but still answers 200: its status code is the probes' readiness, and a node
//! where someone can write habitd's maps must not be able to restart it at will through a
//! liveness probe (each restart a blind moment).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use habit_models::priority::Priority;
use habit_probes::Tamper;
use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use serde::Serialize;

use crate::alerts::alert::{Alert, rfc3339};

/// The rule name of tamper alerts.
pub const TAMPER_RULE: &str = "habitd probes tampered with";

/// One finding as `/healthz` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct TamperReport {
    /// `program_detached` or `map_written`.
    pub kind: &'static str,
    /// The program or map.
    pub object: &'static str,
    /// What was found, in words.
    pub detail: String,
    /// RFC 3339.
    pub first_seen: String,
    /// RFC 3339.
    pub last_seen: String,
    /// Checks that found it.
    pub count: u64,
}

/// The findings so far, shared with the HTTP handlers.
pub type TamperReports = Arc<Mutex<Vec<TamperReport>>>;

/// Turns integrity-check findings into alerts, metrics, logs and `/healthz` reports.
pub struct TamperWatch {
    reports: TamperReports,
    /// Findings of the previous check (a detached program is alerted once while it lasts).
    active: Vec<Tamper>,
    detected: IntCounterVec,
    tampered: IntGauge,
    hostname: String,
}

impl TamperWatch {
    /// A watch whose metrics are registered in `registry`.
    pub fn new(registry: &Registry, hostname: String) -> prometheus::Result<Self> {
        let detected = IntCounterVec::new(
            Opts::new(
                "habitd_tamper_detected_total",
                "Tampering with habitd's probes found by the integrity check, by kind \
                 (program_detached, map_written).",
            ),
            &["kind"],
        )?;
        let tampered = IntGauge::new(
            "habitd_probes_tampered",
            "1 once the integrity check found habitd's probes tampered with (since start).",
        )?;
        registry.register(Box::new(detected.clone()))?;
        registry.register(Box::new(tampered.clone()))?;
        for kind in ["program_detached", "map_written"] {
            detected.with_label_values(&[kind]);
        }
        Ok(Self {
            reports: Arc::new(Mutex::new(Vec::new())),
            active: Vec::new(),
            detected,
            tampered,
            hostname,
        })
    }

    /// The reports for `/healthz`.
    pub fn reports(&self) -> TamperReports {
        self.reports.clone()
    }

    /// Takes the findings of one check at `now`; new ones become alerts in `alerts`.
    pub fn observe(&mut self, found: Vec<Tamper>, now: SystemTime, alerts: &mut Vec<Alert>) {
        if found.is_empty() && self.active.is_empty() {
            return;
        }
        let mut reports = self.reports.lock().unwrap_or_else(|p| p.into_inner());
        let mut by_object: HashMap<(&'static str, &'static str), usize> = reports
            .iter()
            .enumerate()
            .map(|(i, r)| ((r.kind, r.object), i))
            .collect();
        for t in &found {
            let detail = t.to_string();
            match by_object.get(&(t.kind(), t.object())) {
                Some(&i) => {
                    let r = &mut reports[i];
                    r.detail = detail.clone();
                    r.last_seen = rfc3339(now);
                    r.count += 1;
                }
                None => {
                    by_object.insert((t.kind(), t.object()), reports.len());
                    reports.push(TamperReport {
                        kind: t.kind(),
                        object: t.object(),
                        detail: detail.clone(),
                        first_seen: rfc3339(now),
                        last_seen: rfc3339(now),
                        count: 1,
                    });
                }
            }
            if self.active.contains(t) {
                continue;
            }
            self.detected.with_label_values(&[t.kind()]).inc();
            self.tampered.set(1);
            tracing::error!(
                message = "habitd's probes were tampered with.",
                kind = t.kind(),
                object = t.object(),
                %detail
            );
            alerts.push(self.alert(t, detail, now));
        }
        self.active = found;
    }

    fn alert(&self, t: &Tamper, detail: String, now: SystemTime) -> Alert {
        let mut fields = serde_json::Map::new();
        fields.insert("habitd.tamper.kind".into(), t.kind().into());
        fields.insert("habitd.tamper.object".into(), t.object().into());
        Alert::new(
            now,
            TAMPER_RULE,
            Priority::Critical,
            format!("habitd's probes were tampered with: {detail}"),
            "host",
            "n/a",
            &self.hostname,
        )
        .with_output_fields(fields)
        .with_tags(["habitd", "tamper", t.kind()])
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn written(found: u64) -> Tamper {
        Tamper::MapWritten {
            map: "habit_epoch",
            entry: "index 0".into(),
            expected: "3".into(),
            found: found.to_string(),
        }
    }

    #[test]
    fn each_new_finding_alerts_once_and_stays_in_the_report() {
        let registry = Registry::new();
        let mut watch = TamperWatch::new(&registry, "node".into()).unwrap();
        let mut alerts = Vec::new();
        let t0 = SystemTime::UNIX_EPOCH;
        watch.observe(Vec::new(), t0, &mut alerts);
        assert!(alerts.is_empty());
        let detached = Tamper::ProgramDetached {
            program: "habit_exec",
            tracepoint: "sched_process_exec",
        };
        watch.observe(vec![detached.clone(), written(99)], t0, &mut alerts);
        assert_eq!(alerts.len(), 2);
        assert_eq!(alerts[0].rule, TAMPER_RULE);
        assert_eq!(alerts[0].priority, Priority::Critical);
        assert!(
            alerts[1].output.contains("habit_epoch"),
            "{}",
            alerts[1].output
        );
        // Still detached: no second alert; the map was put back: clean.
        watch.observe(vec![detached.clone()], t0, &mut alerts);
        assert_eq!(alerts.len(), 2);
        // Written again later: a new alert.
        watch.observe(vec![detached, written(7)], t0, &mut alerts);
        assert_eq!(alerts.len(), 3);
        let reports = watch.reports();
        let reports = reports.lock().unwrap();
        assert_eq!(reports.len(), 2);
        assert_eq!(reports[0].count, 3);
        assert_eq!(reports[1].count, 2);
        assert!(reports[1].detail.contains("holds 7"));
        assert_eq!(watch.tampered.get(), 1);
        assert_eq!(watch.detected.with_label_values(&["map_written"]).get(), 2);
    }
}
