//! vmsnapd: VMSnap's privileged D-Bus service.
//!
//! The tree mirrors the data flow, client → bus → interface → engine → host tools:
//! - [`bus`]: the thin D-Bus layer (interfaces, option parsing, error mapping);
//! - [`engine`]: what the service does, with no D-Bus in sight;
//! - [`host`]: libvirt (its RPC protocol), qemu-img, virtnbdbackup, images and backup folders;
//! - [`selection`] and [`paths`]: validation of every caller-supplied name and path;
//! - [`memory`]: keeping the idle service small.

pub mod bus;
pub mod config;
pub mod engine;
pub mod host;
pub mod memory;
pub mod paths;
pub mod selection;
pub mod sync;
