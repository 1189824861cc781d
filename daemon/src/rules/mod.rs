//! Static rules in the daemon: the built-in rules (`habit_models::rules::DEFAULT_RULES`, shared
//! with `habitctl rules check`), loading them with the operator's files ([`load_rules`]), and
//! their fusion with learned baselines ([`fusion`]).

pub mod fusion;

use crate::config::Config;

/// The built-in rules (unless disabled) and the configured rules files, loaded as
/// `habitctl rules check` loads them. Problems are logged with file, line and rule; what loads
/// is used.
pub fn load_rules(config: &Config) -> habit_models::rules::RuleSet {
    let (rules, report) =
        habit_models::rules::load_with_builtin(config.builtin_rules, &config.rules);
    for problem in report.problems() {
        tracing::warn!(message = "Rules problem.", %problem);
    }
    tracing::info!(message = "Rules loaded.", summary = %report.summary());
    rules
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use crate::falco::fields::SUPPLIED_FIELDS;
    use crate::falco::fixture::Fixture;

    /// The event types the daemon emits: those of the fixture's one event of every kind.
    fn supplied_event_types() -> BTreeSet<&'static str> {
        let mut types = BTreeSet::new();
        Fixture::new().each(|event, _| {
            types.insert(event.body.evt_type());
        });
        types
    }

    #[test]
    fn rules_use_only_fields_and_event_types_the_daemon_supplies() {
        let supplied_event_types = supplied_event_types();
        let (set, report) = habit_models::rules::default_rules();
        assert!(report.problems().is_empty(), "{report}");
        for rule in set.rules() {
            for field in rule.condition_fields() {
                let name = field.to_string();
                assert!(
                    SUPPLIED_FIELDS.contains(&name.as_str()),
                    "rule '{}' reads '{name}', which habitd does not supply",
                    rule.name()
                );
            }
            for (name, _) in rule.output().fields() {
                assert!(
                    SUPPLIED_FIELDS.contains(&name),
                    "rule '{}' prints '{name}', which habitd does not supply",
                    rule.name()
                );
            }
            let types = rule
                .event_types()
                .unwrap_or_else(|| panic!("rule '{}' does not restrict evt.type", rule.name()));
            assert!(
                types
                    .iter()
                    .any(|t| supplied_event_types.contains(t.as_ref())),
                "rule '{}' takes {types:?}, none of which habitd emits",
                rule.name()
            );
        }
    }
}
