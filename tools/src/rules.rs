//! `habitctl rules check FILE...`: load rules files exactly as habitd does and say what does
//! not load, so that a rules change can be checked (in CI, before a rollout) without a daemon.

use std::path::PathBuf;

use anyhow::{Result, bail};
use habit_models::rules::RuleSet;

/// Loads `files` together (in order, as `habitd run --rules` would), prints every problem as
/// `file:line: severity: kind 'name': reason` and the summary line `loaded N of M rules`.
///
/// Returns whether everything loaded: no error and no rule skipped (warnings allowed). An
/// unreadable file is an error of the command itself (after the report is printed), since the
/// report then does not cover what the user asked about.
pub fn check(files: &[PathBuf]) -> Result<bool> {
    let (_, report) = RuleSet::load_files(files);
    crate::offline::write_output(None, report.to_string().as_bytes())?;
    if let Some(path) = report.unreadable_files().first() {
        bail!("cannot read the rules file {}", path.display());
    }
    Ok(report.is_clean() && report.rules_skipped() == 0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn file(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn check_tells_clean_from_skipped_from_unreadable() {
        let dir = tempfile::tempdir().unwrap();
        let good = file(
            &dir,
            "good.yaml",
            "- rule: R\n  desc: d\n  condition: evt.type = execve\n  output: o\n  priority: INFO\n",
        );
        let bad = file(
            &dir,
            "bad.yaml",
            "- rule: B\n  desc: d\n  condition: evt.type = execve and proc.nope = 1\n  output: o\n  priority: INFO\n",
        );
        assert!(check(std::slice::from_ref(&good)).unwrap());
        assert!(!check(&[good.clone(), bad]).unwrap());
        let missing = dir.path().join("missing.yaml");
        let error = check(&[good, missing]).unwrap_err();
        assert!(
            error.to_string().contains("cannot read the rules file"),
            "{error}"
        );
    }
}
