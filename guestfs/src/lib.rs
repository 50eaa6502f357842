//! Guest file systems, read from a disk image without privileges.
//!
//! A guest's file system is data the guest wrote, and the guest may be hostile. So vmsnapd
//! never parses it: it starts the `vmsnap-guestfs` helper (this crate's binary) as an
//! unprivileged user, hands it read-only descriptors of one disk's data files, and asks it
//! questions over a pipe ([`protocol`]). The helper reads the point in place through the
//! chain's index ([`stream`], [`point`]), checks chains for verify ([`check`]), serves a point
//! over NBD ([`nbd`]), finds the volumes ([`volumes`],
//! [`probe`]), reads ext2/3/4 and FAT with pure-Rust, read-only drivers ([`tree`]), and
//! confines itself first ([`sandbox`]). Nothing here writes anything anywhere.

pub mod check;
pub mod image;
pub mod nbd;
pub mod point;
pub mod probe;
pub mod protocol;
pub mod sandbox;
pub mod serve;
pub mod stream;
pub mod tree;
pub mod volumes;

/// The longest chain (data files of one disk) the helper reads; vmsnapd raises the reader's
/// descriptor limit to fit.
pub const MAX_FILES: usize = 4096;
