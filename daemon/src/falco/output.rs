//! The attributed event, and its JSON: alert `output_fields` and `habitd run --print-events`
//! lines, rendered from the one Falco view ([`RuleEvent`]'s fields), never computed apart.
//!
//! Rendering happens only for an alert or a printed event: rule matching reads fields one by
//! one and never builds this map.

use std::time::{Duration, SystemTime};

use habit_models::rules::{EventFields, FieldRef, Value as FieldValue};
use habit_probes::{Event, EventBody};
use serde_json::{Map, Value, json};

use crate::alerts::alert::rfc3339;
use crate::attribution::Workload;
use crate::falco::fields::{RuleEvent, supplied};
use crate::process::table::ProcInfo;

/// Converts kernel boot-time stamps (`CLOCK_BOOTTIME`) to wall-clock time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Wall-clock time at boot.
    boot: SystemTime,
}

impl Clock {
    pub fn new() -> Self {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes into the timespec we own.
        unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
        let since_boot = Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32);
        Self {
            boot: SystemTime::now() - since_boot,
        }
    }

    pub fn wall(&self, boot_ns: u64) -> SystemTime {
        self.boot + Duration::from_nanos(boot_ns)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// An event with everything user space added to it.
pub struct Attributed<'a> {
    pub event: &'a Event,
    pub workload: &'a Workload,
    pub process: Option<&'a ProcInfo>,
    /// For exec/open/chmod: the path made absolute where it could be.
    pub path: Option<&'a str>,
    pub time: SystemTime,
}

/// The keys habitd adds to `output_fields` beside Falco's fields. None is a field a rule can
/// read (a test checks that no Falco field has one of these names), so none can disagree
/// with what rules see. (The list is for that test; [`RuleEvent::output_fields`] writes them.)
#[cfg(test)]
pub const HABITD_KEYS: &[&str] = &[
    "habitd.workload",
    "habitd.host_unit",
    "habitd.argv_truncated",
    "habitd.sequence.gram",
    "habitd.sequence.flags",
    "cgroup.id",
    "proc.mntns",
];

/// The JSON of a field's value: numbers and booleans as JSON numbers and booleans, text and
/// addresses as strings, several values as Falco prints them (`(a,b)`). Its text is always
/// the value's `Display`, which rule outputs (`%proc.name`) print.
pub fn json_value(value: &FieldValue<'_>) -> Value {
    match value {
        FieldValue::Num(n) => json!(n),
        FieldValue::Bool(b) => json!(b),
        FieldValue::Str(s) => json!(s),
        FieldValue::Ip(_) | FieldValue::List(_) => json!(value.to_string()),
    }
}

impl RuleEvent<'_> {
    /// The JSON of one field as rules read it; `null` when the event lacks it (Falco's JSON
    /// for a field it could not fill).
    pub fn field_json(&self, field: &FieldRef) -> Value {
        self.get(field.field, field.arg.as_ref())
            .map_or(Value::Null, |v| json_value(&v))
    }

    /// The event's `output_fields`: every supplied field the event has
    /// ([`crate::falco::fields::SUPPLIED_FIELDS`], each as [`EventFields::get`] answers it),
    /// then habitd's own keys ([`HABITD_KEYS`]).
    pub fn output_fields(&self) -> Map<String, Value> {
        let mut f = Map::new();
        for (name, field) in supplied() {
            if let Some(v) = self.get(field.field, field.arg.as_ref()) {
                f.insert((*name).to_owned(), json_value(&v));
            }
        }
        self.habitd_fields(&mut f);
        f
    }

    fn habitd_fields(&self, f: &mut Map<String, Value>) {
        let a = self.attributed;
        let h = &a.event.header;
        f.insert("habitd.workload".into(), json!(a.workload.key.as_str()));
        if let Some(unit) = &a.workload.host_unit {
            f.insert("habitd.host_unit".into(), json!(unit));
        }
        match &a.event.body {
            EventBody::Exec { argv_truncated, .. } => {
                f.insert("habitd.argv_truncated".into(), json!(argv_truncated));
            }
            EventBody::Sequence(r) => {
                let names = crate::sequences::gram_names(r.gram);
                f.insert("habitd.sequence.gram".into(), json!(names));
                f.insert("habitd.sequence.flags".into(), json!(r.flags));
            }
            _ => {}
        }
        f.insert("cgroup.id".into(), json!(h.cgroup_id));
        f.insert("proc.mntns".into(), json!(h.mntns));
    }

    /// One JSON line for `--print-events`.
    pub fn to_json_line(&self) -> String {
        let a = self.attributed;
        let mut obj = Map::new();
        obj.insert("time".into(), json!(rfc3339(a.time)));
        obj.insert("source".into(), json!("syscall"));
        obj.insert("kind".into(), json!(a.event.body.kind_label()));
        obj.insert("output_fields".into(), Value::Object(self.output_fields()));
        Value::Object(obj).to_string()
    }
}
