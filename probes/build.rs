//! Builds `bpf/habit.bpf.c` with clang into OUT_DIR/habit.bpf.o.
//!
//! When clang is missing the checked-in `bpf/prebuilt/habit.bpf.o` is used instead, so the crate
//! builds anywhere; CI (`.ci/check-prebuilt`) rebuilds it and fails if it differs from the
//! sources. Set HABIT_BPF_PREBUILT=1 to force the prebuilt object.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The clang flags, shared with CI (`.ci/check-prebuilt`) and `bpf/refresh-prebuilt` so that all
/// of them produce the same object: one flag per line, `#` comments and blank lines ignored.
const CLANG_ARGS_FILE: &str = include_str!("bpf/clang-args");

/// The source compiled from `bpf/`; `-c SOURCE -o OUT` follow the flags of `bpf/clang-args`.
const SOURCE: &str = "habit.bpf.c";

/// The exact clang flags (without `-c SOURCE -o OUT`).
fn clang_args() -> Vec<&'static str> {
    CLANG_ARGS_FILE
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let bpf_dir = manifest.join("bpf");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default()).join("habit.bpf.o");
    println!("cargo:rerun-if-changed=bpf");
    println!("cargo:rerun-if-env-changed=HABIT_BPF_PREBUILT");

    let force_prebuilt = std::env::var_os("HABIT_BPF_PREBUILT").is_some();
    if !force_prebuilt && compile(&bpf_dir, &out) {
        return;
    }
    let prebuilt = bpf_dir.join("prebuilt/habit.bpf.o");
    if let Err(e) = std::fs::copy(&prebuilt, &out) {
        panic!(
            "clang is not available and {} cannot be copied: {e}",
            prebuilt.display()
        );
    }
    println!(
        "cargo:warning=using the prebuilt probes object (clang not found or HABIT_BPF_PREBUILT set)"
    );
}

/// Compiles the probes; false when clang is not installed (a compile error is fatal).
fn compile(bpf_dir: &Path, out: &Path) -> bool {
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    let status = Command::new(&clang)
        .current_dir(bpf_dir)
        .args(clang_args())
        .args(["-c", SOURCE, "-o"])
        .arg(out)
        .status();
    match status {
        Ok(s) if s.success() => true,
        Ok(s) => panic!("{clang} failed to compile the probes ({s}); see the errors above"),
        Err(_) => false,
    }
}
