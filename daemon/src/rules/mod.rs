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
    /// The fields the daemon supplies (`crate::falco::fields`); `evt.arg.*` by name.
    // TODO(issue 9): take this list from `crate::falco` once it exposes the supplied fields.
    const SUPPLIED_FIELDS: &[&str] = &[
        "evt.type",
        "evt.dir",
        "evt.arg.flags",
        "evt.arg.mode",
        "evt.arg.request",
        "evt.arg.domain",
        "evt.arg.name",
        "evt.arg.dir",
        "evt.is_open_write",
        "evt.is_open_read",
        "proc.name",
        "proc.exe",
        "proc.exepath",
        "proc.cmdline",
        "proc.args",
        "proc.pid",
        "proc.ppid",
        "proc.pname",
        "proc.pexe",
        "proc.pexepath",
        "proc.pcmdline",
        "proc.aname",
        "proc.is_exe_upper_layer",
        "proc.is_exe_from_memfd",
        "user.uid",
        "user.name",
        "fd.name",
        "fd.directory",
        "fd.filename",
        "fd.typechar",
        "fd.sip",
        "fd.sport",
        "fd.cip",
        "fd.cport",
        "fd.rip",
        "fd.rport",
        "fd.lip",
        "fd.lport",
        "fd.l4proto",
        "container.id",
        "container.name",
        "container.image.repository",
        "container.image.tag",
        "k8s.ns.name",
        "k8s.pod.name",
    ];

    /// The event types the daemon emits.
    const SUPPLIED_EVENT_TYPES: &[&str] = &[
        "execve",
        "openat",
        "connect",
        "accept",
        "bind",
        "listen",
        "chmod",
        "fchmod",
        "fchmodat",
        "setuid",
        "setgid",
        "capset",
        "ptrace",
        "mount",
        "umount",
        "unshare",
        "setns",
        "init_module",
        "finit_module",
        "memfd_create",
        "bpf",
        "socket",
        "clone",
        "procexit",
    ];

    #[test]
    fn rules_use_only_fields_and_event_types_the_daemon_supplies() {
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
                    .any(|t| SUPPLIED_EVENT_TYPES.contains(&t.as_ref())),
                "rule '{}' takes {types:?}, none of which habitd emits",
                rule.name()
            );
        }
    }
}
