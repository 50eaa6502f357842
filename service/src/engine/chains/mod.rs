//! Chains: VMSnap's own rules about backup folders — how a period folder is named, when a
//! backup continues a chain or starts a new one, which disks a chain can cover, what a chain
//! on disk holds and whether it agrees with libvirt's checkpoints.

pub mod catalog;
pub mod consistency;
pub mod eligibility;
pub mod period;
pub mod plan;
