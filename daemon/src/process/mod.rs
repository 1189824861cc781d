//! What habitd knows about the node's processes: the process table that exec/fork/exit events
//! keep current ([`table`]), the `/proc` scan that seeds it with processes older than habitd
//! ([`procfs`]), which processes are the container runtime's own work ([`runtime`]), and the
//! listening sockets found there ([`listeners`]), so that a server started before habitd still
//! has its accepted connections attributed.

pub mod listeners;
pub mod paths;
pub mod procfs;
pub mod runtime;
pub mod table;
