//! Guest file systems, read from a disk image without privileges.
//!
//! A guest's file system is data the guest wrote, and the guest may be hostile. So vmsnapd
//! never parses it: it starts the `vmsnap-guestfs` helper (this crate's binary) as an
//! unprivileged user, hands it one read-only descriptor of the rebuilt disk image, and asks
//! it questions over a pipe ([`protocol`]). The helper finds the volumes ([`volumes`],
//! [`probe`]), reads ext2/3/4 and FAT with pure-Rust, read-only drivers ([`tree`]), and
//! confines itself first ([`sandbox`]). Nothing here writes anything anywhere.

pub mod image;
pub mod point;
pub mod probe;
pub mod protocol;
pub mod sandbox;
pub mod serve;
pub mod stream;
pub mod tree;
pub mod volumes;
