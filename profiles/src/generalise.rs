//! Generalisation: from a raw observed item to the key a profile learns.
//!
//! Raw items contain parts that change every run (pids, timestamps, container ids, temp-file
//! names, ephemeral ports). Learning them verbatim would make every run of a workload look new,
//! so both learning and scoring map a raw item to a *generalised* item first, with the same
//! deterministic rules (no randomness, no state, no regex):
//!
//! | rule | applies to | example |
//! |---|---|---|
//! | a numeric segment right under `/proc`, or after `task/` there, is a pid | paths | `/proc/1234/stat` → `/proc/<pid>/stat` |
//! | a path segment that is all digits | paths | `/dev/pts/3` → `/dev/pts/<num>` |
//! | a number token (`2024-01-02`, `1700000000`, `1.2.3.4`) that is a whole word and has at least [`PATH_MIN_DIGITS`] digits | path segments | `app.2024-01-02.log` → `app.<num>.log` |
//! | a number token of any length that is a whole word | arguments | `--port=80` → `--port=<num>` |
//! | a UUID (8-4-4-4-12 hex) | paths, arguments | `…/3f2b…-…/x` → `…/<uuid>/x` |
//! | a word of ≥ [`MIN_HEX_LEN`] hex digits with at least one digit and one letter (hashes, container ids) | paths, arguments | `/var/lib/docker/overlay2/9f1c…e2/merged` → `/var/lib/docker/overlay2/<hex>/merged` |
//! | `tmp` + optional `.`/`_`/`-` + ≥ 6 random characters (`mktemp`, Python `tempfile`) | paths, arguments | `/tmp/tmp.AbC123xYz9` → `/tmp/<tmp>` |
//! | in `/tmp`, `/var/tmp`, `/dev/shm`: a random-looking name or `name.XXXXXX` suffix | paths | `/tmp/build.a8Kz0Q` → `/tmp/build.<tmp>` |
//! | elsewhere: a `stem.XXXXXX` suffix with lower case, upper case and digits (atomic-rename temp files) | paths | `/etc/.passwd.aB3xY9` → `/etc/.passwd.<tmp>` |
//! | a rotated log's generation: `.N` (1–3 digits), optionally compressed (`.gz`, `.bz2`, `.xz`, `.zst`, `.lz4`, `.Z`), after a name ending in `.log` or anywhere below `/var/log/` | paths | `/var/log/redis/redis.log.3.gz` → `/var/log/redis/redis.log.<num>.gz` |
//! | a number right after a `temp`/`tmp` word and `-`, `.` or `_` (a temp file named by a pid) | paths | `/var/lib/redis/temp-329.rdb` → `/var/lib/redis/temp-<num>.rdb` |
//! | the peer port of an inbound connection when it is ephemeral (≥ 1024) | `inbound` | `10.0.0.5 43122 -> 8080/tcp` → `10.0.0.5 -> 8080/tcp` |
//! | the generalised item is capped at [`MAX_ITEM_BYTES`], ending in `<trunc>` | all | |
//!
//! "Word" means a maximal run of ASCII letters and digits; "number token" means digits
//! optionally joined by single `-`, `.`, `_` or `:` (dates, times, versions, addresses).
//! Number rules in paths are conservative (4 digits) so that `libssl.so.3`, `python3.11` and
//! `sha256sum` stay as they are, except where the name says what the number is: a log's
//! rotation generation (`access.log.1` … `access.log.12.gz`: logrotate makes a new name every
//! day, and learning sees a few) and a pid after `temp-`. Neither rule reaches a name that is
//! not a log or a temp file, so a write to `/etc/passwd.1`, `/usr/bin/x.1` or `/etc/cron.d/x`
//! stays exact; arguments collapse every whole-word number, because
//! `sleep 5` and `sleep 30` are the same habit.
//!
//! Randomness is judged by character classes: a name is "random-looking" if it has at least
//! two of {lower case, upper case, digits} (in temp directories) or all three (elsewhere).
//! This misses the ~1–40% of random names that happen to use fewer classes; those are caught
//! later by directory collapse, which is why the heuristic can afford to be conservative.
//!
//! Paths are not normalised (`..`, `//` and relative paths stay as the kernel reported them).
//! A literal path containing `<num>` or `*` is indistinguishable from a generalised one; that
//! costs precision, never correctness of the lookup.
//!
//! # Collapse: learning `dir/*` and networks
//!
//! Some workloads touch an open-ended set of names (a cache directory, a pool of backend
//! hosts). A [`crate::profile::Profile`] counts the distinct learned items under each
//! *collapse key* ([`collapse_key_into`]): the parent directory (`/var/cache/app/*`) for `exec`
//! and `file`, and the /24 (IPv4) or /64 (IPv6) network for `outbound` and `inbound` (with the
//! rest of the item, so a port stays a port). When more than [`GeneraliseConfig`]'s threshold
//! of siblings are learned, the profile learns the collapse key instead and drops the
//! individual entries; scorers then match unseen siblings as "known, generalised".
//!
//! Network grouping is done by this threshold rather than always: measuring the two showed
//! that threshold collapse needs no extra mechanism (it is the same code as directory collapse)
//! and keeps single well-known peers (a database, a DNS server) exact, so that a connection to
//! the neighbouring address of the database is still novel. Loopback addresses are never
//! collapsed. Collapse is one level deep: a collapsed key never collapses further.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::observation::Dimension;

/// Generalised items longer than this are cut and end in [`TRUNCATED`]. Long enough for real
/// paths and command shapes; short enough that a profile of thousands of items stays small.
pub const MAX_ITEM_BYTES: usize = 512;
/// Marks a generalised item cut at [`MAX_ITEM_BYTES`].
pub const TRUNCATED: &str = "<trunc>";
/// Replaces a process id under `/proc`.
pub const PID: &str = "<pid>";
/// Replaces a number.
pub const NUM: &str = "<num>";
/// Replaces a hex id or hash.
pub const HEX: &str = "<hex>";
/// Replaces a UUID.
pub const UUID: &str = "<uuid>";
/// Replaces a temporary name.
pub const TMP: &str = "<tmp>";
/// The last segment of a collapsed directory (`dir/*`).
pub const ANY: &str = "*";
/// Separates parent and child of a `process_edge` item, and peer and local side of `inbound`.
pub const EDGE_SEPARATOR: &str = " -> ";
/// Minimum digits for a number token inside a path segment to become `<num>`.
pub const PATH_MIN_DIGITS: usize = 4;
/// Minimum length of a hex word to become `<hex>` (8 = a short git hash, a 32-bit id).
pub const MIN_HEX_LEN: usize = 8;
/// Inbound peer ports at or above this are ephemeral and dropped; lower ones (privileged
/// source ports, as NFS or rsh clients use) are meaningful and kept.
pub const EPHEMERAL_PORT_MIN: u16 = 1024;
/// Minimum length of the random part of a temporary name (`mkstemp` uses 6).
const MIN_RANDOM_LEN: usize = 6;
/// Directories whose direct and indirect children get the relaxed temporary-name rules.
const TEMP_DIRS: [&str; 3] = ["/tmp/", "/var/tmp/", "/dev/shm/"];
/// IPv4 prefix length of a collapsed network.
pub const V4_COLLAPSE_PREFIX: u8 = 24;
/// IPv6 prefix length of a collapsed network.
pub const V6_COLLAPSE_PREFIX: u8 = 64;

/// Thresholds of collapse (see the module documentation). Stored in profiles and baselines so
/// that merging and scoring use the thresholds the data was learned with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GeneraliseConfig {
    /// A directory with more than this many distinct learned names (per file mode) is learned
    /// as `dir/*`. 32: more than any configuration directory of a typical service holds, fewer
    /// than a cache or spool directory reaches within minutes.
    pub dir_collapse_after: u32,
    /// A /24 or /64 with more than this many distinct learned hosts (per port and protocol) is
    /// learned as the network. 8: a replica set or a small load-balanced pool stays exact,
    /// a service behind many addresses (a CDN, an autoscaled pool) collapses.
    pub net_collapse_after: u32,
}

impl Default for GeneraliseConfig {
    fn default() -> Self {
        Self {
            dir_collapse_after: 32,
            net_collapse_after: 8,
        }
    }
}

impl GeneraliseConfig {
    /// The collapse threshold of a dimension, or `None` if the dimension never collapses.
    pub fn collapse_after(&self, dimension: Dimension) -> Option<u32> {
        match dimension {
            Dimension::Exec | Dimension::File | Dimension::FileChange => {
                Some(self.dir_collapse_after)
            }
            Dimension::Inbound | Dimension::Outbound => Some(self.net_collapse_after),
            _ => None,
        }
    }
}

/// Appends the generalised form of the raw `item` of `dimension` to `out`.
///
/// Allocates nothing unless `out` must grow: scorers reuse one buffer per thread.
pub fn generalise_into(dimension: Dimension, item: &str, out: &mut String) {
    let start = out.len();
    match dimension {
        Dimension::Exec => path_into(item, out),
        Dimension::ProcessEdge => match item.split_once(EDGE_SEPARATOR) {
            Some((parent, child)) => {
                path_into(parent, out);
                out.push_str(EDGE_SEPARATOR);
                path_into(child, out);
            }
            None => path_into(item, out),
        },
        Dimension::Args => args_into(item, out),
        Dimension::File => match item.split_once(' ') {
            Some((mode @ ("r" | "w" | "rw"), path)) => {
                out.push_str(mode);
                out.push(' ');
                path_into(path, out);
            }
            _ => path_into(item, out),
        },
        Dimension::Inbound => inbound_into(item, out),
        Dimension::Privileged => privileged_into(item, out),
        Dimension::FileChange => file_change_into(item, out),
        Dimension::Listen | Dimension::Outbound | Dimension::Syscall => {
            out.push_str(item.trim());
        }
    }
    if out.len() - start > MAX_ITEM_BYTES {
        let mut cut = start + MAX_ITEM_BYTES - TRUNCATED.len();
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str(TRUNCATED);
    }
}

/// The generalised form of a raw item, as a new string.
pub fn generalise(dimension: Dimension, item: &str) -> String {
    let mut out = String::with_capacity(item.len());
    generalise_into(dimension, item, &mut out);
    out
}

/// Appends the collapse key of a *generalised* item to `out` and returns `true`, or returns
/// `false` (leaving `out` unchanged) if the item has none: its dimension never collapses, it is
/// itself a collapse key, or it is a loopback or unparsable address.
pub fn collapse_key_into(dimension: Dimension, item: &str, out: &mut String) -> bool {
    let start = out.len();
    let done = match dimension {
        Dimension::Exec => dir_key_into(item, out),
        Dimension::File => match item.split_once(' ') {
            Some((mode, path)) => {
                out.push_str(mode);
                out.push(' ');
                dir_key_into(path, out)
            }
            None => dir_key_into(item, out),
        },
        Dimension::Inbound | Dimension::Outbound => net_key_into(item, out),
        // One-path changes collapse by directory (a cache that deletes its entries); a rename
        // or link stays exact, because its two names are what matters.
        Dimension::FileChange => match item.split_once(' ') {
            Some((op, path)) if !path.contains(EDGE_SEPARATOR) => {
                out.push_str(op);
                out.push(' ');
                dir_key_into(path, out)
            }
            _ => false,
        },
        _ => false,
    };
    if !done {
        out.truncate(start);
    }
    done
}

/// The collapse key of a generalised item, as a new string.
pub fn collapse_key(dimension: Dimension, item: &str) -> Option<String> {
    let mut out = String::new();
    collapse_key_into(dimension, item, &mut out).then_some(out)
}

/// Whether a generalised item is itself a collapse key (`dir/*` or a network).
pub fn is_collapse_key(dimension: Dimension, item: &str) -> bool {
    match dimension {
        Dimension::Exec | Dimension::File | Dimension::FileChange => item.ends_with("/*"),
        // A network (`10.1.2.0/24`), not a workload key (`docker.io/shop/backend:2`).
        Dimension::Inbound | Dimension::Outbound => item
            .split(' ')
            .next()
            .and_then(|addr| addr.split_once('/'))
            .is_some_and(|(net, _)| net.parse::<IpAddr>().is_ok()),
        _ => false,
    }
}

fn dir_key_into(path: &str, out: &mut String) -> bool {
    match path.rfind('/') {
        Some(slash) => {
            let name = &path[slash + 1..];
            if name.is_empty() || name == ANY || name == TRUNCATED || name.ends_with(TRUNCATED) {
                return false;
            }
            out.push_str(&path[..=slash]);
            out.push_str(ANY);
            true
        }
        None => false,
    }
}

fn net_key_into(item: &str, out: &mut String) -> bool {
    let (addr, rest) = match item.split_once(' ') {
        Some(parts) => parts,
        None => return false,
    };
    let Ok(ip) = addr.parse::<IpAddr>() else {
        return false;
    };
    if ip.is_loopback() {
        return false;
    }
    let written = match ip {
        IpAddr::V4(v4) => {
            let net = Ipv4Addr::from(u32::from(v4) & (u32::MAX << (32 - V4_COLLAPSE_PREFIX)));
            write!(out, "{net}/{V4_COLLAPSE_PREFIX} {rest}")
        }
        IpAddr::V6(v6) => {
            let net = Ipv6Addr::from(u128::from(v6) & (u128::MAX << (128 - V6_COLLAPSE_PREFIX)));
            write!(out, "{net}/{V6_COLLAPSE_PREFIX} {rest}")
        }
    };
    written.is_ok()
}

/// `addr port -> local` → `addr -> local`, keeping the peer port only if it is privileged.
fn inbound_into(item: &str, out: &mut String) {
    let Some((peer, local)) = item.split_once(EDGE_SEPARATOR) else {
        out.push_str(item);
        return;
    };
    let mut parts = peer.split_ascii_whitespace();
    if let Some(addr) = parts.next() {
        out.push_str(addr);
    }
    if let Some(port) = parts.next() {
        match port.parse::<u16>() {
            Ok(p) if p >= EPHEMERAL_PORT_MIN => {}
            _ => {
                out.push(' ');
                out.push_str(port);
            }
        }
    }
    out.push_str(EDGE_SEPARATOR);
    out.push_str(local);
}

/// `op path` or `op path -> path2`: the operation kept, each path generalised as a file's.
fn file_change_into(item: &str, out: &mut String) {
    let (op, paths) = item.split_once(' ').unwrap_or(("", item));
    if !op.is_empty() {
        out.push_str(op);
        out.push(' ');
    }
    match paths.split_once(EDGE_SEPARATOR) {
        Some((from, to)) => {
            path_into(from, out);
            out.push_str(EDGE_SEPARATOR);
            path_into(to, out);
        }
        None => path_into(paths, out),
    }
}

fn privileged_into(item: &str, out: &mut String) {
    let mut tokens = item.split_ascii_whitespace();
    if let Some(op) = tokens.next() {
        out.push_str(op);
    }
    for token in tokens {
        out.push(' ');
        arg_into(token, out);
    }
}

fn args_into(item: &str, out: &mut String) {
    let mut tokens = item.split_ascii_whitespace();
    if let Some(exe) = tokens.next() {
        path_into(exe, out);
    }
    for token in tokens {
        out.push(' ');
        arg_into(token, out);
    }
}

/// One argument: a path (or `--opt=/path`) gets the path rules, anything else the word rules
/// with every whole-word number collapsed.
fn arg_into(arg: &str, out: &mut String) {
    if let Some((key, value)) = arg.split_once('=')
        && value.starts_with('/')
    {
        words_into(key, 1, out);
        out.push('=');
        path_into(value, out);
    } else if arg.contains('/') {
        path_into(arg, out);
    } else if is_tmp_prefixed(arg, false) {
        out.push_str(TMP);
    } else {
        words_into(arg, 1, out);
    }
}

/// Generalises a path segment by segment.
fn path_into(path: &str, out: &mut String) {
    let temp_len = TEMP_DIRS
        .iter()
        .find(|dir| path.starts_with(*dir))
        .map(|dir| dir.len());
    let in_proc = path.starts_with("/proc/");
    let in_log = path.starts_with(LOG_DIR);
    let mut previous = "";
    let mut offset = 0;
    for (index, segment) in path.split('/').enumerate() {
        if index > 0 {
            out.push('/');
        }
        let in_temp = temp_len.is_some_and(|len| offset >= len);
        if let Some((stem, compressed)) = rotated_log(segment, in_log && offset >= LOG_DIR.len()) {
            segment_into(stem, index, previous, in_proc, in_temp, out);
            out.push('.');
            out.push_str(NUM);
            out.push_str(compressed);
        } else {
            segment_into(segment, index, previous, in_proc, in_temp, out);
        }
        offset += segment.len() + 1;
        previous = segment;
    }
}

/// Compression suffixes of rotated logs.
const COMPRESSED: [&str; 6] = [".gz", ".bz2", ".xz", ".zst", ".lz4", ".Z"];
/// Below it every file is a log.
const LOG_DIR: &str = "/var/log/";
/// Most digits of a rotation generation (`.1` … `.999`).
const MAX_GENERATION_DIGITS: usize = 3;

/// If `segment` is a rotated log (`name.N` or `name.N.gz` etc., N of 1–3 digits, where the
/// name ends in `.log` or the file is below `/var/log/`: `in_log`), its name and compression
/// suffix (possibly empty).
fn rotated_log(segment: &str, in_log: bool) -> Option<(&str, &'static str)> {
    let (rest, compressed) = COMPRESSED
        .iter()
        .find_map(|ext| segment.strip_suffix(ext).map(|rest| (rest, *ext)))
        .unwrap_or((segment, ""));
    let dot = rest.rfind('.')?;
    let (stem, generation) = (&rest[..dot], &rest[dot + 1..]);
    let is_generation =
        (1..=MAX_GENERATION_DIGITS).contains(&generation.len()) && is_all_digits(generation);
    (is_generation
        && !stem.is_empty()
        && !stem.ends_with('.')
        && (in_log || stem.ends_with(".log")))
    .then_some((stem, compressed))
}

/// The byte range of a number right after a `temp`/`tmp` word and one of `-`, `.`, `_`
/// (`temp-329.rdb`, `tmp_42`), whole word, any length.
fn temp_number(segment: &str) -> Option<(usize, usize)> {
    // Compared in place, case-insensitively: scoring generalises every path it sees and must
    // not allocate (`habit_models::novelty`'s allocation test).
    let bytes = segment.as_bytes();
    for word in [b"temp".as_slice(), b"tmp".as_slice()] {
        for start in 0..bytes.len().saturating_sub(word.len()) {
            let after = start + word.len();
            if !bytes[start..after].eq_ignore_ascii_case(word) {
                continue;
            }
            if start > 0 && bytes[start - 1].is_ascii_alphanumeric() {
                continue;
            }
            if !matches!(bytes.get(after), Some(b'-' | b'.' | b'_')) {
                continue;
            }
            let digits = bytes[after + 1..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            let end = after + 1 + digits;
            if digits > 0 && is_boundary(bytes, end) {
                return Some((after + 1, end));
            }
        }
    }
    None
}

fn segment_into(
    segment: &str,
    index: usize,
    previous: &str,
    in_proc: bool,
    in_temp: bool,
    out: &mut String,
) {
    if segment.is_empty() || segment == ANY {
        out.push_str(segment);
    } else if is_all_digits(segment) {
        let pid = in_proc && (index == 2 || previous == "task");
        out.push_str(if pid { PID } else { NUM });
    } else if is_tmp_prefixed(segment, in_temp)
        || (in_temp && segment.len() >= MIN_RANDOM_LEN && is_random(segment, 2))
    {
        out.push_str(TMP);
    } else if let Some(stem_end) = random_suffix(segment, if in_temp { 2 } else { 3 }) {
        words_into(&segment[..stem_end], PATH_MIN_DIGITS, out);
        out.push_str(TMP);
    } else if let Some((start, end)) = temp_number(segment) {
        words_into(&segment[..start], PATH_MIN_DIGITS, out);
        out.push_str(NUM);
        words_into(&segment[end..], PATH_MIN_DIGITS, out);
    } else {
        words_into(segment, PATH_MIN_DIGITS, out);
    }
}

/// `tmp` + optional separator + ≥ 6 characters of `[A-Za-z0-9_]`; outside temp directories
/// the random part must also look random (two character classes).
fn is_tmp_prefixed(name: &str, in_temp: bool) -> bool {
    let Some(rest) = name.strip_prefix("tmp") else {
        return false;
    };
    let rest = rest.strip_prefix(['.', '_', '-']).unwrap_or(rest);
    rest.len() >= MIN_RANDOM_LEN
        && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && (in_temp || classes(rest) >= 2)
}

/// If `name` is `stem SEP random` (SEP one of `.`, `_`, `-`, a non-empty stem, a random part of
/// ≥ 6 ASCII alphanumerics with at least `min_classes` character classes), the index just after
/// SEP.
fn random_suffix(name: &str, min_classes: u8) -> Option<usize> {
    let sep = name.rfind(['.', '_', '-'])?;
    let random = &name[sep + 1..];
    (sep > 0 && random.len() >= MIN_RANDOM_LEN && is_random(random, min_classes)).then_some(sep + 1)
}

/// All ASCII alphanumeric with at least `min_classes` of {lower, upper, digit}.
fn is_random(text: &str, min_classes: u8) -> bool {
    text.bytes().all(|b| b.is_ascii_alphanumeric()) && classes(text) >= min_classes
}

/// How many of {lower case, upper case, digits} occur in `text`.
fn classes(text: &str) -> u8 {
    let (mut lower, mut upper, mut digit) = (false, false, false);
    for b in text.bytes() {
        lower |= b.is_ascii_lowercase();
        upper |= b.is_ascii_uppercase();
        digit |= b.is_ascii_digit();
    }
    u8::from(lower) + u8::from(upper) + u8::from(digit)
}

fn is_all_digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

/// Copies `text` to `out`, replacing UUIDs, hex words and number tokens (with at least
/// `min_digits` digits) that are whole words.
fn words_into(text: &str, min_digits: usize, out: &mut String) {
    let bytes = text.as_bytes();
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        let at_word_start =
            bytes[i].is_ascii_alphanumeric() && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric());
        if !at_word_start {
            i += 1;
            continue;
        }
        let (end, replacement) = if let Some(end) = uuid_at(bytes, i) {
            (end, Some(UUID))
        } else if let Some((end, digits)) = number_at(bytes, i) {
            (end, (digits >= min_digits).then_some(NUM))
        } else {
            let end = word_end(bytes, i);
            (end, is_hex_word(&bytes[i..end]).then_some(HEX))
        };
        if let Some(replacement) = replacement {
            // `i` and `end` are at ASCII bytes or the end, so both are char boundaries.
            out.push_str(&text[copied..i]);
            out.push_str(replacement);
            copied = end;
        }
        i = end.max(i + 1);
    }
    out.push_str(&text[copied..]);
}

fn word_end(bytes: &[u8], start: usize) -> usize {
    bytes[start..]
        .iter()
        .position(|b| !b.is_ascii_alphanumeric())
        .map_or(bytes.len(), |n| start + n)
}

fn is_boundary(bytes: &[u8], at: usize) -> bool {
    at >= bytes.len() || !bytes[at].is_ascii_alphanumeric()
}

/// A UUID (8-4-4-4-12 hex digits) starting at `start` and ending at a word boundary.
fn uuid_at(bytes: &[u8], start: usize) -> Option<usize> {
    const GROUPS: [usize; 5] = [8, 4, 4, 4, 12];
    let mut at = start;
    for (n, len) in GROUPS.into_iter().enumerate() {
        if n > 0 {
            if bytes.get(at) != Some(&b'-') {
                return None;
            }
            at += 1;
        }
        let group = bytes.get(at..at + len)?;
        if !group.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        at += len;
    }
    is_boundary(bytes, at).then_some(at)
}

/// A number token (`digits ([-._:] digits)*`) starting at `start` and ending at a word
/// boundary: its end and its digit count.
fn number_at(bytes: &[u8], start: usize) -> Option<(usize, usize)> {
    let digits_from = |at: usize| {
        bytes[at..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count()
    };
    let mut end = start + digits_from(start);
    if end == start {
        return None;
    }
    let mut digits = end - start;
    while end + 1 < bytes.len() && matches!(bytes[end], b'-' | b'.' | b'_' | b':') {
        let more = digits_from(end + 1);
        if more == 0 {
            break;
        }
        end += 1 + more;
        digits += more;
    }
    is_boundary(bytes, end).then_some((end, digits))
}

/// A word of ≥ [`MIN_HEX_LEN`] hex digits with at least one decimal digit and one letter
/// (all-digit words are numbers; all-letter words like `deadbeef`… are words).
fn is_hex_word(word: &[u8]) -> bool {
    word.len() >= MIN_HEX_LEN
        && word.iter().all(u8::is_ascii_hexdigit)
        && word.iter().any(u8::is_ascii_digit)
        && word.iter().any(u8::is_ascii_alphabetic)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use Dimension::*;

    fn g(d: Dimension, item: &str) -> String {
        generalise(d, item)
    }

    #[test]
    fn file_changes_generalise_each_path_like_files() {
        assert_eq!(
            g(
                FileChange,
                "rename /var/log/nginx/access.log -> /var/log/nginx/access.log.1"
            ),
            "rename /var/log/nginx/access.log -> /var/log/nginx/access.log.<num>"
        );
        assert_eq!(
            g(FileChange, "rename /etc/.passwd.aB3xY9 -> /etc/passwd"),
            "rename /etc/.passwd.<tmp> -> /etc/passwd"
        );
        assert_eq!(
            g(FileChange, "unlink /tmp/tmp.AbC123xYz9"),
            "unlink /tmp/<tmp>"
        );
        assert_eq!(g(FileChange, "chown /etc/shadow"), "chown /etc/shadow");
        assert_eq!(
            collapse_key(FileChange, "unlink /var/cache/app/x").as_deref(),
            Some("unlink /var/cache/app/*")
        );
        assert_eq!(collapse_key(FileChange, "rename /a/b -> /a/c"), None);
        assert!(is_collapse_key(FileChange, "unlink /var/cache/app/*"));
        assert_eq!(
            GeneraliseConfig::default().collapse_after(FileChange),
            Some(32)
        );
    }

    #[test]
    fn proc_pids_become_pid() {
        assert_eq!(g(File, "r /proc/1234/stat"), "r /proc/<pid>/stat");
        assert_eq!(
            g(File, "r /proc/1234/task/1240/comm"),
            "r /proc/<pid>/task/<pid>/comm"
        );
        assert_eq!(g(File, "r /proc/self/fd/3"), "r /proc/self/fd/<num>");
        assert_eq!(
            g(File, "r /proc/sys/kernel/pid_max"),
            "r /proc/sys/kernel/pid_max"
        );
    }

    #[test]
    fn numeric_segments_and_long_number_tokens_become_num() {
        assert_eq!(g(Exec, "/dev/pts/3"), "/dev/pts/<num>");
        assert_eq!(
            g(File, "w /var/log/app.2024-01-02.log"),
            "w /var/log/app.<num>.log"
        );
        assert_eq!(
            g(File, "w /var/log/app-1700000000.log"),
            "w /var/log/app-<num>.log"
        );
        assert_eq!(g(File, "r /data/12:30:00.csv"), "r /data/<num>.csv");
        assert_eq!(g(File, "r /srv/1.2.3.4/x"), "r /srv/<num>/x");
    }

    #[test]
    fn short_and_embedded_numbers_in_paths_stay() {
        for path in [
            "/usr/lib/x86_64-linux-gnu/libssl.so.3",
            "/usr/lib/python3.11/os.py",
            "/usr/bin/sha256sum",
            "/etc/rc2.d/S01ssh",
            "/opt/app12345/run",
        ] {
            assert_eq!(g(Exec, path), path);
        }
    }

    #[test]
    fn rotated_log_generations_become_num() {
        for (raw, generalised) in [
            ("w /var/log/app.log.1", "w /var/log/app.log.<num>"),
            ("w /var/log/app.log.12", "w /var/log/app.log.<num>"),
            (
                "w /var/log/redis/redis-server.log.2.gz",
                "w /var/log/redis/redis-server.log.<num>.gz",
            ),
            (
                "r /var/log/redis/redis-server.log.11.gz",
                "w /var/log/redis/redis-server.log.<num>.gz"
                    .replacen('w', "r", 1)
                    .as_str(),
            ),
            (
                "w /var/log/nginx/access.log.3.xz",
                "w /var/log/nginx/access.log.<num>.xz",
            ),
            // Below /var/log every file is a log, whatever its name.
            ("w /var/log/syslog.1", "w /var/log/syslog.<num>"),
            (
                "w /var/log/postgresql/pg.csv.7.gz",
                "w /var/log/postgresql/pg.csv.<num>.gz",
            ),
            // Elsewhere, a name ending in .log.
            ("w /srv/app/logs/app.log.4", "w /srv/app/logs/app.log.<num>"),
            // Dates were numbers already.
            (
                "w /var/log/app.log-20240102.gz",
                "w /var/log/app.log-<num>.gz",
            ),
        ] {
            assert_eq!(g(File, raw), generalised, "{raw}");
            assert_eq!(g(File, generalised), generalised, "idempotent: {raw}");
        }
        // Not logs: /etc, binaries, libraries, and too many digits stay exact.
        for path in [
            "w /etc/passwd.1",
            "w /etc/cron.d/job.1",
            "w /usr/bin/sshd.1",
            "w /usr/lib/x86_64-linux-gnu/libssl.so.3",
            "w /srv/app/data.1.gz",
            "w /var/log/",
            "w /var/log/.1",
        ] {
            assert_eq!(g(File, path), path);
        }
    }

    #[test]
    fn temp_files_named_by_a_pid_become_num() {
        assert_eq!(
            g(File, "w /var/lib/redis/temp-329.rdb"),
            "w /var/lib/redis/temp-<num>.rdb"
        );
        assert_eq!(
            g(File, "w /var/lib/redis/temp-rewriteaof-bg-77.aof"),
            "w /var/lib/redis/temp-rewriteaof-bg-77.aof",
            "the number must follow temp- directly"
        );
        assert_eq!(g(File, "w /data/tmp_42"), "w /data/tmp_<num>");
        assert_eq!(g(File, "w /data/Temp.9.dat"), "w /data/Temp.<num>.dat");
        // The directory still tells /etc from the data directory.
        assert_eq!(g(File, "w /etc/temp-12.rdb"), "w /etc/temp-<num>.rdb");
        // Not after temp/tmp, or not a whole word: unchanged.
        for path in [
            "w /data/attempt-3.log",
            "w /data/temp-3x.rdb",
            "w /data/temporary-3.rdb",
            "w /etc/passwd-1",
        ] {
            assert_eq!(g(File, path), path);
        }
    }

    #[test]
    fn hex_ids_and_hashes_become_hex() {
        let id = "9f1c2ab34e5d6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8";
        assert_eq!(
            g(
                File,
                &format!("r /var/lib/docker/overlay2/{id}/merged/etc/hosts")
            ),
            "r /var/lib/docker/overlay2/<hex>/merged/etc/hosts"
        );
        assert_eq!(
            g(File, "r /cache/sha256:abcdef0123"),
            "r /cache/sha256:<hex>"
        );
        assert_eq!(g(File, "r /x/deadbeef7.bin"), "r /x/<hex>.bin");
        // All letters: a word, not a hash. Fewer than 8: too short to be an id.
        assert_eq!(g(File, "r /x/deadbeef/acce55"), "r /x/deadbeef/acce55");
        // Hex letters inside a longer word do not count.
        assert_eq!(g(File, "r /x/libdeadbeef12z"), "r /x/libdeadbeef12z");
    }

    #[test]
    fn uuids_become_uuid() {
        assert_eq!(
            g(
                File,
                "r /run/containers/3F2504E0-4F89-11D3-9A0C-0305E82C3301/config.json"
            ),
            "r /run/containers/<uuid>/config.json"
        );
        assert_eq!(
            g(
                Args,
                "/usr/bin/app --id=123e4567-e89b-12d3-a456-426614174000"
            ),
            "/usr/bin/app --id=<uuid>"
        );
    }

    #[test]
    fn temp_names_become_tmp() {
        assert_eq!(g(File, "rw /tmp/tmp.AbC123"), "rw /tmp/<tmp>");
        assert_eq!(g(File, "rw /tmp/tmp.AbC123xYz9"), "rw /tmp/<tmp>");
        assert_eq!(g(File, "rw /tmp/tmpa8b_2kxq"), "rw /tmp/<tmp>");
        assert_eq!(g(File, "rw /tmp/tmpabcdefgh"), "rw /tmp/<tmp>");
        assert_eq!(
            g(File, "rw /var/tmp/build.a8Kz0Q"),
            "rw /var/tmp/build.<tmp>"
        );
        assert_eq!(g(File, "rw /dev/shm/aB3dE5fG"), "rw /dev/shm/<tmp>");
        assert_eq!(g(File, "rw /tmp/x/tmpZZ99aa/out"), "rw /tmp/x/<tmp>/out");
        // mkstemp next to the real file, outside temp directories: needs all three classes.
        assert_eq!(g(File, "w /etc/.passwd.aB3xY9"), "w /etc/.passwd.<tmp>");
        assert_eq!(g(File, "w /etc/app.backup"), "w /etc/app.backup");
        assert_eq!(
            g(File, "r /usr/lib/tmpfiles.d/x.conf"),
            "r /usr/lib/tmpfiles.d/x.conf"
        );
        // The temp directory itself is not a temp name.
        assert_eq!(g(File, "r /tmp/"), "r /tmp/");
        assert_eq!(g(File, "r /tmp/app.sock"), "r /tmp/app.sock");
    }

    #[test]
    fn arguments_collapse_numbers_hex_and_temp_names() {
        assert_eq!(g(Args, "/usr/bin/sleep 30"), "/usr/bin/sleep <num>");
        assert_eq!(g(Args, "/usr/bin/head -n 10 -"), "/usr/bin/head -n <num> -");
        assert_eq!(
            g(Args, "/usr/bin/app --port=8080 --level=-1"),
            "/usr/bin/app --port=<num> --level=-<num>"
        );
        assert_eq!(
            g(Args, "/usr/bin/kill -9 4242"),
            "/usr/bin/kill -<num> <num>"
        );
        assert_eq!(
            g(Args, "/usr/bin/git checkout 3f2a9b1c7d"),
            "/usr/bin/git checkout <hex>"
        );
        assert_eq!(
            g(Args, "/bin/cat /proc/77/status --out=/tmp/tmp.Q1w2E3r4"),
            "/bin/cat /proc/<pid>/status --out=/tmp/<tmp>"
        );
        assert_eq!(g(Args, "/usr/bin/x tmpQ1w2E3r4"), "/usr/bin/x <tmp>");
        // Words stay words.
        assert_eq!(
            g(Args, "/usr/sbin/nginx -g daemon"),
            "/usr/sbin/nginx -g daemon"
        );
        assert_eq!(g(Args, "/usr/bin/gcc -O2"), "/usr/bin/gcc -O2");
    }

    #[test]
    fn process_edges_and_privileged_ops_generalise_their_paths() {
        assert_eq!(
            g(ProcessEdge, "/proc/12/exe -> /tmp/tmp.AbC123xy"),
            "/proc/<pid>/exe -> /tmp/<tmp>"
        );
        assert_eq!(g(Privileged, "mount /mnt/1234"), "mount /mnt/<num>");
        assert_eq!(g(Privileged, "setuid"), "setuid");
        assert_eq!(g(Privileged, "ptrace 4242"), "ptrace <num>");
    }

    #[test]
    fn inbound_drops_ephemeral_peer_ports_only() {
        assert_eq!(
            g(Inbound, "10.0.0.5 43122 -> 8080/tcp"),
            "10.0.0.5 -> 8080/tcp"
        );
        assert_eq!(
            g(Inbound, "10.0.0.5 1021 -> 2049/tcp"),
            "10.0.0.5 1021 -> 2049/tcp"
        );
        assert_eq!(g(Inbound, "fe80::1 50000 -> 22/tcp"), "fe80::1 -> 22/tcp");
        assert_eq!(g(Outbound, "10.0.0.5 443/tcp"), "10.0.0.5 443/tcp");
        assert_eq!(g(Listen, "8080/tcp"), "8080/tcp");
        assert_eq!(g(Syscall, "openat"), "openat");
    }

    #[test]
    fn generalisation_is_idempotent() {
        for (d, item) in [
            (File, "r /proc/1234/task/99/stat"),
            (Args, "/usr/bin/sleep 30 --x=/tmp/tmp.AbC123"),
            (File, "w /var/log/app.2024-01-02.log"),
            (Inbound, "10.1.2.3 40000 -> 80/tcp"),
        ] {
            let once = g(d, item);
            assert_eq!(g(d, &once), once, "{item}");
        }
    }

    #[test]
    fn long_items_are_truncated_at_a_boundary() {
        let path = format!("/{}", "é".repeat(400));
        let out = g(Exec, &path);
        assert!(out.len() <= MAX_ITEM_BYTES);
        assert!(out.ends_with(TRUNCATED));
        // And appending to a non-empty buffer caps only the appended part.
        let mut buf = "prefix".to_owned();
        generalise_into(Exec, &path, &mut buf);
        assert!(buf.starts_with("prefix/é"));
        assert!(buf.len() <= "prefix".len() + MAX_ITEM_BYTES);
    }

    #[test]
    fn directory_collapse_keys() {
        assert_eq!(collapse_key(Exec, "/usr/bin/curl").unwrap(), "/usr/bin/*");
        assert_eq!(
            collapse_key(File, "rw /var/cache/x").unwrap(),
            "rw /var/cache/*"
        );
        assert_eq!(collapse_key(File, "r /x").unwrap(), "r /*");
        assert!(collapse_key(File, "r /var/cache/*").is_none());
        assert!(collapse_key(File, "r /var/cache/").is_none());
        assert!(collapse_key(Syscall, "openat").is_none());
        assert!(collapse_key(Args, "/bin/ls -l").is_none());
        assert!(is_collapse_key(File, "r /var/cache/*"));
        assert!(!is_collapse_key(File, "r /var/cache/a"));
    }

    #[test]
    fn network_collapse_keys() {
        assert_eq!(
            collapse_key(Outbound, "10.1.2.3 443/tcp").unwrap(),
            "10.1.2.0/24 443/tcp"
        );
        assert_eq!(
            collapse_key(Inbound, "10.1.2.3 -> 8080/tcp").unwrap(),
            "10.1.2.0/24 -> 8080/tcp"
        );
        assert_eq!(
            collapse_key(Outbound, "2001:db8:1:2:3:4:5:6 53/udp").unwrap(),
            "2001:db8:1:2::/64 53/udp"
        );
        assert!(collapse_key(Outbound, "127.0.0.1 5432/tcp").is_none());
        assert!(collapse_key(Outbound, "::1 5432/tcp").is_none());
        assert!(collapse_key(Outbound, "10.1.2.0/24 443/tcp").is_none());
        assert!(is_collapse_key(Outbound, "10.1.2.0/24 443/tcp"));
        assert!(!is_collapse_key(Outbound, "10.1.2.3 443/tcp"));
        // A peer workload's key is exact: never a network, never collapsed.
        assert!(!is_collapse_key(
            Outbound,
            "docker.io/shop/backend:2 8000/tcp"
        ));
        assert!(collapse_key(Outbound, "docker.io/shop/backend:2 8000/tcp").is_none());
        assert_eq!(
            g(Outbound, "docker.io/shop/backend:2 8000/tcp"),
            "docker.io/shop/backend:2 8000/tcp"
        );
        let mut buf = "keep".to_owned();
        assert!(!collapse_key_into(Outbound, "garbage", &mut buf));
        assert_eq!(buf, "keep");
    }

    #[test]
    fn collapse_thresholds_per_dimension() {
        let c = GeneraliseConfig::default();
        assert_eq!(c.collapse_after(File), Some(32));
        assert_eq!(c.collapse_after(Outbound), Some(8));
        assert_eq!(c.collapse_after(Syscall), None);
    }
}
