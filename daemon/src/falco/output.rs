//! The attributed event, and its JSON: alert `output_fields` and `habitd run --print-events`
//! lines, rendered from the one Falco view ([`RuleEvent`]'s fields), never computed apart.
//!
//! Rendering happens only for an alert or a printed event: rule matching reads fields one by
//! one and never builds this map. A printed event is written straight to bytes
//! ([`RuleEvent::write_json_line`]), with the keys in the order the map would print them: a busy
//! host prints tens of thousands of events a second, and building the map (a B-tree of owned
//! keys and values per event) cost seven times the rest of the event's handling (issue 13).

use std::io::Write as _;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use habit_models::rules::{EventFields, FieldRef, Value as FieldValue};
use habit_probes::{Event, EventBody};
use serde_json::{Map, Value, json};

use crate::alerts::alert::rfc3339;
use crate::attribution::Workload;
use crate::falco::fields::{RuleEvent, supplied};
use crate::process::table::ProcInfo;

/// Converts kernel boot-time stamps (`CLOCK_BOOTTIME`) to wall-clock time.
///
/// Boot time only moves forward; the wall clock can be stepped (NTP, a VM's host resyncing it
/// after a pause). The pipeline re-reads both clocks every second ([`Clock::resync`]): with an
/// offset taken once at start-up, every event and alert after a step carried a time off by the
/// step (33.6 s in one application evaluation, which then found the attacks' events in the
/// wrong windows).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Wall-clock time at boot.
    boot: SystemTime,
}

impl Clock {
    pub fn new() -> Self {
        Self {
            boot: SystemTime::now() - since_boot(),
        }
    }

    pub fn wall(&self, boot_ns: u64) -> SystemTime {
        self.boot + Duration::from_nanos(boot_ns)
    }

    /// Reads both clocks again; returns how far the wall clock moved against boot time since
    /// the last reading, in seconds (positive: stepped forward).
    pub fn resync(&mut self) -> f64 {
        let fresh = Self::new();
        let step = match fresh.boot.duration_since(self.boot) {
            Ok(forward) => forward.as_secs_f64(),
            Err(back) => -back.duration().as_secs_f64(),
        };
        *self = fresh;
        step
    }
}

/// `CLOCK_BOOTTIME` now: the clock of the kernel's event stamps.
fn since_boot() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
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
    /// For exec/open/chmod/file changes: the path made absolute where it could be (see
    /// [`crate::process::paths::absolute_path`]).
    pub path: Option<&'a str>,
    /// For rename/link/symlink: the new name made absolute
    /// ([`crate::process::paths::second_path`]).
    pub path2: Option<&'a str>,
    pub time: SystemTime,
}

/// The keys habitd adds to `output_fields` beside Falco's fields. None is a field a rule can
/// read (a test checks that no Falco field has one of these names), so none can disagree
/// with what rules see. [`RuleEvent::output_fields`] and [`RuleEvent::write_json_line`] write
/// them.
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
        for (i, key) in HABITD_KEYS.iter().enumerate() {
            if let Some(v) = self.habitd_value(i) {
                f.insert((*key).to_owned(), v);
            }
        }
    }

    /// The value of habitd's key `HABITD_KEYS[i]` for this event, if it has one.
    fn habitd_value(&self, i: usize) -> Option<Value> {
        let a = self.attributed;
        let h = &a.event.header;
        match (HABITD_KEYS.get(i).copied()?, &a.event.body) {
            ("habitd.workload", _) => Some(json!(a.workload.key.as_str())),
            ("habitd.host_unit", _) => a.workload.host_unit.as_ref().map(|u| json!(u)),
            ("habitd.argv_truncated", EventBody::Exec { argv_truncated, .. }) => {
                Some(json!(argv_truncated))
            }
            ("habitd.sequence.gram", EventBody::Sequence(r)) => {
                Some(json!(crate::sequences::gram_names(r.gram)))
            }
            ("habitd.sequence.flags", EventBody::Sequence(r)) => Some(json!(r.flags)),
            ("cgroup.id", _) => Some(json!(h.cgroup_id)),
            ("proc.mntns", _) => Some(json!(h.mntns)),
            _ => None,
        }
    }

    /// One JSON line for `--print-events` (without its newline), as a string (tests).
    #[cfg(test)]
    pub fn to_json_line(&self) -> String {
        let mut line = Vec::with_capacity(2048);
        self.write_json_line(&mut line);
        String::from_utf8(line).unwrap_or_default()
    }

    /// Appends the `--print-events` line of this event (without its newline) to `out`: the
    /// JSON of `{time, source, kind, output_fields}` as a `serde_json` map would print it,
    /// keys in its (sorted) order, byte for byte, without building the map.
    pub fn write_json_line(&self, out: &mut Vec<u8>) {
        let a = self.attributed;
        out.extend_from_slice(b"{\"kind\":");
        write_json_str(out, a.event.body.kind_label());
        out.extend_from_slice(b",\"output_fields\":{");
        let mut first = true;
        for (name, key) in print_order() {
            let mark = out.len();
            if !first {
                out.push(b',');
            }
            write_json_str(out, name);
            out.push(b':');
            let written = match *key {
                PrintKey::Supplied(i) => {
                    let field = &supplied()[i].1;
                    match self.get(field.field, field.arg.as_ref()) {
                        Some(v) => {
                            write_field_value(out, &v);
                            true
                        }
                        None => false,
                    }
                }
                PrintKey::Habitd(i) => match self.habitd_value(i) {
                    Some(v) => serde_json::to_writer(&mut *out, &v).is_ok(),
                    None => false,
                },
            };
            if written {
                first = false;
            } else {
                out.truncate(mark);
            }
        }
        out.extend_from_slice(b"},\"source\":\"syscall\",\"time\":");
        write_json_str(out, &rfc3339(a.time));
        out.push(b'}');
    }
}

/// A key of a printed event's `output_fields`: a supplied Falco field (index into
/// [`supplied`]) or one of habitd's (index into [`HABITD_KEYS`]).
#[derive(Debug, Clone, Copy)]
enum PrintKey {
    Supplied(usize),
    Habitd(usize),
}

/// Every key `output_fields` can hold, in the order a `serde_json` map prints them (sorted).
fn print_order() -> &'static [(&'static str, PrintKey)] {
    static ORDER: OnceLock<Vec<(&'static str, PrintKey)>> = OnceLock::new();
    ORDER.get_or_init(|| {
        let mut keys: Vec<(&'static str, PrintKey)> = supplied()
            .iter()
            .enumerate()
            .map(|(i, (name, _))| (*name, PrintKey::Supplied(i)))
            .chain(
                HABITD_KEYS
                    .iter()
                    .enumerate()
                    .map(|(i, name)| (*name, PrintKey::Habitd(i))),
            )
            .collect();
        keys.sort_by(|a, b| a.0.cmp(b.0));
        keys
    })
}

/// A JSON string, escaped as `serde_json` escapes it.
fn write_json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    JsonEscape(out).escape(s);
    out.push(b'"');
}

/// Escapes text written to it into the inside of a JSON string, as `serde_json` does: `"`,
/// `\`, and control characters (`\n`, `\t`, … or `\u00XX`); everything else as is. Values
/// that are text only through `Display` (addresses, lists) are written through it, without
/// an intermediate `String`.
struct JsonEscape<'a>(&'a mut Vec<u8>);

/// The bytes [`JsonEscape`] must escape.
const NEEDS_ESCAPE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

/// Whether any of the eight bytes of `word` must be escaped: one below 0x20, a `"` or a `\\`
/// (bit tricks of "Bit Twiddling Hacks": a zero byte of `x` sets the high bit of
/// `(x - 0x01…01) & !x`; bytes of 0x80 and above never match, as they need no escape).
fn word_needs_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let below_space = word.wrapping_sub(ONES * 0x20) & !word;
    let quote = word ^ (ONES * u64::from(b'"'));
    let backslash = word ^ (ONES * u64::from(b'\\'));
    (below_space
        | (quote.wrapping_sub(ONES) & !quote)
        | (backslash.wrapping_sub(ONES) & !backslash))
        & HIGH
        != 0
}

impl JsonEscape<'_> {
    fn escape(&mut self, s: &str) {
        let bytes = s.as_bytes();
        let mut start = 0;
        let mut i = 0;
        // Eight bytes at a time while none needs escaping (nearly all text), then byte by byte
        // through the word that has one.
        while i < bytes.len() {
            if let Some(word) = bytes.get(i..i + 8) {
                let mut w = [0u8; 8];
                w.copy_from_slice(word);
                if !word_needs_escape(u64::from_le_bytes(w)) {
                    i += 8;
                    continue;
                }
            }
            let end = (i + 8).min(bytes.len());
            for j in i..end {
                let b = bytes[j];
                if NEEDS_ESCAPE[usize::from(b)] {
                    self.escape_byte(bytes, &mut start, j);
                }
            }
            i = end;
        }
        self.0.extend_from_slice(&bytes[start..]);
    }

    /// Writes `bytes[*start..i]` as is, then byte `i` escaped; the next run starts after it.
    fn escape_byte(&mut self, bytes: &[u8], start: &mut usize, i: usize) {
        let b = bytes[i];
        self.0.extend_from_slice(&bytes[*start..i]);
        *start = i + 1;
        match b {
            b'"' => self.0.extend_from_slice(b"\\\""),
            b'\\' => self.0.extend_from_slice(b"\\\\"),
            b'\n' => self.0.extend_from_slice(b"\\n"),
            b'\r' => self.0.extend_from_slice(b"\\r"),
            b'\t' => self.0.extend_from_slice(b"\\t"),
            0x08 => self.0.extend_from_slice(b"\\b"),
            0x0c => self.0.extend_from_slice(b"\\f"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                self.0.extend_from_slice(b"\\u00");
                self.0.push(HEX[usize::from(b >> 4)]);
                self.0.push(HEX[usize::from(b & 0xf)]);
            }
        }
    }
}

impl std::fmt::Write for JsonEscape<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.escape(s);
        Ok(())
    }
}

/// A field's value as [`json_value`] renders it, written without building the JSON value.
fn write_field_value(out: &mut Vec<u8>, value: &FieldValue<'_>) {
    match value {
        FieldValue::Num(n) => {
            let _ = write!(out, "{n}");
        }
        FieldValue::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        FieldValue::Str(s) => write_json_str(out, s),
        FieldValue::Ip(_) | FieldValue::List(_) => {
            out.push(b'"');
            // Writing to a Vec cannot fail.
            let _ = std::fmt::Write::write_fmt(&mut JsonEscape(out), format_args!("{value}"));
            out.push(b'"');
        }
    }
}

#[cfg(test)]
mod escape_tests {
    use super::write_json_str;

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let mut every_ascii: String = (0u8..=127).map(char::from).collect();
        every_ascii.push_str("é → \u{2028} 😀 \"quoted\" back\\slash");
        // Every special byte at every offset of the eight-byte words, in texts of every length
        // around them.
        let mut texts = vec![every_ascii.clone()];
        for special in ['"', '\\', '\n', '\u{1}', '\u{1f}', 'é'] {
            for at in 0..20 {
                let mut t: String = "abcdefghijklmnopqrstuvw".chars().take(at).collect();
                t.push(special);
                t.push_str("0123456789xyz");
                texts.push(t);
            }
        }
        for s in texts
            .iter()
            .map(String::as_str)
            .chain(["", "plain", "\n", "a\u{7f}b", " !#[]~"])
        {
            let mut out = Vec::new();
            write_json_str(&mut out, s);
            assert_eq!(
                String::from_utf8(out).unwrap_or_default(),
                serde_json::to_string(s).unwrap_or_default(),
                "{s:?}"
            );
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod clock_tests {
    use super::{Clock, since_boot};
    use std::time::{Duration, SystemTime};

    /// A clock whose offset was taken before the wall clock was stepped forward by 33.6 s
    /// converts boot stamps to times 33.6 s in the past until it is re-read; `resync` reports
    /// the step and then converts "now" to now.
    #[test]
    fn a_resync_follows_a_stepped_wall_clock_and_reports_the_step() {
        let fresh = Clock::new();
        let mut stale = Clock {
            boot: fresh.boot - Duration::from_millis(33_600),
        };
        let now_boot = since_boot().as_nanos() as u64;
        let behind = SystemTime::now()
            .duration_since(stale.wall(now_boot))
            .unwrap();
        assert!(behind > Duration::from_secs(33), "{behind:?}");
        let step = stale.resync();
        assert!((step - 33.6).abs() < 0.5, "step {step}");
        let off = SystemTime::now()
            .duration_since(stale.wall(now_boot))
            .unwrap_or_default();
        assert!(off < Duration::from_millis(500), "{off:?} after the resync");
        let mut ahead = Clock {
            boot: stale.boot + Duration::from_secs(10),
        };
        assert!(
            (ahead.resync() + 10.0).abs() < 0.5,
            "a step back is negative"
        );
    }
}
