//! A JSON string read without a copy when it has no escapes.

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::borrow::Cow;
use std::fmt;

/// A JSON string, borrowed from the message unless it has escapes. serde's own
/// `Cow<str>` always copies (it reads a `String`), so the keys of every object the
/// inspection walks cost an allocation each that way.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Text<'de>(pub Cow<'de, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                // As `String`'s, so errors read as before.
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_string_without_escapes_is_borrowed_and_one_with_them_is_read_whole() {
        let plain: Text = serde_json::from_str(r#""tools/call""#).unwrap();
        assert!(matches!(plain.0, Cow::Borrowed("tools/call")));
        let escaped: Text = serde_json::from_str(r#""tools\/c\u0061ll""#).unwrap();
        assert!(matches!(&escaped.0, Cow::Owned(s) if s == "tools/call"));
        // Keys too (serde_json hands them out as strings).
        let map: Vec<(String, bool)> =
            serde_json::from_str::<std::collections::BTreeMap<Text, u8>>(r#"{"a":1,"\u0062":2}"#)
                .unwrap()
                .keys()
                .map(|k| (k.0.to_string(), matches!(k.0, Cow::Borrowed(_))))
                .collect();
        assert_eq!(map, [("a".to_string(), true), ("b".to_string(), false)]);
    }

    #[test]
    fn anything_but_a_string_is_refused_as_a_string_would_be() {
        let ours = serde_json::from_str::<Text>("2").err().unwrap().to_string();
        let serdes = serde_json::from_str::<String>("2")
            .err()
            .unwrap()
            .to_string();
        assert_eq!(ours, serdes);
    }
}
