//! The libvirt procedures the service calls, as one table: program, number, the shapes of
//! their arguments and replies as `remote_protocol.x` writes them, and whether a call may be
//! sent again after a connection broke under it.
//!
//! The numbers and shapes are libvirt's promise to old clients; `tests/tests/protocol.rs`
//! checks every row against the `remote_protocol.x` and `qemu_protocol.x` of Debian's libvirt
//! source package, so a typo here is a test failure, not a call that libvirtd misreads.

/// The programs on libvirt's socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    /// `remote_protocol.x`: the public API.
    Remote,
    /// `qemu_protocol.x`: QEMU's monitor pass-through (it taints the domain).
    Qemu,
    /// `virkeepaliveprotocol.x`.
    Keepalive,
}

impl Program {
    pub const fn number(self) -> u32 {
        match self {
            Program::Remote => 0x2000_8086,
            Program::Qemu => 0x2000_8087,
            Program::Keepalive => 0x6b65_6570,
        }
    }

    /// The prefix of its procedure constants and structs in the `.x` files.
    pub const fn prefix(self) -> &'static str {
        match self {
            Program::Remote => "REMOTE",
            Program::Qemu => "QEMU",
            Program::Keepalive => "KEEPALIVE",
        }
    }
}

/// One row of the table.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub program: Program,
    /// The constant without its program prefix: `DOMAIN_GET_STATE` for
    /// `REMOTE_PROC_DOMAIN_GET_STATE`.
    pub name: &'static str,
    pub number: i32,
    /// The fields of `<prefix>_<name>_args` as the `.x` file declares them, `;`-separated;
    /// `void` when the call has none.
    pub args: &'static str,
    /// The fields of `<prefix>_<name>_ret`, or `void`.
    pub ret: &'static str,
    /// Whether sending it twice does no harm: only these are sent again on a new connection
    /// when the old one broke before their reply came.
    pub idempotent: bool,
}

/// The procedures used, one variant per row of [`TABLE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Procedure {
    ConnectOpen,
    AuthList,
    ConnectSupportsFeature,
    ConnectListAllDomains,
    DomainLookupByName,
    DomainGetState,
    DomainGetXmlDesc,
    DomainGetBlockInfo,
    DomainCreateWithFlags,
    DomainDestroyFlags,
    DomainGetJobStats,
    DomainAbortJob,
    DomainListAllCheckpoints,
    DomainCheckpointGetXmlDesc,
    DomainCheckpointDelete,
    QemuMonitorCommand,
    KeepalivePing,
    KeepalivePong,
}

const DOMAIN_AND_FLAGS: &str = "remote_nonnull_domain dom; unsigned int flags";
const CHECKPOINT_AND_FLAGS: &str =
    "remote_nonnull_domain_checkpoint checkpoint; unsigned int flags";

const fn read(name: &'static str, number: i32, args: &'static str, ret: &'static str) -> Spec {
    Spec {
        program: Program::Remote,
        name,
        number,
        args,
        ret,
        idempotent: true,
    }
}

const fn change(name: &'static str, number: i32, args: &'static str, ret: &'static str) -> Spec {
    Spec {
        idempotent: false,
        ..read(name, number, args, ret)
    }
}

/// In the order of [`Procedure`].
pub const TABLE: &[Spec] = &[
    // Opening is only ever sent on a fresh connection; it is never resent on its own.
    change(
        "CONNECT_OPEN",
        1,
        "remote_string name; unsigned int flags",
        "void",
    ),
    read(
        "AUTH_LIST",
        66,
        "void",
        "remote_auth_type types<REMOTE_AUTH_TYPE_LIST_MAX>",
    ),
    read(
        "CONNECT_SUPPORTS_FEATURE",
        60,
        "int feature",
        "int supported",
    ),
    read(
        "CONNECT_LIST_ALL_DOMAINS",
        273,
        "int need_results; unsigned int flags",
        "remote_nonnull_domain domains<REMOTE_DOMAIN_LIST_MAX>; unsigned int ret",
    ),
    read(
        "DOMAIN_LOOKUP_BY_NAME",
        23,
        "remote_nonnull_string name",
        "remote_nonnull_domain dom",
    ),
    read(
        "DOMAIN_GET_STATE",
        212,
        DOMAIN_AND_FLAGS,
        "int state; int reason",
    ),
    read(
        "DOMAIN_GET_XML_DESC",
        14,
        DOMAIN_AND_FLAGS,
        "remote_nonnull_string xml",
    ),
    read(
        "DOMAIN_GET_BLOCK_INFO",
        194,
        "remote_nonnull_domain dom; remote_nonnull_string path; unsigned int flags",
        "unsigned hyper allocation; unsigned hyper capacity; unsigned hyper physical",
    ),
    change(
        "DOMAIN_CREATE_WITH_FLAGS",
        196,
        DOMAIN_AND_FLAGS,
        "remote_nonnull_domain dom",
    ),
    change("DOMAIN_DESTROY_FLAGS", 234, DOMAIN_AND_FLAGS, "void"),
    read(
        "DOMAIN_GET_JOB_STATS",
        298,
        DOMAIN_AND_FLAGS,
        "int type; remote_typed_param params<REMOTE_DOMAIN_JOB_STATS_MAX>",
    ),
    change("DOMAIN_ABORT_JOB", 164, "remote_nonnull_domain dom", "void"),
    read(
        "DOMAIN_LIST_ALL_CHECKPOINTS",
        413,
        "remote_nonnull_domain dom; int need_results; unsigned int flags",
        "remote_nonnull_domain_checkpoint checkpoints<REMOTE_DOMAIN_CHECKPOINT_LIST_MAX>; int ret",
    ),
    read(
        "DOMAIN_CHECKPOINT_GET_XML_DESC",
        412,
        CHECKPOINT_AND_FLAGS,
        "remote_nonnull_string xml",
    ),
    change(
        "DOMAIN_CHECKPOINT_DELETE",
        417,
        CHECKPOINT_AND_FLAGS,
        "void",
    ),
    Spec {
        program: Program::Qemu,
        name: "DOMAIN_MONITOR_COMMAND",
        number: 1,
        args: "remote_nonnull_domain dom; remote_nonnull_string cmd; unsigned int flags",
        ret: "remote_nonnull_string result",
        idempotent: false,
    },
    Spec {
        program: Program::Keepalive,
        name: "PING",
        number: 1,
        args: "void",
        ret: "void",
        idempotent: true,
    },
    Spec {
        program: Program::Keepalive,
        name: "PONG",
        number: 2,
        args: "void",
        ret: "void",
        idempotent: true,
    },
];

impl Procedure {
    pub const ALL: [Procedure; 18] = [
        Procedure::ConnectOpen,
        Procedure::AuthList,
        Procedure::ConnectSupportsFeature,
        Procedure::ConnectListAllDomains,
        Procedure::DomainLookupByName,
        Procedure::DomainGetState,
        Procedure::DomainGetXmlDesc,
        Procedure::DomainGetBlockInfo,
        Procedure::DomainCreateWithFlags,
        Procedure::DomainDestroyFlags,
        Procedure::DomainGetJobStats,
        Procedure::DomainAbortJob,
        Procedure::DomainListAllCheckpoints,
        Procedure::DomainCheckpointGetXmlDesc,
        Procedure::DomainCheckpointDelete,
        Procedure::QemuMonitorCommand,
        Procedure::KeepalivePing,
        Procedure::KeepalivePong,
    ];

    pub fn spec(self) -> &'static Spec {
        &TABLE[self as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_procedure_has_its_row() {
        assert_eq!(TABLE.len(), Procedure::ALL.len());
        for (i, p) in Procedure::ALL.iter().enumerate() {
            assert_eq!(*p as usize, i, "{p:?} is out of order");
        }
        assert_eq!(Procedure::DomainGetState.spec().number, 212);
        assert!(!Procedure::DomainCheckpointDelete.spec().idempotent);
        assert_eq!(Procedure::QemuMonitorCommand.spec().program, Program::Qemu);
    }
}
