//! Arguments decoded within bounds, whatever the message holds.
//!
//! The bus hands the service whole messages of up to 128 MiB (dbus-daemon's limit for the
//! system bus). Decoded as `Vec<String>`, a `Status` call of 4 000 000 one-character names
//! (a 32 MB body) became some 250 MB of strings before the 1024-name limit was checked, and
//! eight such calls at once took vmsnapd to 1.8 GB. These types take the same wire form
//! (`as`, `a{sv}`) but keep at most a limit of elements, each string cut one byte past the
//! longest that could be valid (so that validation still refuses it for its length), and
//! only count the rest: the wire bytes are walked, never copied element by element. The
//! count is what the validation reports, so the caller hears how many it sent.

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

/// An `a{sv}` options argument: at most [`KEEP_ENTRIES`] entries kept.
#[derive(Debug, Default)]
pub struct Options {
    entries: HashMap<String, OwnedValue>,
    total: usize,
}

impl Type for Options {
    const SIGNATURE: &'static Signature = <HashMap<String, OwnedValue>>::SIGNATURE;
}

impl Options {
    /// The dictionary, or `InvalidArgument` when it has more entries than any method takes.
    pub fn into_map(self) -> Result<HashMap<String, OwnedValue>, Error> {
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
                            let value = map.next_value::<OwnedValue>()?;
                            out.entries.insert(kept(key), value);
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
    }
}
