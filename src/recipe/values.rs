//! The recipe's own value types (the owners' types live with their owners): the learning-rate
//! schedule, and output paths that can be switched off.

use std::fmt;
use std::path::PathBuf;

use serde::{de, Deserializer, Serialize, Serializer};

crate::config::named_enum!(
    /// Learning-rate schedule after warmup.
    Scheduler, "scheduler", {
        Constant = "constant",
        Linear = "linear",
        Cosine = "cosine",
    }
);

#[allow(clippy::derivable_impls)] // the enum is declared by a macro
impl Default for Scheduler {
    fn default() -> Self {
        Scheduler::Cosine
    }
}

/// An output path that can be switched off: a path, `false` (off), or `true`/absent
/// (the default location, left empty here and filled in by `Recipe::load`).
pub(crate) mod toggle_path {
    use super::*;

    pub fn serialize<S: Serializer>(
        v: &Option<PathBuf>,
        s: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        match v {
            Some(p) => p.serialize(s),
            None => s.serialize_bool(false),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<Option<PathBuf>, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Option<PathBuf>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a path, or false to switch it off")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> std::result::Result<Self::Value, E> {
                Ok(v.then(PathBuf::new))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Self::Value, E> {
                Ok(Some(PathBuf::from(v)))
            }
            fn visit_unit<E: de::Error>(self) -> std::result::Result<Self::Value, E> {
                Ok(Some(PathBuf::new()))
            }
        }
        d.deserialize_any(V)
    }
}
