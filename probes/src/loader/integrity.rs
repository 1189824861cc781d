//! Tamper evidence: whether habitd's programs are still attached and the maps only its user
//! space writes still hold what it wrote.
//!
//! Someone with `CAP_BPF`/`CAP_SYS_ADMIN` on the node can detach a program (`bpftool link
//! detach`, where the link type allows it) or rewrite a map (`bpftool map update`): the probes
//! would then go blind or be steered (a cgroup's sequence mode switched off, the open
//! de-duplication interval moved) without a single event saying so. What cannot be rewritten
//! is not checked: the globals habitd's kernel side reads (its own pid, the attach time) are
//! in `.rodata`, which aya freezes at load, so no one can write them afterwards.
//!
//! Checked on each [`Probes::check_integrity`](super::Probes::check_integrity):
//! - every attached program still has a link in the kernel's link table (`BPF_LINK_GET_NEXT_ID`
//!   and the link's info: its program id);
//! - `habit_epoch` holds the last interval habitd wrote;
//! - every `habit_seq_slots` entry habitd wrote has the mode and workload id it wrote (the
//!   kernel itself only counts down `samples`).
//!
//! A map found rewritten is put back; a detached program cannot be re-attached by habitd
//! without losing its state, so it stays reported until habitd restarts.

use std::collections::HashSet;

/// Something about the probes that habitd did not do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tamper {
    /// A program of habitd's is no longer attached to its tracepoint.
    ProgramDetached {
        program: &'static str,
        tracepoint: &'static str,
    },
    /// A map only habitd's user space writes holds a value habitd did not write.
    MapWritten {
        map: &'static str,
        /// Which entry (`index 0`, `slot 3`).
        entry: String,
        expected: String,
        found: String,
    },
}

impl Tamper {
    /// A short, low-cardinality name of the kind of tampering (metric label).
    pub fn kind(&self) -> &'static str {
        match self {
            Tamper::ProgramDetached { .. } => "program_detached",
            Tamper::MapWritten { .. } => "map_written",
        }
    }

    /// The program or map tampered with.
    pub fn object(&self) -> &'static str {
        match self {
            Tamper::ProgramDetached { program, .. } => program,
            Tamper::MapWritten { map, .. } => map,
        }
    }
}

impl std::fmt::Display for Tamper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tamper::ProgramDetached {
                program,
                tracepoint,
            } => write!(
                f,
                "program {program} is no longer attached to tracepoint {tracepoint}"
            ),
            Tamper::MapWritten {
                map,
                entry,
                expected,
                found,
            } => write!(
                f,
                "map {map} was written by another process: {entry} holds {found}, habitd wrote {expected}"
            ),
        }
    }
}

/// The ids of the programs habitd attached, to find their links.
#[derive(Debug, Default)]
pub(super) struct AttachedPrograms {
    /// (program, tracepoint, kernel program id).
    programs: Vec<(&'static str, &'static str, u32)>,
}

impl AttachedPrograms {
    pub(super) fn add(&mut self, program: &'static str, tracepoint: &'static str, id: u32) {
        self.programs.push((program, tracepoint, id));
    }

    /// Adds a program only if the kernel's link table shows it now: a tracepoint attached
    /// through a perf event without a BPF link (older kernels) has no link to check, and
    /// watching it would claim it detached. Returns whether it is watched.
    pub(super) fn add_if_linked(
        &mut self,
        program: &'static str,
        tracepoint: &'static str,
        id: u32,
    ) -> bool {
        let linked = aya::programs::loaded_links()
            .flatten()
            .any(|link| link.program_id() == id);
        if linked {
            self.add(program, tracepoint, id);
        }
        linked
    }

    /// The programs no link of the kernel's attaches any more. `None` when the kernel's link
    /// table cannot be listed at all (then nothing is claimed either way).
    pub(super) fn detached(&self) -> Option<Vec<Tamper>> {
        let mut linked = HashSet::new();
        let mut listed = false;
        // A link can go away between its id and its info: skip it.
        for link in aya::programs::loaded_links().flatten() {
            listed = true;
            linked.insert(link.program_id());
        }
        if !listed && !self.programs.is_empty() {
            return None;
        }
        Some(
            self.programs
                .iter()
                .filter(|(_, _, id)| !linked.contains(id))
                .map(|&(program, tracepoint, _)| Tamper::ProgramDetached {
                    program,
                    tracepoint,
                })
                .collect(),
        )
    }
}
