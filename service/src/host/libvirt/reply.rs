//! The shapes of the arguments and replies used, public for the property tests: each decoder
//! checks every length and that nothing is left over (`procedures::TABLE` has the shapes as
//! `remote_protocol.x` writes them).

use crate::host::libvirt_rpc::STRING_MAX;
use crate::host::xdr::{Decoder, Encoder, XdrError};

/// `REMOTE_DOMAIN_LIST_MAX`, `REMOTE_DOMAIN_CHECKPOINT_LIST_MAX`, `REMOTE_DOMAIN_JOB_STATS_MAX`.
const DOMAIN_LIST_MAX: usize = 16384;
const CHECKPOINT_LIST_MAX: usize = 16384;
const JOB_STATS_MAX: usize = 64;
/// `REMOTE_STRING_MAX` bounds field names too; a name is far shorter.
const FIELD_MAX: usize = 80;

/// `remote_nonnull_domain`: how every call names its domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainRef {
    pub name: String,
    pub uuid: [u8; 16],
    pub id: i32,
}

impl DomainRef {
    /// An empty name, the UUID and the id.
    pub const MIN_LEN: usize = 4 + 16 + 4;

    pub fn encode(&self, e: &mut Encoder) {
        e.string(&self.name).fixed(&self.uuid).i32(self.id);
    }

    fn decode(d: &mut Decoder) -> Result<Self, XdrError> {
        let name = d.string(STRING_MAX)?;
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(d.fixed(16)?);
        Ok(DomainRef {
            name,
            uuid,
            id: d.i32()?,
        })
    }
}

/// `remote_connect_list_all_domains_ret`: the domains, then their count.
pub fn domain_names(body: &[u8]) -> Result<Vec<String>, XdrError> {
    let mut d = Decoder::new(body);
    let n = d.array_len(DOMAIN_LIST_MAX, DomainRef::MIN_LEN)?;
    let names = (0..n)
        .map(|_| DomainRef::decode(&mut d).map(|r| r.name))
        .collect::<Result<Vec<_>, _>>()?;
    let _count = d.u32()?;
    d.finish()?;
    Ok(names)
}

/// `remote_domain_lookup_by_name_ret`, `remote_domain_create_with_flags_ret`.
pub fn domain(body: &[u8]) -> Result<DomainRef, XdrError> {
    let mut d = Decoder::new(body);
    let dom = DomainRef::decode(&mut d)?;
    d.finish()?;
    Ok(dom)
}

/// `remote_domain_get_state_ret`: the state (the reason is not needed).
pub fn state(body: &[u8]) -> Result<i32, XdrError> {
    let mut d = Decoder::new(body);
    let state = d.i32()?;
    let _reason = d.i32()?;
    d.finish()?;
    Ok(state)
}

/// `remote_domain_list_all_checkpoints_ret`: each checkpoint's name and domain, then
/// their count.
pub fn checkpoint_names(body: &[u8]) -> Result<Vec<String>, XdrError> {
    let mut d = Decoder::new(body);
    let n = d.array_len(CHECKPOINT_LIST_MAX, 4 + DomainRef::MIN_LEN)?;
    let mut names = Vec::with_capacity(n);
    for _ in 0..n {
        names.push(d.string(STRING_MAX)?);
        DomainRef::decode(&mut d)?;
    }
    let _count = d.i32()?;
    d.finish()?;
    Ok(names)
}

/// A reply that is one string (XML descriptions, QEMU's answer).
pub fn string(body: &[u8]) -> Result<String, XdrError> {
    let mut d = Decoder::new(body);
    let s = d.string(STRING_MAX)?;
    d.finish()?;
    Ok(s)
}

/// `remote_domain_get_block_info_ret`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockInfo {
    /// Bytes the host has allocated for the image (what `qemu-img info` calls its disk size).
    pub allocation: u64,
    /// The guest-visible size.
    pub capacity: u64,
    pub physical: u64,
}

pub fn block_info(body: &[u8]) -> Result<BlockInfo, XdrError> {
    let mut d = Decoder::new(body);
    let info = BlockInfo {
        allocation: d.u64()?,
        capacity: d.u64()?,
        physical: d.u64()?,
    };
    d.finish()?;
    Ok(info)
}

/// A value of a `remote_typed_param`; doubles and strings are read past but not kept.
#[derive(Debug, Clone, PartialEq)]
pub enum TypedValue {
    Int(i64),
    Other,
}

/// `remote_domain_get_job_stats_ret`: the job type and its named values.
pub fn job_stats(body: &[u8]) -> Result<(i32, Vec<(String, TypedValue)>), XdrError> {
    let mut d = Decoder::new(body);
    let kind = d.i32()?;
    // A name (at least its length word), a type word and a value word.
    let n = d.array_len(JOB_STATS_MAX, 12)?;
    let mut params = Vec::with_capacity(n);
    for _ in 0..n {
        let field = d.string(FIELD_MAX)?;
        let value = match d.i32()? {
            1 => TypedValue::Int(d.i32()? as i64),
            2 => TypedValue::Int(d.u32()? as i64),
            3 | 4 => TypedValue::Int(d.u64()? as i64),
            5 => {
                d.u64()?;
                TypedValue::Other
            }
            6 => TypedValue::Int(d.i32()? as i64),
            7 => {
                d.string(STRING_MAX)?;
                TypedValue::Other
            }
            _ => return Err(XdrError("a typed parameter of no known type")),
        };
        params.push((field, value));
    }
    d.finish()?;
    Ok((kind, params))
}

/// An empty reply.
pub fn void(body: &[u8]) -> Result<(), XdrError> {
    Decoder::new(body).finish()
}
