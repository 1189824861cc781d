//! Offline work on baseline files: read and validate, merge, diff.
//!
//! Nothing here talks to habitd; it is the profiles library applied to files, with errors
//! that name the file so that an operator knows which of two inputs is wrong.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use habit_models::artifact::{MergeReport, load_models, merge_baselines};
use habit_profiles::baseline::{self, Baseline, BaselineDiff};
use habit_profiles::observation::Dimension;
use habit_profiles::workload::WorkloadKey;

use crate::table::{format_unix_ms, printable};

/// A baseline file read from disk: the parsed baseline and the bytes as they were.
#[derive(Debug, Clone)]
pub struct BaselineFile {
    /// The validated baseline.
    pub baseline: Baseline,
    /// The file's bytes, unchanged (sent as they are on import).
    pub bytes: Vec<u8>,
}

/// Reads and validates a baseline file. The error names the file, then gives the library's
/// reason (with line and column for a syntax error, the field for a content error).
pub fn read_baseline(path: &Path) -> Result<BaselineFile> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read baseline file {}", path.display()))?;
    let baseline = Baseline::from_json_slice(&bytes)
        .and_then(|b| load_models(&b).map(|_| b))
        .with_context(|| format!("{} is not a valid baseline", path.display()))?;
    Ok(BaselineFile { baseline, bytes })
}

/// Reads a baseline file for import under `key`: valid, and of that workload (habitd files a
/// baseline under the workload it names, so a mismatch is caught here, before the upload).
pub fn read_for_import(path: &Path, key: &WorkloadKey) -> Result<BaselineFile> {
    let file = read_baseline(path)?;
    if file.baseline.workload != *key {
        anyhow::bail!(
            "{} is the baseline of {}, not of {}: import it under its own key, or merge it \
             into a baseline of {} first",
            path.display(),
            printable(file.baseline.workload.as_str()),
            printable(key.as_str()),
            printable(key.as_str()),
        );
    }
    Ok(file)
}

/// Merges baseline files, items and models ([`merge_baselines`]); the report notes what
/// could not be merged soundly (a model dropped for lack of learning data).
pub fn merge_files(paths: &[PathBuf]) -> Result<(Baseline, MergeReport)> {
    let inputs: Vec<Baseline> = paths
        .iter()
        .map(|p| read_baseline(p).map(|f| f.baseline))
        .collect::<Result<_>>()?;
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    merge_baselines(&inputs).with_context(|| format!("cannot merge {}", names.join(" and ")))
}

/// Dimension names (or `all`) as given to `--fail-on-new`.
pub fn parse_dimensions(names: &[String]) -> Result<Vec<Dimension>> {
    let mut out = Vec::new();
    for name in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        if name == "all" {
            return Ok(Dimension::ALL.to_vec());
        }
        let dimension: Dimension = name.parse().with_context(|| {
            let all: Vec<&str> = Dimension::ALL.iter().map(|d| d.name()).collect();
            format!(
                "--fail-on-new: {name:?} is not a dimension ({} or all)",
                all.join(", ")
            )
        })?;
        out.push(dimension);
    }
    Ok(out)
}

/// The dimensions among `gate` in which the diff adds items.
pub fn new_in(diff: &BaselineDiff, gate: &[Dimension]) -> Vec<Dimension> {
    gate.iter()
        .copied()
        .filter(|d| diff.dimensions.get(d).is_some_and(|x| !x.added.is_empty()))
        .collect()
}

/// The diff as JSON (`--json`).
pub fn diff_json(
    old: &Path,
    new: &Path,
    result: &FileDiff,
    gate: Option<&[Dimension]>,
) -> serde_json::Value {
    let mut value = serde_json::json!({
        "old": old.display().to_string(),
        "new": new.display().to_string(),
        "workload": result.workload,
        "dimensions": result.diff.dimensions,
        "syscall_rates_added": result.diff.syscall_rates_added,
        "syscall_rates_removed": result.diff.syscall_rates_removed,
    });
    if let Some(gate) = gate {
        value["new_in"] = serde_json::json!(new_in(&result.diff, gate));
    }
    value
}

/// The diff of two baseline files, and its readable rendering.
#[derive(Debug, Clone)]
pub struct FileDiff {
    /// What changed, by the library's [`baseline::diff`].
    pub diff: BaselineDiff,
    /// The report to print.
    pub report: String,
    /// The newer file's workload.
    pub workload: String,
}

/// Diffs two baseline files: the items and syscalls `new` knows that `old` does not, and the
/// reverse. Counts are not compared (a diff answers "what behaviour changed").
pub fn diff_files(old: &Path, new: &Path) -> Result<FileDiff> {
    let before = read_baseline(old)?;
    let after = read_baseline(new)?;
    let diff = baseline::diff(&before.baseline, &after.baseline);
    let report = render_diff(
        &old.display().to_string(),
        &before.baseline,
        &new.display().to_string(),
        &after.baseline,
        &diff,
    );
    Ok(FileDiff {
        diff,
        report,
        workload: after.baseline.workload.to_string(),
    })
}

/// A diff as text, in the spirit of a unified diff: `---`/`+++` headers naming the files,
/// then per dimension the added (`+`) and removed (`-`) items, then syscall rate statistics.
/// An added item that a new version introduced over its predecessor (rollout inheritance)
/// names it: `+ /usr/bin/helper  (added by docker.io/shop/web:2.1 (sha256:0123456789ab))`.
pub fn render_diff(
    old_name: &str,
    old: &Baseline,
    new_name: &str,
    new: &Baseline,
    diff: &BaselineDiff,
) -> String {
    let mut out = String::new();
    let describe = |b: &Baseline| {
        format!(
            "{}, {} items, created {}{}",
            printable(b.workload.as_str()),
            b.items_total(),
            format_unix_ms(b.created),
            if b.partial { ", partial" } else { "" }
        )
    };
    // Writing to a String cannot fail.
    let _ = writeln!(out, "--- {} ({})", printable(old_name), describe(old));
    let _ = writeln!(out, "+++ {} ({})", printable(new_name), describe(new));
    if new
        .metadata
        .inherited_from
        .iter()
        .any(|k| k == old.workload.as_str())
    {
        // Rollout inheritance: the usual diff of a release.
        let _ = writeln!(
            out,
            "note: {} was built on the baseline of {} (rollout inheritance)",
            printable(new.workload.as_str()),
            printable(old.workload.as_str())
        );
    } else if old.workload != new.workload {
        let _ = writeln!(
            out,
            "note: the baselines describe different workloads ({} and {})",
            printable(old.workload.as_str()),
            printable(new.workload.as_str())
        );
    }
    if diff.is_empty() {
        out.push_str("no differences: both know the same items and syscalls\n");
        return out;
    }
    for (dimension, d) in &diff.dimensions {
        let _ = writeln!(
            out,
            "{dimension}: {} added, {} removed",
            d.added.len(),
            d.removed.len()
        );
        for item in &d.added {
            match d.introduced_by.get(item) {
                // Rollout inheritance: the version whose learning added it.
                Some(by) => {
                    let _ = writeln!(
                        out,
                        "  + {}  (added by {})",
                        printable(item),
                        printable(&by.to_string())
                    );
                }
                None => {
                    let _ = writeln!(out, "  + {}", printable(item));
                }
            }
        }
        for item in &d.removed {
            let _ = writeln!(out, "  - {}", printable(item));
        }
    }
    if !diff.syscall_rates_added.is_empty() || !diff.syscall_rates_removed.is_empty() {
        let _ = writeln!(
            out,
            "syscall rates: {} added, {} removed",
            diff.syscall_rates_added.len(),
            diff.syscall_rates_removed.len()
        );
        for name in &diff.syscall_rates_added {
            let _ = writeln!(out, "  + {}", printable(name));
        }
        for name in &diff.syscall_rates_removed {
            let _ = writeln!(out, "  - {}", printable(name));
        }
    }
    out
}

/// Writes `bytes` to `path`, or to standard output when there is none (ending the output in a
/// newline, and stopping quietly if the reader has gone). A file is written
/// whole to a temporary sibling first and renamed into place, so that an interrupted write
/// never leaves half a baseline behind.
pub fn write_output(path: Option<&Path>, bytes: &[u8]) -> Result<()> {
    use std::io::Write as _;
    let Some(path) = path else {
        let mut stdout = std::io::stdout().lock();
        let newline: &[u8] = if bytes.ends_with(b"\n") || bytes.is_empty() {
            b""
        } else {
            b"\n"
        };
        return match stdout
            .write_all(bytes)
            .and_then(|()| stdout.write_all(newline))
            .and_then(|()| stdout.flush())
        {
            // The reader went away (`habitctl … | head`): nothing more to say, not an error.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            result => result.context("cannot write to standard output"),
        };
    };
    let context = || format!("cannot write {}", path.display());
    // A device or a pipe (`-o /dev/stdout`) is written in place: it cannot be renamed over.
    let special = std::fs::metadata(path).is_ok_and(|m| !m.is_file());
    if special {
        return std::fs::write(path, bytes).with_context(context);
    }
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".habitctl-tmp");
    let temporary = std::path::PathBuf::from(temporary);
    std::fs::write(&temporary, bytes)
        .and_then(|()| std::fs::rename(&temporary, path))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&temporary);
        })
        .with_context(context)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::path::PathBuf;

    use habit_profiles::observation::{Dimension, FileMode, Observation};
    use habit_profiles::profile::{Profile, ProfileConfig, Provenance};

    use super::*;

    const MIN: u64 = 60_000;

    fn nginx() -> WorkloadKey {
        WorkloadKey::from_raw("docker.io/library/nginx:1.25")
    }

    /// A baseline learned on `node` from these executables (one a minute) and one file.
    fn learned(workload: WorkloadKey, node: &str, execs: &[&str], syscalls: &[&str]) -> Baseline {
        let mut p = Profile::new(workload, node, 0, ProfileConfig::default());
        let here = Provenance::new(node, Some("c1"));
        for (i, exe) in execs.iter().enumerate() {
            let _ = p.observe(&Observation::exec(exe), i as u64 * MIN, &here);
        }
        let _ = p.observe(
            &Observation::file("/etc/nginx/nginx.conf", FileMode::Read),
            MIN,
            &here,
        );
        let counts: Vec<(&str, u64)> = syscalls.iter().map(|s| (*s, 10)).collect();
        p.observe_syscall_counts(&counts, 60.0, MIN, &here).unwrap();
        Baseline::freeze(&p, 10 * MIN, false)
    }

    fn write(dir: &Path, name: &str, baseline: &Baseline) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, baseline.to_json_pretty().unwrap()).unwrap();
        path
    }

    #[test]
    fn reads_a_valid_file_and_keeps_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let b = learned(nginx(), "node-a", &["/usr/sbin/nginx"], &["read"]);
        let path = write(dir.path(), "a.json", &b);
        let file = read_baseline(&path).unwrap();
        assert_eq!(file.baseline, b);
        assert_eq!(file.bytes, std::fs::read(&path).unwrap());
    }

    #[test]
    fn malformed_file_error_names_file_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let json = learned(nginx(), "node-a", &["/usr/sbin/nginx"], &["read"])
            .to_json_pretty()
            .unwrap();
        let broken = json.replacen("\"partial\": false", "\"partial\": nope", 1);
        let line = json
            .lines()
            .position(|l| l.contains("\"partial\""))
            .unwrap()
            + 1;
        let path = dir.path().join("broken.json");
        std::fs::write(&path, broken).unwrap();
        let e = format!("{:#}", read_baseline(&path).unwrap_err());
        assert!(
            e.starts_with(&format!("{} is not a valid baseline: ", path.display())),
            "{e}"
        );
        assert!(
            e.contains(&format!("baseline file, line {line}, column ")),
            "{e}"
        );

        // Content errors name the field.
        let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
        v["dimensions"]["exec"]["items"]["/usr/sbin/nginx"]["count"] = 0.into();
        std::fs::write(&path, v.to_string()).unwrap();
        let e = format!("{:#}", read_baseline(&path).unwrap_err());
        assert!(e.contains("broken.json is not a valid baseline"), "{e}");
        assert!(
            e.contains(r#"dimensions.exec.items["/usr/sbin/nginx"].count"#),
            "{e}"
        );

        // Not a baseline at all; not there at all.
        std::fs::write(&path, "{\"hello\": 1}").unwrap();
        let e = format!("{:#}", read_baseline(&path).unwrap_err());
        assert!(e.contains("not a habitd baseline file"), "{e}");
        let missing = dir.path().join("missing.json");
        let e = format!("{:#}", read_baseline(&missing).unwrap_err());
        assert!(
            e.starts_with(&format!("cannot read baseline file {}", missing.display())),
            "{e}"
        );
    }

    #[test]
    fn import_checks_the_workload() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "a.json",
            &learned(nginx(), "node-a", &["/usr/sbin/nginx"], &["read"]),
        );
        read_for_import(&path, &nginx()).unwrap();
        let e = format!(
            "{:#}",
            read_for_import(&path, &WorkloadKey::host()).unwrap_err()
        );
        assert!(
            e.contains("is the baseline of docker.io/library/nginx:1.25, not of host"),
            "{e}"
        );
    }

    #[test]
    fn merge_unites_two_files() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(
            dir.path(),
            "a.json",
            &learned(nginx(), "node-a", &["/bin/a", "/bin/b"], &["read"]),
        );
        let b = write(
            dir.path(),
            "b.json",
            &learned(nginx(), "node-b", &["/bin/a", "/bin/c"], &["write"]),
        );
        let merged = merge_files(&[a.clone(), b.clone()]).unwrap().0;
        merged.validate().unwrap();
        let execs: Vec<&str> = merged.items(Dimension::Exec).map(|(k, _)| k).collect();
        assert_eq!(execs, ["/bin/a", "/bin/b", "/bin/c"]);
        assert_eq!(merged.item(Dimension::Exec, "/bin/a").unwrap().count, 2);
        assert_eq!(merged.node, "node-a,node-b");
        // The merged file reads back as a valid baseline.
        let out = dir.path().join("out.json");
        write_output(Some(&out), merged.to_json_pretty().unwrap().as_bytes()).unwrap();
        assert_eq!(read_baseline(&out).unwrap().baseline, merged);
        assert!(!dir.path().join("out.json.habitctl-tmp").exists());
    }

    #[test]
    fn merge_of_different_workloads_names_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(
            dir.path(),
            "a.json",
            &learned(nginx(), "node-a", &["/bin/a"], &["read"]),
        );
        let b = write(
            dir.path(),
            "b.json",
            &learned(WorkloadKey::host(), "node-a", &["/bin/a"], &["read"]),
        );
        let e = format!("{:#}", merge_files(&[a.clone(), b.clone()]).unwrap_err());
        assert!(
            e.starts_with(&format!(
                "cannot merge {} and {}: ",
                a.display(),
                b.display()
            )),
            "{e}"
        );
        assert!(e.contains("\"host\""), "{e}");
        // An invalid input is named before any merging.
        std::fs::write(&b, "[]").unwrap();
        let e = format!("{:#}", merge_files(&[a.clone(), b.clone()]).unwrap_err());
        assert!(e.contains("b.json is not a valid baseline"), "{e}");
    }

    #[test]
    fn diff_reports_added_and_removed_items_and_syscalls() {
        let dir = tempfile::tempdir().unwrap();
        let old = write(
            dir.path(),
            "old.json",
            &learned(nginx(), "node-a", &["/bin/a", "/bin/b"], &["read"]),
        );
        let new = write(
            dir.path(),
            "new.json",
            &learned(
                nginx(),
                "node-a",
                &["/bin/a", "/bin/c"],
                &["read", "ptrace"],
            ),
        );
        let d = diff_files(&old, &new).unwrap();
        assert!(!d.diff.is_empty());
        let body: Vec<&str> = d.report.lines().skip(2).collect();
        assert_eq!(
            body,
            [
                "exec: 1 added, 1 removed",
                "  + /bin/c",
                "  - /bin/b",
                "syscall: 1 added, 0 removed",
                "  + ptrace",
                "syscall rates: 1 added, 0 removed",
                "  + ptrace",
            ]
        );
        assert!(
            d.report.starts_with(&format!(
                "--- {} (docker.io/library/nginx:1.25, 4 items, created 1970-01-01 00:10:00 UTC)\n+++ {} (",
                old.display(),
                new.display()
            )),
            "{}",
            d.report
        );

        let same = diff_files(&old, &old).unwrap();
        assert!(same.diff.is_empty());
        assert!(
            same.report
                .ends_with("no differences: both know the same items and syscalls\n")
        );
    }

    #[test]
    fn diff_notes_different_workloads() {
        let dir = tempfile::tempdir().unwrap();
        let old = write(
            dir.path(),
            "old.json",
            &learned(nginx(), "n", &["/bin/a"], &["read"]),
        );
        let new = write(
            dir.path(),
            "new.json",
            &learned(WorkloadKey::host(), "n", &["/bin/a"], &["read"]),
        );
        let d = diff_files(&old, &new).unwrap();
        assert!(d.diff.is_empty());
        assert!(
            d.report.contains(
                "note: the baselines describe different workloads \
                 (docker.io/library/nginx:1.25 and host)"
            ),
            "{}",
            d.report
        );
    }
}
