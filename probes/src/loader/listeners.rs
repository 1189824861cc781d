//! Who listens on which (netns, port): the `habit_listeners` map.
//!
//! The kernel records a listener when its socket enters LISTEN, in the listener's process
//! context, so that a passive open (completed later in softirq context, with no useful current
//! task) can be attributed to it (probes/bpf/net.h). Listeners that started before habitd were
//! never seen doing so: user space seeds them from /proc at start-up, without overwriting what the
//! kernel recorded itself.

use aya::Ebpf;
use aya::maps::{HashMap, MapData, MapError};

use super::{ProbeError, map_op, take_typed};
use crate::abi;

/// The listener map's handle.
pub(super) struct Listeners {
    map: HashMap<MapData, abi::ListenerKey, abi::Hdr>,
}

impl Listeners {
    pub(super) fn new(ebpf: &mut Ebpf) -> Result<Self, ProbeError> {
        Ok(Self {
            map: take_typed(ebpf, "habit_listeners", HashMap::try_from)?,
        })
    }

    /// Records `owner` as the listener of `key` unless the kernel already has one.
    pub(super) fn seed(
        &mut self,
        key: abi::ListenerKey,
        owner: abi::Hdr,
    ) -> Result<(), ProbeError> {
        match self.map.insert(key, owner, 1) {
            // BPF_NOEXIST (1): never overwrite what the kernel saw.
            Ok(()) => Ok(()),
            Err(MapError::SyscallError(ref s))
                if s.io_error.raw_os_error() == Some(libc::EEXIST) =>
            {
                Ok(())
            }
            Err(source) => Err(map_op("habit_listeners")(source)),
        }
    }
}
