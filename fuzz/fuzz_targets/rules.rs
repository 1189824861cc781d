//! Rules files and conditions: `--rules FILE` and `habitctl rules check` read files operators
//! (or an attacker with write access to a ConfigMap) wrote. Whatever the text, loading returns
//! rules and a report, never a panic; the rules that load evaluate and render on an event.
#![no_main]

use std::sync::OnceLock;

use habit_models::rules::{MapEvent, RuleSet, condition};
use libfuzzer_sys::fuzz_target;

/// One event with the fields Falco's rules read most, built once.
fn event() -> &'static MapEvent {
    static EVENT: OnceLock<MapEvent> = OnceLock::new();
    EVENT.get_or_init(|| {
        MapEvent::new()
            .with("evt.type", "execve")
            .with("container.id", "3ad7c1e2b9f0")
            .with("proc.name", "bash")
            .with("proc.exe", "/bin/bash")
            .with("proc.cmdline", "bash -i")
            .with("proc.pname", "sshd")
            .with("proc.pid", 4242i64)
            .with("user.uid", 0i64)
            .with("user.name", "root")
            .with("fd.name", "/etc/shadow")
            .with("fd.sport", 443u16)
            .with("proc.aname", vec!["sshd", "systemd"])
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The condition language alone (fast path to the parser's corners)...
    let _ = condition::parse(text);
    // ... and the whole loader: YAML, lists, macros, append/override, exceptions, compile.
    let (rules, report) = RuleSet::load_str("fuzz.yaml", text);
    let _ = report.to_string();
    let mut hits = Vec::new();
    rules.matching(event(), &mut hits);
    for rule in rules.rules() {
        let _ = rule.render_output(event());
        let _ = rule.output_fields(event());
    }
});
