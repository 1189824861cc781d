//! The alert record: one JSON line with Falco's keys plus a `habitd` object.
//!
//! Alert routers built for Falco (falcosidekick, SIEM pipelines) switch on `rule`, `priority`,
//! `tags` and `output_fields`, so those keys keep Falco's names, spelling and types. What Falco has
//! no key for — which workload, which baseline state, what was novel and how unusual it was
//! (DESIGN principle 3) — lives under `habitd`, where Falco consumers ignore it.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use habit_models::priority::Priority;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The rule name of every anomaly (novelty) alert, so routers can match all of them at once.
pub const ANOMALY_RULE: &str = "habitd anomaly";

/// Falco's `source` for events that come from syscalls; every habitd alert is one.
pub const SYSCALL_SOURCE: &str = "syscall";

/// `output_fields` shown in the human `output` sentence, in this order, when present. A fixed
/// list keeps the sentence short and stable; every field is still in `output_fields`.
const OUTPUT_SENTENCE_FIELDS: &[&str] = &[
    "proc.name",
    "proc.cmdline",
    "proc.pname",
    "user.uid",
    "fd.name",
    "container.id",
    "k8s.ns.name",
    "k8s.pod.name",
];

/// One alert, serialised by [`Alert::to_json_line`] as a single JSON line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// When the behaviour happened (event time), RFC 3339 with nanoseconds in UTC.
    #[serde(with = "time_rfc3339")]
    pub time: SystemTime,
    /// The rule name; [`ANOMALY_RULE`] for novelty alerts.
    pub rule: String,
    /// Falco's priority, written with Falco's capitalisation (`"Warning"`).
    #[serde(with = "falco_priority")]
    pub priority: Priority,
    /// A sentence for people, Falco-style: what happened, where, then `field=value` details.
    pub output: String,
    /// Falco field names (`proc.name`, `container.id`, …) to values.
    pub output_fields: Map<String, Value>,
    /// Falco's event source; always [`SYSCALL_SOURCE`] for habitd.
    pub source: String,
    /// Tags for routing (`habitd`, `anomaly`, the dimension, or a rule's own tags).
    pub tags: Vec<String>,
    /// The node that raised the alert.
    pub hostname: String,
    /// What Falco has no key for: the workload, its baseline and the anomaly explanation.
    pub habitd: HabitdFields,
}

/// The `habitd` object of an alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HabitdFields {
    /// The workload key (`docker.io/library/nginx:1.25`, `host:sshd.service`, `host`).
    pub workload: String,
    /// The workload's baseline state when the alert was raised (`learning`, `stable`,
    /// `unstable`): an alert against an unstable baseline deserves less trust.
    pub baseline_state: String,
    /// How unusual the behaviour is, 0 (ordinary) to 1 (never seen); see [`clamp_score`].
    pub anomaly_score: f64,
    /// What was new, dimension by dimension; empty for a rule hit the baseline knows.
    pub novel: Vec<Novel>,
    /// A rule hit that the baseline explains. Such alerts normally go to metrics and debug logs
    /// only; they reach a sink only with `--alerts-include-suppressed`.
    pub suppressed: bool,
    /// On a summary from the aggregator: how many identical repeats the window held after the
    /// first occurrence (which was emitted on its own). Absent on ordinary alerts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// On a summary: the time of the first occurrence.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_time_rfc3339"
    )]
    pub first_seen: Option<SystemTime>,
    /// On a summary: the time of the last repeat.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_time_rfc3339"
    )]
    pub last_seen: Option<SystemTime>,
}

/// One novel item: which dimension (`exec`, `file`, `network`, `syscall`, `sequence`, `rate`,
/// `privileged`) and what in it was new (a path, an address, a syscall name, …).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Novel {
    /// The dimension name.
    pub dimension: String,
    /// The item, as the baseline stores it.
    pub item: String,
}

impl Novel {
    /// A novel item in a dimension.
    pub fn new(dimension: impl Into<String>, item: impl Into<String>) -> Self {
        Self {
            dimension: dimension.into(),
            item: item.into(),
        }
    }
}

impl Alert {
    /// A rule alert with no novelty: score 0, no tags, no `output_fields`, not suppressed. Add
    /// the rest with the `with_*` methods. The workload and baseline state are required because
    /// every alert must say where it happened and how much the baseline is worth (principle 3).
    pub fn new(
        time: SystemTime,
        rule: impl Into<String>,
        priority: Priority,
        output: impl Into<String>,
        workload: impl Into<String>,
        baseline_state: impl Into<String>,
        hostname: impl Into<String>,
    ) -> Self {
        Self {
            time,
            rule: rule.into(),
            priority,
            output: output.into(),
            output_fields: Map::new(),
            source: SYSCALL_SOURCE.to_owned(),
            tags: Vec::new(),
            hostname: hostname.into(),
            habitd: HabitdFields {
                workload: workload.into(),
                baseline_state: baseline_state.into(),
                anomaly_score: 0.0,
                novel: Vec::new(),
                suppressed: false,
                count: None,
                first_seen: None,
                last_seen: None,
            },
        }
    }

    /// A novelty alert: `item` in `dimension` is not in the workload's baseline.
    ///
    /// The rule is [`ANOMALY_RULE`], the tags `["habitd", "anomaly", dimension]`, and `output`
    /// reads like `Novel exec in docker.io/library/nginx:1.25 (baseline stable, score 0.97):
    /// /bin/sh (proc.name=sh proc.cmdline=sh -c id container.id=abc123def456)`.
    // The argument list is the agreed interface of the scorer → alert boundary; a parameter
    // struct would only rename the same nine values.
    #[allow(clippy::too_many_arguments)]
    pub fn novelty(
        time: SystemTime,
        workload: &str,
        baseline_state: &str,
        dimension: &str,
        item: &str,
        score: f64,
        priority: Priority,
        fields: Map<String, Value>,
        hostname: &str,
    ) -> Self {
        let score = clamp_score(score);
        let mut output = format!(
            "Novel {dimension} in {workload} (baseline {baseline_state}, score {score:.2}): {item}"
        );
        append_field_details(&mut output, &fields);
        Self::new(
            time,
            ANOMALY_RULE,
            priority,
            output,
            workload,
            baseline_state,
            hostname,
        )
        .with_output_fields(fields)
        .with_tags(["habitd", "anomaly", dimension])
        .with_score(score)
        .with_novel(dimension, item)
    }

    /// Replaces `output_fields`.
    pub fn with_output_fields(mut self, fields: Map<String, Value>) -> Self {
        self.output_fields = fields;
        self
    }

    /// Replaces the tags.
    pub fn with_tags<I, S>(mut self, tags: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.tags = tags.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the anomaly score (clamped, see [`clamp_score`]).
    pub fn with_score(mut self, score: f64) -> Self {
        self.habitd.anomaly_score = clamp_score(score);
        self
    }

    /// Adds a novel item.
    pub fn with_novel(mut self, dimension: impl Into<String>, item: impl Into<String>) -> Self {
        self.habitd.novel.push(Novel::new(dimension, item));
        self
    }

    /// Marks a rule hit that the baseline explains.
    pub fn with_suppressed(mut self, suppressed: bool) -> Self {
        self.habitd.suppressed = suppressed;
        self
    }

    /// The alert as one JSON line, without the trailing newline.
    pub fn to_json_line(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }
}

/// Keeps a score inside 0..=1 so consumers can rely on the documented range. NaN becomes 1: an
/// alert that cannot say how unusual it is should not look harmless.
pub fn clamp_score(score: f64) -> f64 {
    if score.is_nan() {
        1.0
    } else {
        score.clamp(0.0, 1.0)
    }
}

/// Appends ` (proc.name=sh proc.cmdline=… container.id=…)`, Falco's `%field` style, for the
/// fields of [`OUTPUT_SENTENCE_FIELDS`] that are present. Nothing when none is.
pub(crate) fn append_field_details(output: &mut String, fields: &Map<String, Value>) {
    let mut first = true;
    for name in OUTPUT_SENTENCE_FIELDS {
        let Some(value) = fields.get(*name) else {
            continue;
        };
        output.push_str(if first { " (" } else { " " });
        first = false;
        // Writing into a String cannot fail.
        let _ = match value {
            Value::String(s) => write!(output, "{name}={s}"),
            // Falco prints <NA> for a field it could not fill.
            Value::Null => write!(output, "{name}=<NA>"),
            other => write!(output, "{name}={other}"),
        };
    }
    if !first {
        output.push(')');
    }
}

/// RFC 3339 with nanoseconds in UTC (`2024-05-01T12:00:00.123456789Z`), as Falco writes `time`.
///
/// Times outside what RFC 3339 can show (before 1970 — a wrong clock — or after 9999) are
/// clamped to the nearest end instead of panicking inside the formatter.
pub fn rfc3339(time: SystemTime) -> String {
    // The last instant of 9999-12-31 in UTC.
    const MAX: Duration = Duration::new(253_402_300_799, 999_999_999);
    let since_epoch = time
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .min(MAX);
    humantime::format_rfc3339_nanos(UNIX_EPOCH + since_epoch).to_string()
}

/// serde for `time`: RFC 3339 strings (UTC, `Z`).
mod time_rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(time: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::rfc3339(*time))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_rfc3339(&text).map_err(D::Error::custom)
    }
}

/// serde for optional times; used with `skip_serializing_if = "Option::is_none"`.
mod opt_time_rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(time: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match time {
            Some(t) => s.serialize_str(&super::rfc3339(*t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| humantime::parse_rfc3339(&text).map_err(D::Error::custom))
            .transpose()
    }
}

/// serde for `priority`: Falco's capitalised names out (`"Warning"`), any accepted spelling in.
/// `Priority`'s own serde is lower case for config files, which Falco consumers would not match.
mod falco_priority {
    use habit_models::priority::Priority;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(priority: &Priority, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(priority.falco_name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Priority, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(D::Error::custom)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t0() -> SystemTime {
        UNIX_EPOCH + Duration::new(1_714_564_800, 123_456_789)
    }

    fn nginx_fields() -> Map<String, Value> {
        let mut f = Map::new();
        f.insert("evt.type".into(), json!("execve"));
        f.insert("proc.name".into(), json!("sh"));
        f.insert("proc.cmdline".into(), json!("sh -c id"));
        f.insert("proc.pid".into(), json!(4242));
        f.insert("container.id".into(), json!("abc123def456"));
        f.insert(
            "container.image.repository".into(),
            json!("docker.io/library/nginx"),
        );
        f
    }

    fn novelty() -> Alert {
        Alert::novelty(
            t0(),
            "docker.io/library/nginx:1.25",
            "stable",
            "exec",
            "/bin/sh",
            0.97,
            Priority::Warning,
            nginx_fields(),
            "node-1",
        )
    }

    #[test]
    fn json_line_has_every_falco_key_and_the_habitd_object() {
        let line = novelty().to_json_line().unwrap();
        assert!(!line.contains('\n'), "one line: {line}");
        let v: Value = serde_json::from_str(&line).unwrap();
        let o = v.as_object().unwrap();

        assert_eq!(o["time"], json!("2024-05-01T12:00:00.123456789Z"));
        assert_eq!(o["rule"], json!("habitd anomaly"));
        assert_eq!(o["priority"], json!("Warning"));
        assert_eq!(
            o["output"],
            json!(
                "Novel exec in docker.io/library/nginx:1.25 (baseline stable, score 0.97): \
                 /bin/sh (proc.name=sh proc.cmdline=sh -c id container.id=abc123def456)"
            )
        );
        assert!(o["output_fields"].is_object());
        assert_eq!(o["output_fields"]["proc.pid"], json!(4242));
        assert_eq!(o["output_fields"]["evt.type"], json!("execve"));
        assert_eq!(o["source"], json!("syscall"));
        assert_eq!(o["tags"], json!(["habitd", "anomaly", "exec"]));
        assert_eq!(o["hostname"], json!("node-1"));

        let h = o["habitd"].as_object().unwrap();
        assert_eq!(h["workload"], json!("docker.io/library/nginx:1.25"));
        assert_eq!(h["baseline_state"], json!("stable"));
        assert!(h["anomaly_score"].is_f64());
        assert_eq!(h["anomaly_score"].as_f64().unwrap(), 0.97);
        assert_eq!(
            h["novel"],
            json!([{"dimension": "exec", "item": "/bin/sh"}])
        );
        assert_eq!(h["suppressed"], json!(false));
        // Summary-only keys are absent on an ordinary alert.
        assert!(!h.contains_key("count"));
        assert!(!h.contains_key("first_seen"));
        assert!(!h.contains_key("last_seen"));

        let mut keys: Vec<&str> = o.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "habitd",
                "hostname",
                "output",
                "output_fields",
                "priority",
                "rule",
                "source",
                "tags",
                "time"
            ]
        );
    }

    #[test]
    fn summary_keys_have_the_right_types_and_round_trip() {
        let mut a = novelty();
        a.habitd.count = Some(7);
        a.habitd.first_seen = Some(t0());
        a.habitd.last_seen = Some(t0() + Duration::from_secs(30));
        let v: Value = serde_json::to_value(&a).unwrap();
        assert_eq!(v["habitd"]["count"], json!(7));
        assert_eq!(
            v["habitd"]["first_seen"],
            json!("2024-05-01T12:00:00.123456789Z")
        );
        assert_eq!(
            v["habitd"]["last_seen"],
            json!("2024-05-01T12:00:30.123456789Z")
        );
        let back: Alert = serde_json::from_value(v).unwrap();
        assert_eq!(back, a);
    }

    #[test]
    fn every_priority_is_written_with_falcos_capitalisation() {
        for p in Priority::ALL {
            let a = Alert::new(t0(), "r", p, "o", "host", "learning", "h");
            let v: Value = serde_json::to_value(&a).unwrap();
            assert_eq!(v["priority"], json!(p.falco_name()));
            let back: Alert = serde_json::from_value(v).unwrap();
            assert_eq!(back.priority, p);
        }
    }

    #[test]
    fn rule_alert_builder() {
        let a = Alert::new(
            t0(),
            "Terminal shell in container",
            Priority::Notice,
            "A shell was spawned in a container",
            "docker.io/library/nginx:1.25",
            "stable",
            "node-1",
        )
        .with_output_fields(nginx_fields())
        .with_tags(["container", "shell", "mitre_execution"])
        .with_score(0.1)
        .with_suppressed(true);
        assert_eq!(a.source, "syscall");
        assert_eq!(a.tags, ["container", "shell", "mitre_execution"]);
        assert!(a.habitd.novel.is_empty());
        assert!(a.habitd.suppressed);
        assert_eq!(a.habitd.anomaly_score, 0.1);
    }

    #[test]
    fn scores_stay_in_range_and_output_without_known_fields_has_no_parenthesis() {
        let a = Alert::novelty(
            t0(),
            "host",
            "learning",
            "rate",
            "openat",
            7.0,
            Priority::Notice,
            Map::new(),
            "h",
        );
        assert_eq!(a.habitd.anomaly_score, 1.0);
        assert_eq!(
            a.output,
            "Novel rate in host (baseline learning, score 1.00): openat"
        );
        assert_eq!(clamp_score(-0.5), 0.0);
        assert_eq!(clamp_score(f64::NAN), 1.0);
    }

    #[test]
    fn null_and_numeric_fields_in_the_sentence() {
        let mut f = Map::new();
        f.insert("user.uid".into(), json!(0));
        f.insert("proc.name".into(), Value::Null);
        let a = Alert::novelty(
            t0(),
            "host",
            "stable",
            "privileged",
            "setuid",
            0.5,
            Priority::Warning,
            f,
            "h",
        );
        assert!(
            a.output.ends_with("setuid (proc.name=<NA> user.uid=0)"),
            "{}",
            a.output
        );
    }

    #[test]
    fn out_of_range_times_are_clamped_not_panicking() {
        assert_eq!(
            rfc3339(UNIX_EPOCH - Duration::from_secs(10)),
            "1970-01-01T00:00:00.000000000Z"
        );
        let far = UNIX_EPOCH + Duration::from_secs(400_000_000_000);
        assert_eq!(rfc3339(far), "9999-12-31T23:59:59.999999999Z");
    }
}
