//! The skim that finds list results: whether a JSON text (a message or a batch) has a
//! `result` with a list member, read without building anything, and refused when a
//! key appears twice.

use crate::mcp::envelope::Keys;
use crate::mcp::text::Text;
use crate::security::policy::ListKind;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::fmt;

/// The list members of a result.
const LIST_KEYS: [&str; 4] = [
    ListKind::ALL[0].key(),
    ListKind::ALL[1].key(),
    ListKind::ALL[2].key(),
    ListKind::ALL[3].key(),
];

/// Whether a JSON text (a message or a batch) has a result with a list in it; `Err`
/// when it is not JSON, or when `result` or a list member appears twice (or again under
/// another case): clients differ on which one they read, so it is not passed on.
/// Skims without building anything.
pub(super) fn carries_list(text: &str) -> Result<bool, ()> {
    serde_json::from_str::<Probe>(text)
        .map(|p| p.0)
        .map_err(|_| ())
}

/// A message (any `result` with a list member) or a batch of them.
struct Probe(bool);
/// A `result`: has it a list member?
struct ResultProbe(bool);

macro_rules! scalars_are_false {
    ($t:ident) => {
        fn visit_bool<E>(self, _: bool) -> Result<$t, E> {
            Ok($t(false))
        }
        fn visit_i64<E>(self, _: i64) -> Result<$t, E> {
            Ok($t(false))
        }
        fn visit_u64<E>(self, _: u64) -> Result<$t, E> {
            Ok($t(false))
        }
        fn visit_f64<E>(self, _: f64) -> Result<$t, E> {
            Ok($t(false))
        }
        fn visit_str<E>(self, _: &str) -> Result<$t, E> {
            Ok($t(false))
        }
        fn visit_unit<E>(self) -> Result<$t, E> {
            Ok($t(false))
        }
    };
}

impl<'de> Deserialize<'de> for Probe {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Probe;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON-RPC message")
            }
            scalars_are_false!(Probe);
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Probe, A::Error> {
                let mut found = false;
                let mut keys = Keys::new(&["result"]);
                while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
                    keys.note(&key).map_err(de::Error::custom)?;
                    if key == "result" {
                        found |= map.next_value::<ResultProbe>()?.0;
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(Probe(found))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Probe, A::Error> {
                let mut found = false;
                while let Some(p) = seq.next_element::<Probe>()? {
                    found |= p.0;
                }
                Ok(Probe(found))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for ResultProbe {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ResultProbe;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON-RPC result")
            }
            scalars_are_false!(ResultProbe);
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ResultProbe, A::Error> {
                let mut found = false;
                let mut keys = Keys::new(&LIST_KEYS);
                while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
                    keys.note(&key).map_err(de::Error::custom)?;
                    found |= LIST_KEYS.contains(&key.as_ref());
                    map.next_value::<IgnoredAny>()?;
                }
                Ok(ResultProbe(found))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ResultProbe, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(ResultProbe(false))
            }
        }
        d.deserialize_any(V)
    }
}
