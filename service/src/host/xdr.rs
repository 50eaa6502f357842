//! XDR (RFC 4506), the encoding of libvirt's RPC.
//!
//! Everything is a big-endian 4-byte word or a run of bytes padded to one: strings and
//! variable arrays carry their length first, optional values a 0/1 word. The few shapes
//! libvirt's read calls need fit in this file; the serde-based XDR crates are either
//! unmaintained or younger than this project, and a decoder that bounds every length is
//! what matters here: a reply is input from another process and must never panic us.

/// A reply that is not the XDR it claims to be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed XDR: {0}")]
pub struct XdrError(pub &'static str);

/// Builds one message body.
#[derive(Debug, Default)]
pub struct Encoder {
    buf: Vec<u8>,
}

impl Encoder {
    pub fn new() -> Self {
        Encoder::default()
    }

    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn i32(&mut self, v: i32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// A variable-length string or opaque.
    pub fn string(&mut self, s: &str) -> &mut Self {
        self.u32(s.len() as u32);
        self.fixed(s.as_bytes())
    }

    /// An optional string (`remote_string`).
    pub fn opt_string(&mut self, s: Option<&str>) -> &mut Self {
        match s {
            Some(s) => self.u32(1).string(s),
            None => self.u32(0),
        }
    }

    /// Fixed-length opaque data, padded.
    pub fn fixed(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(bytes);
        self.buf.resize(self.buf.len() + padding(bytes.len()), 0);
        self
    }

    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }
}

/// Reads one message body; every read checks what is left.
#[derive(Debug)]
pub struct Decoder<'a> {
    data: &'a [u8],
}

impl<'a> Decoder<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Decoder { data }
    }

    pub fn u32(&mut self) -> Result<u32, XdrError> {
        let word = self.take(4, "a word past the end")?;
        Ok(u32::from_be_bytes([word[0], word[1], word[2], word[3]]))
    }

    pub fn i32(&mut self) -> Result<i32, XdrError> {
        self.u32().map(|v| v as i32)
    }

    /// An unsigned or signed `hyper` (8 bytes); a `double` is read as its bits.
    pub fn u64(&mut self) -> Result<u64, XdrError> {
        let high = self.u32()? as u64;
        Ok(high << 32 | self.u32()? as u64)
    }

    /// Whether every byte of the body has been read.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// A string of at most `max` bytes. libvirt sends UTF-8; anything else is replaced
    /// rather than trusted.
    pub fn string(&mut self, max: usize) -> Result<String, XdrError> {
        let len = self.u32()? as usize;
        if len > max {
            return Err(XdrError("a string longer than its limit"));
        }
        let bytes = self.fixed(len)?;
        Ok(String::from_utf8_lossy(bytes).into_owned())
    }

    pub fn opt_string(&mut self, max: usize) -> Result<Option<String>, XdrError> {
        match self.present()? {
            true => self.string(max).map(Some),
            false => Ok(None),
        }
    }

    /// The 0/1 word in front of an optional value.
    pub fn present(&mut self) -> Result<bool, XdrError> {
        match self.u32()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(XdrError("an optional value flag that is neither 0 nor 1")),
        }
    }

    /// The length of a variable array of at most `max` elements, each at least
    /// `min_element` bytes, so a forged length cannot make the caller allocate more than
    /// the message holds.
    pub fn array_len(&mut self, max: usize, min_element: usize) -> Result<usize, XdrError> {
        let len = self.u32()? as usize;
        if len > max || len.saturating_mul(min_element.max(1)) > self.data.len() {
            return Err(XdrError("an array longer than its limit or the message"));
        }
        Ok(len)
    }

    /// `len` bytes of fixed opaque data, skipping the padding.
    pub fn fixed(&mut self, len: usize) -> Result<&'a [u8], XdrError> {
        let bytes = self.take(len, "opaque data past the end")?;
        self.take(padding(len), "padding past the end")?;
        Ok(bytes)
    }

    /// Whether the whole body was read: trailing bytes mean the reply has another shape
    /// than the one we decoded.
    pub fn finish(&self) -> Result<(), XdrError> {
        match self.data.is_empty() {
            true => Ok(()),
            false => Err(XdrError("bytes after the end of the reply")),
        }
    }

    fn take(&mut self, len: usize, what: &'static str) -> Result<&'a [u8], XdrError> {
        if len > self.data.len() {
            return Err(XdrError(what));
        }
        let (head, rest) = self.data.split_at(len);
        self.data = rest;
        Ok(head)
    }
}

fn padding(len: usize) -> usize {
    (4 - len % 4) % 4
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_length_prefixed_and_padded_to_four_bytes() {
        let bytes = Encoder::new().string("abcde").u32(7).finish();
        assert_eq!(bytes, b"\0\0\0\x05abcde\0\0\0\0\0\0\x07");
        let mut d = Decoder::new(&bytes);
        assert_eq!(d.string(10).unwrap(), "abcde");
        assert_eq!(d.u32().unwrap(), 7);
        d.finish().unwrap();
    }

    #[test]
    fn optional_strings_carry_a_flag() {
        let bytes = Encoder::new()
            .opt_string(None)
            .opt_string(Some("x"))
            .finish();
        let mut d = Decoder::new(&bytes);
        assert_eq!(d.opt_string(4).unwrap(), None);
        assert_eq!(d.opt_string(4).unwrap().as_deref(), Some("x"));
    }

    #[test]
    fn lengths_beyond_the_limit_or_the_message_are_errors() {
        let bytes = Encoder::new().string("abcdef").finish();
        assert!(Decoder::new(&bytes).string(3).is_err());
        let forged = Encoder::new().u32(1 << 30).finish();
        assert!(Decoder::new(&forged).string(usize::MAX).is_err());
        assert!(Decoder::new(&forged).array_len(usize::MAX, 4).is_err());
        assert!(Decoder::new(&[0, 0]).u32().is_err());
        assert!(Decoder::new(&Encoder::new().u32(2).finish())
            .present()
            .is_err());
    }
}
