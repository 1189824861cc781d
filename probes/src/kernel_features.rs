//! Optional kernel features (program types beyond the required minimum), detected at start-up
//! by trying them.
//!
//! Not Linux capabilities (`CAP_*`): elsewhere in habitd "capabilities" means those (a process's
//! effective and permitted sets, `capset` events); this module only says which BPF hook types
//! this kernel lets us use.
//!
//! habitd needs only BTF, `tp_btf` programs, ring buffers and task storage. fentry/fexit and
//! BPF-LSM programs would be cheaper or stronger hooks, but kernel lockdown or the kernel's
//! configuration forbid them on some hosts (DESIGN.md: EPERM under `lockdown=integrity`), and
//! kprobes may not be built in. Rather than guess from sysfs, the loader attaches an empty
//! program of each optional type once and reports what worked; the probes never depend on them.

use std::fs;

use aya::programs::{FEntry, Lsm};
use aya::{Btf, Ebpf};

/// What the running kernel allows beyond the required minimum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelFeatures {
    /// Kernel lockdown mode (`none`, `integrity`, `confidentiality`), or `unknown` when
    /// securityfs is not mounted (the kernel may still be locked down: the mode cannot be read).
    pub lockdown: String,
    /// An fentry program loaded and attached (or why not).
    pub fentry: Result<(), String>,
    /// A BPF-LSM program loaded and attached (or why not).
    pub lsm: Result<(), String>,
    /// kprobes are available (the kernel exports `register_kprobe`).
    pub kprobes: bool,
    /// tracefs is mounted (not needed by habitd; reported for operators).
    pub tracefs: bool,
}

impl KernelFeatures {
    /// Tries the optional program types in `ebpf` (then unloads them) and reads sysfs.
    pub fn detect(ebpf: &mut Ebpf, btf: &Btf) -> Self {
        let lockdown = match fs::read_to_string("/sys/kernel/security/lockdown") {
            Ok(s) => selected_lockdown(&s).unwrap_or_else(|| "none".to_string()),
            // securityfs is there but has no lockdown file: no lockdown LSM in this kernel.
            Err(_) if securityfs_mounted() => "none".to_string(),
            Err(_) => "unknown".to_string(),
        };
        Self {
            lockdown,
            fentry: try_fentry(ebpf, btf),
            lsm: try_lsm(ebpf, btf),
            kprobes: fs::read_to_string("/proc/kallsyms")
                .map(|k| k.contains(" register_kprobe\n"))
                .unwrap_or(false),
            tracefs: std::path::Path::new("/sys/kernel/tracing/events").exists(),
        }
    }

    /// Nothing probed (the benchmark's empty-program mode attaches nothing optional).
    pub fn not_probed() -> Self {
        Self {
            lockdown: String::new(),
            fentry: Err("not probed".into()),
            lsm: Err("not probed".into()),
            kprobes: false,
            tracefs: false,
        }
    }

    /// A one-line summary for logs and /healthz.
    pub fn describe(r: &Result<(), String>) -> String {
        match r {
            Ok(()) => "available".into(),
            Err(e) => format!("unavailable: {e}"),
        }
    }
}

fn try_fentry(ebpf: &mut Ebpf, btf: &Btf) -> Result<(), String> {
    let program: &mut FEntry = ebpf
        .program_mut("habit_probe_fentry")
        .ok_or("probe program missing")?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| e.to_string())?;
    program.load("do_exit", btf).map_err(|e| e.to_string())?;
    let attached = program.attach().map(drop).map_err(|e| e.to_string());
    let _ = program.unload();
    attached
}

fn try_lsm(ebpf: &mut Ebpf, btf: &Btf) -> Result<(), String> {
    // Without securityfs the active LSM list cannot be read: the attach below decides.
    if let Ok(lsms) = fs::read_to_string("/sys/kernel/security/lsm")
        && !lsms.split(',').any(|l| l.trim() == "bpf")
    {
        return Err(format!(
            "\"bpf\" is not in the active LSM list ({})",
            lsms.trim()
        ));
    }
    let program: &mut Lsm = ebpf
        .program_mut("habit_probe_lsm")
        .ok_or("probe program missing")?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| e.to_string())?;
    program
        .load("bprm_check_security", btf)
        .map_err(|e| e.to_string())?;
    let attached = program.attach().map(drop).map_err(|e| e.to_string());
    let _ = program.unload();
    attached
}

/// Whether securityfs (where the lockdown mode and the LSM list are read) is mounted.
fn securityfs_mounted() -> bool {
    fs::read_to_string("/proc/self/mounts").is_ok_and(|m| {
        m.lines()
            .any(|l| l.split_whitespace().nth(2) == Some("securityfs"))
    })
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
