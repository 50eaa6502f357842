//! Arguments decoded within bounds, whatever the message holds.
//!
//! The bus hands the service whole messages of up to 128 MiB (dbus-daemon's limit for the
//! system bus). Decoded as `Vec<String>`, a `Status` call of 4 000 000 one-character names
//! (a 32 MB body) became some 250 MB of strings before the 1024-name limit was checked, and
//! eight such calls at once took vmsnapd to 1.8 GB. These types take the same wire form
//! (`as`, `a{sv}`) but keep at most a limit of elements, each string cut one byte past the
//! longest that could be valid (so that validation still refuses it for its length), and
//! only count the rest: the wire bytes are walked, never copied element by element. The
//! count is what the validation reports, so the caller hears how many it sent. An option's
//! value is always a single string, boolean or number; a variant holding anything else (an
//! array of millions of strings would otherwise become millions of values) is walked and
//! refused, naming its key and type.

use std::collections::HashMap;
use std::fmt;

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use vmsnap_dbus::Error;
use zvariant::{OwnedValue, Signature, Type};

/// Elements kept of an array argument: one past the largest accepted count (1024 domains,
/// 256 paths), so that validation sees "too many".
const KEEP_ITEMS: usize = 1025;
/// Bytes kept of each string: one past the longest accepted path.
const KEEP_BYTES: usize = crate::paths::MAX_PATH_BYTES + 1;
/// Entries kept of an options dictionary: no method has more than a dozen keys.
const KEEP_ENTRIES: usize = 64;

/// An `as` argument: at most [`KEEP_ITEMS`] strings kept, each at most [`KEEP_BYTES`].
#[derive(Debug, Default)]
pub struct Strings {
    items: Vec<String>,
    total: usize,
}

impl Type for Strings {
    const SIGNATURE: &'static Signature = <Vec<String>>::SIGNATURE;
}

impl Strings {
    /// The strings, or `InvalidArgument` naming how many came when more than `max`.
    pub fn into_vec(self, max: usize, what: &str) -> Result<Vec<String>, Error> {
        if self.total > max {
            return Err(Error::InvalidArgument(format!(
                "{} {what} given; at most {max} are accepted",
                self.total
            )));
        }
        Ok(self.items)
    }
}

/// The first `KEEP_BYTES` of `s`, cut at the next character boundary (at most 3 more).
fn kept(s: &str) -> String {
    let mut end = s.len().min(KEEP_BYTES);
    while !s.is_char_boundary(end) {
        end += 1;
    }
    s[..end].to_string()
}

impl<'de> Deserialize<'de> for Strings {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Strings;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of strings")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strings, A::Error> {
                let mut out = Strings::default();
                while out.items.len() < KEEP_ITEMS {
                    // Borrowed from the message: nothing is allocated for what is cut.
                    match seq.next_element::<&'de str>()? {
                        Some(s) => out.items.push(kept(s)),
                        None => {
                            out.total = out.items.len();
                            return Ok(out);
                        }
                    }
                }
                out.total = out.items.len();
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    out.total += 1;
                }
                Ok(out)
            }
        }
        deserializer.deserialize_seq(V)
    }
}

/// An `a{sv}` options argument: at most [`KEEP_ENTRIES`] entries kept, each a single value.
#[derive(Debug, Default)]
pub struct Options {
    entries: HashMap<String, OwnedValue>,
    total: usize,
    /// A key whose value is not a single string, boolean or number, and its type.
    not_single: Option<(String, String)>,
}

/// An option's value: the variant's own value when it is a single string, boolean or
/// number; otherwise only its signature (the value walked, nothing kept).
enum Single {
    Value(OwnedValue),
    Refused(String),
}

impl<'de> Deserialize<'de> for Single {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Single;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a variant")
            }
            // A D-Bus variant comes as its signature, then its value.
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Single, A::Error> {
                use serde::de::Error as _;
                let signature: Signature = seq
                    .next_element()?
                    .ok_or_else(|| A::Error::custom("a variant without a signature"))?;
                let missing = || A::Error::custom("a variant without a value");
                let value = match signature {
                    Signature::Str => OwnedValue::from(zvariant::Str::from(
                        seq.next_element::<String>()?.ok_or_else(missing)?,
                    )),
                    Signature::Bool => seq.next_element::<bool>()?.ok_or_else(missing)?.into(),
                    Signature::U8 => seq.next_element::<u8>()?.ok_or_else(missing)?.into(),
                    Signature::U16 => seq.next_element::<u16>()?.ok_or_else(missing)?.into(),
                    Signature::I16 => seq.next_element::<i16>()?.ok_or_else(missing)?.into(),
                    Signature::U32 => seq.next_element::<u32>()?.ok_or_else(missing)?.into(),
                    Signature::I32 => seq.next_element::<i32>()?.ok_or_else(missing)?.into(),
                    Signature::U64 => seq.next_element::<u64>()?.ok_or_else(missing)?.into(),
                    Signature::I64 => seq.next_element::<i64>()?.ok_or_else(missing)?.into(),
                    Signature::F64 => seq.next_element::<f64>()?.ok_or_else(missing)?.into(),
                    other => {
                        seq.next_element::<IgnoredAny>()?.ok_or_else(missing)?;
                        return Ok(Single::Refused(other.to_string()));
                    }
                };
                Ok(Single::Value(value))
            }
        }
        deserializer.deserialize_any(V)
    }
}

impl Type for Options {
    const SIGNATURE: &'static Signature = <HashMap<String, OwnedValue>>::SIGNATURE;
}

impl Options {
    /// The dictionary, or `InvalidArgument` when it has more entries than any method takes
    /// or a value that is not a single string, boolean or number.
    pub fn into_map(self) -> Result<HashMap<String, OwnedValue>, Error> {
        if let Some((key, signature)) = self.not_single {
            return Err(Error::InvalidArgument(format!(
                "option {key:?} has a value of type {signature}; options are single strings, \
                 booleans and numbers"
            )));
        }
        if self.total > KEEP_ENTRIES {
            return Err(Error::InvalidArgument(format!(
                "{} option keys given; no method takes more than {KEEP_ENTRIES}",
                self.total
            )));
        }
        Ok(self.entries)
    }
}

impl<'de> Deserialize<'de> for Options {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Options;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a dictionary of options")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Options, A::Error> {
                let mut out = Options::default();
                while out.total < KEEP_ENTRIES {
                    match map.next_key::<&'de str>()? {
                        Some(key) => {
                            match map.next_value::<Single>()? {
                                Single::Value(value) => {
                                    out.entries.insert(kept(key), value);
                                }
                                Single::Refused(signature) => {
                                    out.not_single.get_or_insert((kept(key), signature));
                                }
                            }
                            out.total += 1;
                        }
                        None => return Ok(out),
                    }
                }
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {
                    out.total += 1;
                }
                Ok(out)
            }
        }
        deserializer.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zvariant::serialized::{Context, Format};
    use zvariant::{to_bytes, LE};

    fn decode<T: for<'de> Deserialize<'de> + Type>(
        bytes: &zvariant::serialized::Data<'_, '_>,
    ) -> T {
        let (value, _) = bytes.deserialize::<T>().unwrap();
        value
    }

    #[test]
    fn arrays_are_counted_beyond_what_is_kept() {
        let ctxt = Context::new(Format::DBus, LE, 0);
        let names: Vec<String> = (0..100_000).map(|i| format!("n{i}")).collect();
        let data = to_bytes(ctxt, &names).unwrap();
        let s: Strings = decode(&data);
        assert_eq!(s.items.len(), KEEP_ITEMS);
        let refused = s.into_vec(1024, "domains").unwrap_err().to_string();
        assert!(
            refused.contains("100000 domains given; at most 1024"),
            "{refused}"
        );
        let few = to_bytes(ctxt, &vec!["a", "b"]).unwrap();
        assert_eq!(
            decode::<Strings>(&few).into_vec(1024, "x").unwrap(),
            ["a", "b"]
        );
        // A long string is cut past the longest valid one: still too long to pass.
        let long = to_bytes(ctxt, &vec!["é".repeat(50_000)]).unwrap();
        let kept = decode::<Strings>(&long).into_vec(1, "x").unwrap();
        assert!(kept[0].len() > crate::paths::MAX_PATH_BYTES && kept[0].len() <= KEEP_BYTES + 3);
    }

    #[test]
    fn dictionaries_are_counted_beyond_what_is_kept() {
        let ctxt = Context::new(Format::DBus, LE, 0);
        let mut dict: HashMap<String, zvariant::Value> = HashMap::new();
        dict.insert("output".into(), "/b".into());
        let data = to_bytes(ctxt, &dict).unwrap();
        let map = decode::<Options>(&data).into_map().unwrap();
        assert_eq!(String::try_from(map["output"].clone()).unwrap(), "/b");
        for i in 0..10_000 {
            dict.insert(format!("k{i}"), (i as u32).into());
        }
        let data = to_bytes(ctxt, &dict).unwrap();
        let refused = decode::<Options>(&data).into_map().unwrap_err().to_string();
        assert!(refused.contains("10001 option keys"), "{refused}");
        // One key, a million strings in its variant: walked, not kept.
        let big: Vec<&str> = vec!["x"; 1_000_000];
        let mut dict: HashMap<String, zvariant::Value> = HashMap::new();
        dict.insert("output".into(), zvariant::Value::from(big));
        let data = to_bytes(ctxt, &dict).unwrap();
        let refused = decode::<Options>(&data).into_map().unwrap_err().to_string();
        assert!(
            refused.contains("\"output\" has a value of type as"),
            "{refused}"
        );
        // Every scalar passes as it came.
        let mut dict: HashMap<String, zvariant::Value> = HashMap::new();
        dict.insert("b".into(), true.into());
        dict.insert("u".into(), 7u32.into());
        dict.insert("s".into(), "text".into());
        dict.insert("x".into(), (-3i64).into());
        let data = to_bytes(ctxt, &dict).unwrap();
        let map = decode::<Options>(&data).into_map().unwrap();
        assert!(bool::try_from(map["b"].clone()).unwrap());
        assert_eq!(u32::try_from(map["u"].clone()).unwrap(), 7);
        assert_eq!(i64::try_from(map["x"].clone()).unwrap(), -3);
    }
}
