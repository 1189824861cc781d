//! habitd's own default rules (`models/rules/habitd_rules.yaml`), built into the binaries that
//! load rules: `habitd run` and `habitctl rules check`, so that both load them the same way.
//!
//! The file is Falco's format and only uses fields the habitd probes supply (the rules' tests
//! are in `tests_builtin`; the daemon checks the fields it supplies). Load it before the
//! operator's files so that those can append to or override its lists, macros and rules:
//! [`load_with_builtin`] does exactly what habitd does, [`add_default_rules`] adds the file to
//! a [`RuleLoader`].
//!
//! Two tags carry meaning for the daemon's fusion of rule hits with baselines:
//! - [`NEVER_LEARN_TAG`]: a hit is never learned into a baseline, however habitual it looks;
//! - [`ALWAYS_TAG`]: a hit is never suppressed by a baseline.

use std::path::Path;

use super::{LoadReport, RuleLoader, RuleSet};

/// Rules that a baseline never silences.
pub const ALWAYS_TAG: &str = "habitd.always";
/// Rules whose hits are never learned by themselves.
pub const NEVER_LEARN_TAG: &str = "habitd.never_learn";

/// The name the built-in file has in load reports and rule locations.
pub const DEFAULT_RULES_NAME: &str = "habitd_rules.yaml";

/// The text of the default rules file.
pub const DEFAULT_RULES: &str = include_str!("../../rules/habitd_rules.yaml");

/// Loads the default rules alone.
pub fn default_rules() -> (RuleSet, LoadReport) {
    RuleSet::load_str(DEFAULT_RULES_NAME, DEFAULT_RULES)
}

/// Adds the default rules to a loader; add the operator's files after them.
pub fn add_default_rules(loader: &mut RuleLoader) {
    loader.add_str(DEFAULT_RULES_NAME, DEFAULT_RULES);
}

/// Loads rules as habitd does: the built-in rules first when `builtin` (habitd's
/// `builtin_rules`, on by default), then `files` in order, each of which may append to or
/// override what came before. Never fails: what could not be loaded is in the report.
pub fn load_with_builtin<P: AsRef<Path>>(builtin: bool, files: &[P]) -> (RuleSet, LoadReport) {
    let mut loader = RuleLoader::new();
    if builtin {
        add_default_rules(&mut loader);
    }
    for path in files {
        loader.add_file(path.as_ref());
    }
    loader.finish()
}
