//! Optional kernel features, detected at start-up.
//!
//! habitd needs only BTF, `tp_btf` programs, ring buffers and task storage. fentry/fexit and
//! BPF-LSM programs would be cheaper or stronger hooks, but kernel lockdown forbids them on some
//! hosts (these machines: `lockdown=integrity` makes them fail with EPERM) and kprobes may not
//! be built in. We detect them once and log what was found; the probes do not depend on them.

use std::fs;

/// What the running kernel allows beyond the required minimum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// Kernel lockdown mode (`none`, `integrity`, `confidentiality`).
    pub lockdown: String,
    /// fentry/fexit attachable (no lockdown forbidding BPF trampolines to kernel functions).
    pub fentry: bool,
    /// BPF LSM enabled (`bpf` in /sys/kernel/security/lsm) and not locked down.
    pub lsm: bool,
    /// kprobes registered by the kernel (tracefs or debugfs exposes kprobe_events).
    pub kprobes: bool,
    /// tracefs is mounted (not needed by habitd; reported for operators).
    pub tracefs: bool,
}

impl Capabilities {
    pub fn detect() -> Self {
        let lockdown = fs::read_to_string("/sys/kernel/security/lockdown")
            .ok()
            .and_then(|s| selected_lockdown(&s))
            .unwrap_or_else(|| "none".to_string());
        let locked = lockdown != "none";
        let lsm_list = fs::read_to_string("/sys/kernel/security/lsm").unwrap_or_default();
        let tracefs = std::path::Path::new("/sys/kernel/tracing/events").exists();
        Self {
            fentry: !locked,
            lsm: !locked && lsm_list.split(',').any(|l| l.trim() == "bpf"),
            kprobes: std::path::Path::new("/sys/kernel/tracing/kprobe_events").exists()
                || std::path::Path::new("/sys/kernel/debug/tracing/kprobe_events").exists()
                || fs::read_to_string("/proc/kallsyms")
                    .map(|k| k.contains(" register_kprobe\n"))
                    .unwrap_or(false),
            tracefs,
            lockdown,
        }
    }
}

/// Parses `none [integrity] confidentiality` into the bracketed mode.
fn selected_lockdown(s: &str) -> Option<String> {
    s.split_whitespace()
        .find(|w| w.starts_with('['))
        .map(|w| w.trim_matches(|c| c == '[' || c == ']').to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_lockdown() {
        assert_eq!(
            super::selected_lockdown("none [integrity] confidentiality\n").as_deref(),
            Some("integrity")
        );
        assert_eq!(super::selected_lockdown(""), None);
    }
}
