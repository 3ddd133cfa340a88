//! Human units in the config: durations (`30`, `"30s"`, `"500ms"`, `"5m"`) and sizes
//! (`1048576`, `"64KiB"`, `"4MiB"`, `"1MB"`).

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::fmt;
use std::time::Duration;

/// A duration: a bare number is seconds; a string uses units (`ms`, `s`, `m`, `h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl Dur {
    pub const fn secs(s: u64) -> Self {
        Dur(Duration::from_secs(s))
    }
    pub const fn millis(ms: u64) -> Self {
        Dur(Duration::from_millis(ms))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as 30 (seconds), \"30s\" or \"500ms\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Dur, E> {
                Ok(Dur(Duration::from_secs(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Dur, E> {
                u64::try_from(v)
                    .map(|v| Dur(Duration::from_secs(v)))
                    .map_err(|_| E::custom("a duration cannot be negative"))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Dur, E> {
                Duration::try_from_secs_f64(v).map(Dur).map_err(|_| {
                    E::custom("a duration must be a finite, non-negative number of seconds")
                })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Dur, E> {
                let t = v.trim();
                if let Ok(n) = t.parse::<u64>() {
                    return Ok(Dur(Duration::from_secs(n)));
                }
                humantime::parse_duration(t).map(Dur).map_err(|e| {
                    E::custom(format!(
                        "invalid duration {v:?} ({e}); use e.g. 30, \"30s\", \"500ms\", \"5m\""
                    ))
                })
            }
        }
        d.deserialize_any(V)
    }
}

impl super::yaml::Leaf for Dur {}

impl serde::Serialize for Dur {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

impl serde::Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

/// A size in bytes: a bare number is bytes; a string may use `B`, `KB`, `KiB`, `MB`, `MiB`, `GB`, `GiB`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let num: f64 = num
            .parse()
            .map_err(|_| format!("invalid size {s:?}; use e.g. 1048576, \"64KiB\", \"4MiB\""))?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" | "k" => 1_000,
            "kib" => 1 << 10,
            "mb" | "m" => 1_000_000,
            "mib" => 1 << 20,
            "gb" | "g" => 1_000_000_000,
            "gib" => 1 << 30,
            other => {
                return Err(format!(
                    "unknown size unit {other:?} in {s:?}; use B, KB, KiB, MB, MiB, GB or GiB"
                ))
            }
        };
        Ok(ByteSize((num * mult as f64) as u64))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as 1048576 (bytes) or \"4MiB\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                ByteSize::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl super::yaml::Leaf for ByteSize {}

#[cfg(test)]
mod tests {
    use super::*;

    fn dur(y: &str) -> Result<Dur, String> {
        serde_yaml_ng::from_str::<Dur>(y).map_err(|e| e.to_string())
    }

    #[test]
    fn durations() {
        assert_eq!(dur("30").unwrap(), Dur::secs(30));
        assert_eq!(dur("\"30s\"").unwrap(), Dur::secs(30));
        assert_eq!(dur("500ms").unwrap(), Dur(Duration::from_millis(500)));
        assert_eq!(dur("5m").unwrap(), Dur::secs(300));
        assert_eq!(dur("1.5").unwrap(), Dur(Duration::from_millis(1500)));
        assert!(dur("-1").is_err());
        assert!(dur("soon").unwrap_err().contains("invalid duration"));
    }

    #[test]
    fn sizes() {
        assert_eq!(ByteSize::parse("4MiB").unwrap(), ByteSize(4 << 20));
        assert_eq!(ByteSize::parse("64KiB").unwrap(), ByteSize(65536));
        assert_eq!(ByteSize::parse("1MB").unwrap(), ByteSize(1_000_000));
        assert_eq!(ByteSize::parse("100").unwrap(), ByteSize(100));
        assert!(ByteSize::parse("4 parsecs").is_err());
        assert!(ByteSize::parse("MiB").is_err());
    }
}
