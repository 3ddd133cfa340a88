//! Typed decoding of the YAML tree with every error collected and reported by path.
//!
//! `serde`'s derive stops at the first error; an operator fixing a config wants all of
//! them at once (`upstream.groups.files.servers[1].url: ...`). Leaves (strings, numbers,
//! durations, sizes, enums) still go through `serde`; structs are declared with
//! [`config_struct!`], which rejects unknown keys (the `deny_unknown_fields` contract)
//! and decodes every field on its own so one bad field does not hide the next.

use serde::de::DeserializeOwned;
use serde_yaml_ng::Value;
use std::collections::BTreeMap;
use std::fmt;

/// A path into the config file, rendered as `upstream.groups.files.servers[1].url`.
#[derive(Clone, Debug, Default)]
pub struct Path(String);

impl Path {
    pub fn root() -> Self {
        Path(String::new())
    }
    pub fn key(&self, k: &str) -> Path {
        if self.0.is_empty() {
            Path(k.to_string())
        } else {
            Path(format!("{}.{}", self.0, k))
        }
    }
    pub fn index(&self, i: usize) -> Path {
        Path(format!("{}[{}]", self.0, i))
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("(root)")
        } else {
            f.write_str(&self.0)
        }
    }
}

/// One problem in a config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Collects every problem found while decoding and validating.
#[derive(Debug, Default)]
pub struct Errors(pub Vec<ConfigError>);

impl Errors {
    pub fn push(&mut self, path: &Path, message: impl Into<String>) {
        self.0.push(ConfigError {
            path: path.to_string(),
            message: message.into(),
        });
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Decode `Self` from a YAML value at `path`, recording problems in `errs`.
/// `None` means the value was unusable (the error is already recorded).
pub trait FromYaml: Sized {
    fn from_yaml(v: &Value, path: &Path, errs: &mut Errors) -> Option<Self>;
}

/// Marker for leaf types decoded directly by serde.
pub trait Leaf: DeserializeOwned {}

impl<T: Leaf> FromYaml for T {
    fn from_yaml(v: &Value, path: &Path, errs: &mut Errors) -> Option<Self> {
        match serde_yaml_ng::from_value::<T>(v.clone()) {
            Ok(x) => Some(x),
            Err(e) => {
                errs.push(path, clean_serde_message(&e.to_string()));
                None
            }
        }
    }
}

fn clean_serde_message(m: &str) -> String {
    // serde_yaml appends " at line X column Y" for values built in memory; keep the message only.
    m.split(" at line ").next().unwrap_or(m).to_string()
}

impl Leaf for String {}
impl Leaf for bool {}
impl Leaf for u16 {}
impl Leaf for u32 {}
impl Leaf for u64 {}
impl Leaf for usize {}
impl Leaf for f64 {}
impl Leaf for serde_json::Map<String, serde_json::Value> {}
impl Leaf for serde_json::Value {}

impl<T: FromYaml> FromYaml for Option<T> {
    fn from_yaml(v: &Value, path: &Path, errs: &mut Errors) -> Option<Self> {
        if v.is_null() {
            Some(None)
        } else {
            T::from_yaml(v, path, errs).map(Some)
        }
    }
}

impl<T: FromYaml> FromYaml for Vec<T> {
    fn from_yaml(v: &Value, path: &Path, errs: &mut Errors) -> Option<Self> {
        match v {
            Value::Null => Some(Vec::new()),
            Value::Sequence(items) => Some(
                items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, item)| T::from_yaml(item, &path.index(i), errs))
                    .collect(),
            ),
            other => {
                errs.push(path, format!("expected a list, found {}", kind(other)));
                None
            }
        }
    }
}

impl<T: FromYaml> FromYaml for BTreeMap<String, T> {
    fn from_yaml(v: &Value, path: &Path, errs: &mut Errors) -> Option<Self> {
        match v {
            Value::Null => Some(BTreeMap::new()),
            Value::Mapping(m) => {
                let mut out = BTreeMap::new();
                for (k, item) in m {
                    let Some(k) = k.as_str() else {
                        errs.push(path, format!("keys must be strings, found {}", kind(k)));
                        continue;
                    };
                    if let Some(x) = T::from_yaml(item, &path.key(k), errs) {
                        out.insert(k.to_string(), x);
                    }
                }
                Some(out)
            }
            other => {
                errs.push(path, format!("expected a mapping, found {}", kind(other)));
                None
            }
        }
    }
}

/// A short name for the kind of a YAML value, for error messages.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// The mapping behind a struct, with unknown keys reported.
pub fn struct_mapping<'a>(
    v: &'a Value,
    path: &Path,
    known: &[&str],
    errs: &mut Errors,
) -> Option<&'a serde_yaml_ng::Mapping> {
    let m = match v {
        Value::Mapping(m) => m,
        Value::Null => return None,
        other => {
            errs.push(path, format!("expected a mapping, found {}", kind(other)));
            return None;
        }
    };
    for k in m.keys() {
        match k.as_str() {
            Some(name) if known.contains(&name) => {}
            Some(name) => errs.push(
                &path.key(name),
                format!("unknown key (expected one of: {})", known.join(", ")),
            ),
            None => errs.push(path, format!("keys must be strings, found {}", kind(k))),
        }
    }
    Some(m)
}

/// Declares a config struct: the struct, its `Default` (the documented defaults) and a
/// [`FromYaml`] impl that rejects unknown keys and decodes each field independently.
#[macro_export]
macro_rules! config_struct {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ty = $default:expr ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, serde::Serialize)]
        pub struct $name { $( $(#[$fmeta])* pub $field: $ty ),* }

        impl Default for $name {
            fn default() -> Self {
                Self { $( $field: $default ),* }
            }
        }

        impl $crate::config::yaml::FromYaml for $name {
            fn from_yaml(
                v: &serde_yaml_ng::Value,
                path: &$crate::config::yaml::Path,
                errs: &mut $crate::config::yaml::Errors,
            ) -> Option<Self> {
                let known = [$( stringify!($field) ),*];
                let mut out = Self::default();
                if v.is_null() {
                    return Some(out);
                }
                let m = $crate::config::yaml::struct_mapping(v, path, &known, errs)?;
                $(
                    if let Some(fv) = m.get(stringify!($field)) {
                        let fpath = path.key(stringify!($field));
                        if let Some(x) = <$ty as $crate::config::yaml::FromYaml>::from_yaml(fv, &fpath, errs) {
                            out.$field = x;
                        }
                    }
                )*
                Some(out)
            }
        }
    };
}
