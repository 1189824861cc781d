//! Plain-text tables for the terminal.
//!
//! Columns are padded to their widest cell and separated by two spaces; text columns are
//! left-aligned, numbers right-aligned, and no line ends in spaces. Widths count characters,
//! which is right for the ASCII that keys and numbers are made of. Control characters in
//! cells (a key comes from the daemon, which took it from a container runtime) are escaped so
//! that a hostile name cannot move the cursor or recolour the terminal.

use std::fmt::Write as _;

use habit_profiles::store::ForcedMode;

use crate::client::WorkloadView;

/// How a column's cells line up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Text: padded on the right.
    Left,
    /// Numbers: padded on the left.
    Right,
}

/// A table: a header row and rows of cells.
#[derive(Debug, Clone)]
pub struct Table {
    columns: Vec<(&'static str, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// An empty table with these columns.
    pub fn new(columns: &[(&'static str, Align)]) -> Table {
        Table {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row. Missing cells are empty; cells beyond the columns are dropped.
    pub fn push(&mut self, cells: Vec<String>) {
        let mut cells: Vec<String> = cells
            .into_iter()
            .take(self.columns.len())
            .map(|cell| printable(&cell))
            .collect();
        cells.resize(self.columns.len(), String::new());
        self.rows.push(cells);
    }

    /// The table as text, one line per row after the header, each ending in `\n`.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self
            .columns
            .iter()
            .map(|(name, _)| name.chars().count())
            .collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let header = self.columns.iter().map(|(name, _)| (*name).to_owned());
        self.render_line(&mut out, header, &widths);
        for row in &self.rows {
            self.render_line(&mut out, row.iter().cloned(), &widths);
        }
        out
    }

    fn render_line(&self, out: &mut String, cells: impl Iterator<Item = String>, widths: &[usize]) {
        let start = out.len();
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            let width = widths.get(i).copied().unwrap_or(0);
            let align = self.columns.get(i).map_or(Align::Left, |c| c.1);
            // Writing to a String cannot fail.
            let _ = match align {
                Align::Left => write!(out, "{cell:<width$}"),
                Align::Right => write!(out, "{cell:>width$}"),
            };
        }
        let end = out[start..].trim_end().len() + start;
        out.truncate(end);
        out.push('\n');
    }
}

/// `s` with control characters escaped (`\n`, `\u{1b}`, …).
pub fn printable(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_owned();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_debug().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A duration in seconds, short and readable: `42s`, `3m07s`, `2h05m`, `3d04h`; `-` for a
/// missing or impossible value.
pub fn format_secs(secs: Option<f64>) -> String {
    let Some(secs) = secs.filter(|s| s.is_finite() && *s >= 0.0) else {
        return "-".to_owned();
    };
    // Whole seconds are all a person reads here; values beyond u64 saturate.
    let secs = secs.floor() as u64;
    let (days, hours, minutes, seconds) =
        (secs / 86_400, secs / 3_600 % 24, secs / 60 % 60, secs % 60);
    if days > 0 {
        format!("{days}d{hours:02}h")
    } else if hours > 0 {
        format!("{hours}h{minutes:02}m")
    } else if minutes > 0 {
        format!("{minutes}m{seconds:02}s")
    } else {
        format!("{seconds}s")
    }
}

/// A Unix time in milliseconds as `YYYY-MM-DD HH:MM:SS UTC` (proleptic Gregorian calendar).
pub fn format_unix_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's `civil_from_days`), in u64:
    // shifting the epoch to 0000-03-01 keeps every intermediate value non-negative.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3_600,
        rest / 60 % 60,
        rest % 60
    )
}

/// Learning progress (0..=1) as a whole percentage, rounded down so that `100%` means done;
/// `-` when unknown.
pub fn format_progress(progress: Option<f64>) -> String {
    match progress.filter(|p| p.is_finite()) {
        Some(p) => format!("{}%", (p.clamp(0.0, 1.0) * 100.0).floor() as u32),
        None => "-".to_owned(),
    }
}

/// The state column: the state, then in parentheses whether the baseline is partial, which
/// mode an operator forced, and the earlier version it inherits from (rollout inheritance).
fn state_cell(workload: &WorkloadView) -> String {
    let mut notes = Vec::new();
    if workload.partial {
        notes.push("partial".to_owned());
    }
    if let Some(mode) = workload.mode_forced {
        let mode = match mode {
            ForcedMode::Learn => "learn",
            ForcedMode::Detect => "detect",
        };
        notes.push(format!("forced {mode}"));
    }
    if let Some(from) = &workload.inheriting_from {
        notes.push(format!("inherits {from}"));
    }
    let state = workload.state.name();
    if notes.is_empty() {
        state.to_owned()
    } else {
        format!("{state} ({})", notes.join(", "))
    }
}

/// The `habitctl workloads` listing: one row per workload, sorted by key, then why any
/// unstable workload is unstable. HELD counts the items a rule flagged during learning that
/// wait for an operator (`habitctl held`) or to prove habitual.
pub fn workloads_table(workloads: &[WorkloadView]) -> String {
    if workloads.is_empty() {
        return "no workloads: habitd has not attributed any activity yet\n".to_owned();
    }
    let mut sorted: Vec<&WorkloadView> = workloads.iter().collect();
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    let mut table = Table::new(&[
        ("KEY", Align::Left),
        ("STATE", Align::Left),
        ("PROGRESS", Align::Right),
        ("ITEMS", Align::Right),
        ("HELD", Align::Right),
        ("SINCE NEW ITEM", Align::Right),
        ("ALERTS", Align::Right),
    ]);
    for w in &sorted {
        table.push(vec![
            w.key.to_string(),
            state_cell(w),
            format_progress(Some(w.learning.progress)),
            w.items.to_string(),
            w.held.to_string(),
            format_secs(w.learning.secs_since_new_item),
            w.alerts.to_string(),
        ]);
    }
    let mut out = table.render();
    let reasons: Vec<(&str, String)> = sorted
        .iter()
        .filter_map(|w| Some((w.key.as_str(), w.unstable_reason.clone()?)))
        .collect();
    if !reasons.is_empty() {
        out.push_str("\nunstable:\n");
        for (key, reason) in reasons {
            let _ = writeln!(out, "  {}: {}", printable(key), printable(&reason));
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use habit_profiles::api::LearningView;
    use habit_profiles::store::WorkloadState;
    use habit_profiles::workload::WorkloadKey;

    #[test]
    fn columns_align_and_lines_have_no_trailing_spaces() {
        let mut t = Table::new(&[("NAME", Align::Left), ("N", Align::Right)]);
        t.push(vec!["a".into(), "1".into()]);
        t.push(vec!["longer".into(), "1234".into()]);
        t.push(vec!["short".into()]);
        assert_eq!(
            t.render(),
            "NAME       N\n\
             a          1\n\
             longer  1234\n\
             short\n"
        );
        let mut t = Table::new(&[("A", Align::Left), ("B", Align::Left)]);
        t.push(vec!["x".into(), "".into(), "dropped".into()]);
        assert_eq!(t.render(), "A  B\nx\n");
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(printable("plain"), "plain");
        assert_eq!(printable("a\u{1b}[31mb\n"), "a\\u{1b}[31mb\\n");
        let mut t = Table::new(&[("K", Align::Left)]);
        t.push(vec!["x\ty".into()]);
        assert_eq!(t.render(), "K\nx\\ty\n");
    }

    #[test]
    fn durations() {
        assert_eq!(format_secs(None), "-");
        assert_eq!(format_secs(Some(-1.0)), "-");
        assert_eq!(format_secs(Some(f64::NAN)), "-");
        assert_eq!(format_secs(Some(0.4)), "0s");
        assert_eq!(format_secs(Some(59.9)), "59s");
        assert_eq!(format_secs(Some(187.0)), "3m07s");
        assert_eq!(format_secs(Some(7_500.0)), "2h05m");
        assert_eq!(
            format_secs(Some(3.0 * 86_400.0 + 4.0 * 3_600.0 + 9.0)),
            "3d04h"
        );
    }

    #[test]
    fn unix_times() {
        assert_eq!(format_unix_ms(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_unix_ms(1_700_000_000_999), "2023-11-14 22:13:20 UTC");
        assert_eq!(format_unix_ms(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(format_unix_ms(951_868_799_000), "2000-02-29 23:59:59 UTC");
        assert_eq!(format_unix_ms(4_107_542_400_000), "2100-03-01 00:00:00 UTC");
        // The largest u64 does not overflow.
        assert!(format_unix_ms(u64::MAX).ends_with(" UTC"));
    }

    #[test]
    fn progress() {
        assert_eq!(format_progress(None), "-");
        assert_eq!(format_progress(Some(0.0)), "0%");
        assert_eq!(format_progress(Some(0.425)), "42%");
        assert_eq!(format_progress(Some(0.999)), "99%");
        assert_eq!(format_progress(Some(1.0)), "100%");
        assert_eq!(format_progress(Some(7.0)), "100%");
        assert_eq!(format_progress(Some(f64::INFINITY)), "-");
    }

    fn workload(key: &str, state: WorkloadState) -> WorkloadView {
        WorkloadView {
            key: WorkloadKey::from_raw(key),
            state,
            partial: false,
            mode_forced: None,
            learning: LearningView::default(),
            items: 0,
            profile_sizes: Default::default(),
            alerts: 0,
            unstable_reason: None,
            baseline_created: None,
            held: 0,
            inheriting_from: None,
            inherited_from: Vec::new(),
        }
    }

    #[test]
    fn workloads_render_sorted_with_states_and_reasons() {
        let mut nginx = workload("docker.io/library/nginx:1.25", WorkloadState::Learning);
        nginx.inheriting_from = Some(WorkloadKey::from_raw("docker.io/library/nginx:1.24"));
        nginx.items = 42;
        nginx.held = 2;
        nginx.learning = LearningView {
            progress: 0.5,
            secs_since_new_item: Some(75.0),
            ..LearningView::default()
        };
        let mut host = workload("host", WorkloadState::Stable);
        host.partial = true;
        host.mode_forced = Some(ForcedMode::Detect);
        host.items = 7;
        host.alerts = 3;
        host.learning = LearningView {
            progress: 1.0,
            secs_since_new_item: None,
            ..LearningView::default()
        };
        let mut redis = workload("docker.io/library/redis:7", WorkloadState::Unstable);
        redis.unstable_reason = Some("the profile reached its limit of 8192 items".into());
        redis.items = 8192;
        let out = workloads_table(&[host, redis, nginx]);
        assert_eq!(
            out,
            "\
KEY                           STATE                                             PROGRESS  ITEMS  HELD  SINCE NEW ITEM  ALERTS
docker.io/library/nginx:1.25  learning (inherits docker.io/library/nginx:1.24)       50%     42     2           1m15s       0
docker.io/library/redis:7     unstable                                                0%   8192     0               -       0
host                          stable (partial, forced detect)                       100%      7     0               -       3

unstable:
  docker.io/library/redis:7: the profile reached its limit of 8192 items
"
        );
    }

    #[test]
    fn no_workloads_says_so() {
        assert!(workloads_table(&[]).starts_with("no workloads"));
    }
}
