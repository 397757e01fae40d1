//! Building blocks of the config types that owners (`data`, `lora`, `quant`, `device`,
//! `tokenizer`) declare and the recipe composes: "did you mean" for names read from text
//! ([`closest`], [`unknown`]), [`named_enum!`] (an enum that YAML and the CLI see as a plain
//! lowercase string and Rust as a typed value, so a typo fails at load with the valid
//! spellings), [`null_default`] (an empty YAML section means "all defaults") and
//! [`ConfigError`] (a value out of range, naming its recipe key so the recipe can add
//! `file:line:col`). Not to be confused with `model::Config`, the network's shape.

use serde::{Deserialize, Deserializer};

/// A config value out of range or inconsistent: the dotted recipe key to point at and a
/// one-line message that names it (`lora.r must be > 0 (got 0)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: &'static str,
    pub msg: String,
}

impl From<ConfigError> for crate::Error {
    fn from(e: ConfigError) -> Self {
        crate::Error::Invalid(e.msg)
    }
}

/// `ensure!(cond, "lora.r", "lora.r must be > 0 (got {})", r)`: return a [`ConfigError`]
/// for `key` unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $key:literal, $($fmt:tt)+) => {
        if !($cond) {
            return Err($crate::config::ConfigError { key: $key, msg: format!($($fmt)+) });
        }
    };
}
pub(crate) use ensure;

/// A section written as an empty key (`lora:` with nothing under it) means "all defaults".
pub fn null_default<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Split a comma-separated list, entries trimmed, empty ones dropped.
pub(crate) fn csv(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// A YAML list of strings, entries trimmed.
pub(crate) fn strings<'de, A: serde::de::SeqAccess<'de>>(
    mut seq: A,
) -> std::result::Result<Vec<String>, A::Error> {
    let mut out = Vec::new();
    while let Some(s) = seq.next_element::<String>()? {
        out.push(s.trim().to_string());
    }
    Ok(out)
}

/// The closest of `valid` to `word`, if any is close enough to be a plausible typo.
pub fn closest<'a>(word: &str, valid: &[&'a str]) -> Option<&'a str> {
    let w = word.to_ascii_lowercase();
    valid
        .iter()
        .map(|v| (*v, strsim::jaro_winkler(&w, v)))
        .filter(|(v, score)| {
            *score >= 0.85 || strsim::damerau_levenshtein(&w, v) <= 2.min(v.len() / 2)
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(v, _)| v)
}

/// "unknown {what} `x`; did you mean `a`? (valid: `a`, `b`)".
pub fn unknown(what: &str, got: &str, valid: &[&str]) -> String {
    let list = valid
        .iter()
        .map(|v| format!("`{v}`"))
        .collect::<Vec<_>>()
        .join(", ");
    match closest(got, valid) {
        Some(near) => format!("unknown {what} `{got}`; did you mean `{near}`? (valid: {list})"),
        None => format!("unknown {what} `{got}` (valid: {list})"),
    }
}

/// Serde through `FromStr`/`Display`: YAML and JSON see a plain string, Rust a typed value,
/// and a bad string fails inside the deserializer (so serde's error carries the key's place).
macro_rules! serde_via_str {
    ($ty:ty, $expecting:expr) => {
        impl ::serde::Serialize for $ty {
            fn serialize<S: ::serde::Serializer>(
                &self,
                s: S,
            ) -> ::std::result::Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> ::serde::Deserialize<'de> for $ty {
            fn deserialize<D: ::serde::Deserializer<'de>>(
                d: D,
            ) -> ::std::result::Result<Self, D::Error> {
                struct V;
                impl ::serde::de::Visitor<'_> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut ::std::fmt::Formatter) -> ::std::fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: ::serde::de::Error>(
                        self,
                        v: &str,
                    ) -> ::std::result::Result<$ty, E> {
                        v.parse().map_err(E::custom)
                    }
                }
                d.deserialize_str(V)
            }
        }
    };
}
pub(crate) use serde_via_str;

/// A string-named enum: variants, their spellings, `ALL`, `as_str`, Display, FromStr (case
/// and surrounding space ignored; a typo gets [`unknown`]'s message) and serde as a string.
macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal, { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            /// Every value, in the order the docs list them.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// The spelling in YAML and on the command line.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }
        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl ::std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> ::std::result::Result<Self, String> {
                match s.trim().to_ascii_lowercase().as_str() {
                    $($text => Ok($name::$variant),)+
                    other => Err($crate::config::unknown($what, other, &[$($text),+])),
                }
            }
        }
        $crate::config::serde_via_str!($name, concat!("a ", $what, " name (string)"));
    };
}
pub(crate) use named_enum;

#[cfg(test)]
mod tests {
    use super::*;

    named_enum!(
        /// A test enum.
        Color, "color", { Red = "red", Green = "green" }
    );

    #[test]
    fn named_enum_parses_and_suggests() {
        assert_eq!(" RED ".parse::<Color>(), Ok(Color::Red));
        assert_eq!(Color::Green.to_string(), "green");
        let e = "gren".parse::<Color>().unwrap_err();
        assert_eq!(
            e,
            "unknown color `gren`; did you mean `green`? (valid: `red`, `green`)"
        );
        let v: Color = serde_json::from_str("\"green\"").unwrap();
        assert_eq!(v, Color::Green);
        assert_eq!(serde_json::to_string(&Color::Red).unwrap(), "\"red\"");
        assert_eq!(closest("zzzz", &["red", "green"]), None);
        assert_eq!(Color::ALL, &[Color::Red, Color::Green]);
    }
}
