//! `habitctl rules check FILE...`: load rules files exactly as habitd does (its built-in rules
//! first, unless `--no-builtin`) and say what does not load, so that a rules change can be
//! checked (in CI, before a rollout) without a daemon.

use std::path::PathBuf;

use anyhow::{Result, bail};
use habit_models::rules::load_with_builtin;

/// Loads `files` together, after habitd's built-in rules when `builtin` (in order, with the
/// same function as `habitd run --rules`), prints every problem as
/// `file:line: severity: kind 'name': reason` and the summary line `loaded N of M rules`
/// (built-in rules included).
///
/// Returns whether everything loaded: no error and no rule skipped (warnings allowed). An
/// unreadable file is an error of the command itself (after the report is printed), since the
/// report then does not cover what the user asked about.
pub fn check(files: &[PathBuf], builtin: bool) -> Result<bool> {
    let (_, report) = load_with_builtin(builtin, files);
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
        for builtin in [true, false] {
            assert!(check(std::slice::from_ref(&good), builtin).unwrap());
            assert!(!check(&[good.clone(), bad.clone()], builtin).unwrap());
        }
        let missing = dir.path().join("missing.yaml");
        let error = check(&[good, missing], true).unwrap_err();
        assert!(
            error.to_string().contains("cannot read the rules file"),
            "{error}"
        );
    }

    /// Appends to built-in lists and a macro, and overrides a built-in rule: what habitd runs.
    const EXTENDS_BUILTIN: &str = r#"
- list: shell_binaries
  items: [fish]
  override:
    items: append
- list: user_known_shell_spawn_images
  items: [docker.io/library/nginx]
  override:
    items: append
- macro: user_known_shell_spawn_activities
  condition: or proc.pname = healthcheck
  override:
    condition: append
- rule: Shell spawned in container
  priority: WARNING
  override:
    priority: replace
- rule: My shell rule
  desc: A shell, in the built-in sense, from a web server.
  condition: spawned_process and container and shell_procs and proc.pname = nginx
  output: shell from nginx (command=%proc.cmdline)
  priority: WARNING
"#;

    #[test]
    fn user_files_are_checked_after_the_built_in_rules() {
        let dir = tempfile::tempdir().unwrap();
        let local = file(&dir, "local.yaml", EXTENDS_BUILTIN);
        assert!(check(std::slice::from_ref(&local), true).unwrap());
        // Without the built-in rules (`--no-builtin`), there is nothing to extend.
        assert!(!check(std::slice::from_ref(&local), false).unwrap());

        // A macro the built-in rules do not define is an error either way.
        let typo = file(
            &dir,
            "typo.yaml",
            "- rule: T\n  desc: d\n  condition: spawned_process and shell_procz\n  output: o\n  \
             priority: INFO\n",
        );
        assert!(!check(std::slice::from_ref(&typo), true).unwrap());
        assert!(!check(&[local, typo], true).unwrap());
    }
}
