//! Static rules in the daemon: the built-in rules ([`builtin`]), loading them with the
//! operator's files ([`load_rules`]), and their fusion with learned baselines ([`fusion`]).

pub mod builtin;
pub mod fusion;

use crate::config::Config;

/// The built-in rules (unless disabled) and the configured rules files. Problems are logged
/// with file, line and rule; what loads is used.
pub fn load_rules(config: &Config) -> habit_models::rules::RuleSet {
    let mut loader = habit_models::rules::RuleLoader::new();
    if config.builtin_rules {
        builtin::add_default_rules(&mut loader);
    }
    for path in &config.rules {
        loader.add_file(path);
    }
    let (rules, report) = loader.finish();
    for problem in report.problems() {
        tracing::warn!(message = "Rules problem.", %problem);
    }
    tracing::info!(message = "Rules loaded.", summary = %report.summary());
    rules
}
