//! Facts about the host the daemon reads and the small system interfaces it speaks: the
//! cgroup2 and mount tables, socket peers, systemd's notify socket. No other module of the
//! crate is used here.

pub(crate) mod cgroup_events;
pub(crate) mod cgroupfs;
pub(crate) mod mounts;
pub(crate) mod own_cgroup;
pub(crate) mod sockets;
pub(crate) mod systemd;
pub(crate) mod threads;
