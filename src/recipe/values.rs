//! The recipe's value types. In YAML every enum is a plain lowercase string (no `!tags`);
//! in Rust each is a typed enum, so a typo fails at load with the list of valid spellings.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use super::schema::closest;
use crate::error::{Error, Result};

/// "unknown value `x`; expected one of `a`, `b`; did you mean `a`?"
fn unknown(what: &str, got: &str, valid: &[&str]) -> String {
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

/// Serde through `FromStr`/`Display`: YAML sees a plain string, Rust a typed value.
macro_rules! serde_via_str {
    ($ty:ty, $expecting:expr) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                struct V;
                impl de::Visitor<'_> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<$ty, E> {
                        v.parse().map_err(E::custom)
                    }
                }
                d.deserialize_str(V)
            }
        }
    };
}

/// A string-named enum: variants, their YAML names, Display, FromStr and serde.
macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal, { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            /// Every value, in the order the docs list them.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// The YAML spelling.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result { f.write_str(self.as_str()) }
        }
        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> std::result::Result<Self, String> {
                match s.trim().to_ascii_lowercase().as_str() {
                    $($text => Ok($name::$variant),)+
                    other => Err(unknown($what, other, &[$($text),+])),
                }
            }
        }
        serde_via_str!($name, concat!("a ", $what, " name (string)"));
    };
}

named_enum!(
    /// In-memory form of the frozen base weights when the model arrives unquantized
    /// (an HF folder or an f16/f32 GGUF). Already-quantized GGUF tensors are kept as they are.
    BaseQuant, "quantization", {
        Q4_0 = "q4_0",
        Q4K = "q4_k",
        Q8_0 = "q8_0",
        F16 = "f16",
        /// `none`: keep the weights in the dtype the file stores them in.
        Keep = "none",
    }
);

/// QLoRA's point is a 4-bit base; q4_0 also has candle's fastest CPU kernel.
impl Default for BaseQuant {
    fn default() -> Self {
        BaseQuant::Q4_0
    }
}

named_enum!(
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

named_enum!(
    /// The shape of one dataset record.
    DataFormat, "dataset format", {
        /// `{"messages": [{"role", "content"}, ...]}`
        Chat = "chat",
        /// `{"instruction", "input"?, "output"}` (alpaca)
        Instruction = "instruction",
        /// `{"prompt", "completion"}`
        Completion = "completion",
        /// `{"text"}`: plain language modelling, every token trained
        Text = "text",
    }
);

#[allow(clippy::derivable_impls)] // the enum is declared by a macro
impl Default for DataFormat {
    fn default() -> Self {
        DataFormat::Chat
    }
}

named_enum!(
    /// A linear layer of a Llama block that can carry a LoRA adapter (HF names).
    TargetModule, "target module", {
        QProj = "q_proj",
        KProj = "k_proj",
        VProj = "v_proj",
        OProj = "o_proj",
        GateProj = "gate_proj",
        UpProj = "up_proj",
        DownProj = "down_proj",
    }
);

/// `lora.target_modules`: `all-linear` or a list of [`TargetModule`] names.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TargetModules {
    /// Every linear layer of every block (not `lm_head`), as the QLoRA paper recommends.
    #[default]
    AllLinear,
    List(Vec<TargetModule>),
}

impl TargetModules {
    /// The selected modules, in block order.
    pub fn modules(&self) -> Vec<TargetModule> {
        match self {
            TargetModules::AllLinear => TargetModule::ALL.to_vec(),
            TargetModules::List(l) => l.clone(),
        }
    }

    /// Whether the layer named `name` (e.g. `q_proj`) gets an adapter.
    pub fn contains(&self, name: &str) -> bool {
        self.modules().iter().any(|m| m.as_str() == name)
    }
}

impl Serialize for TargetModules {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            TargetModules::AllLinear => s.serialize_str("all-linear"),
            TargetModules::List(l) => s.collect_seq(l.iter().map(|m| m.as_str())),
        }
    }
}

impl TargetModules {
    fn from_names(names: &[String]) -> std::result::Result<Self, String> {
        if let [one] = names {
            if matches!(one.as_str(), "all-linear" | "all_linear") {
                return Ok(TargetModules::AllLinear);
            }
        }
        let mut out = Vec::new();
        for n in names {
            let m: TargetModule = n
                .parse()
                .map_err(|e: String| format!("{e} or `all-linear`"))?;
            if out.contains(&m) {
                return Err(format!("`{m}` is listed twice"));
            }
            out.push(m);
        }
        if out.is_empty() {
            return Err("empty list; name at least one module or use `all-linear`".into());
        }
        Ok(TargetModules::List(out))
    }
}

impl<'de> Deserialize<'de> for TargetModules {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        // Checked inside the visitor, so serde's error carries this key's path and position.
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = TargetModules;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`all-linear` or a list of module names")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<TargetModules, E> {
                TargetModules::from_names(&csv(v)).map_err(E::custom)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(
                self,
                seq: A,
            ) -> std::result::Result<TargetModules, A::Error> {
                TargetModules::from_names(&strings(seq)?).map_err(de::Error::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// `model.device`: where the model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    #[default]
    Cpu,
    /// `cuda` is `cuda:0`.
    Cuda(usize),
    /// CUDA device 0 when the binary has CUDA support and a GPU is present, else CPU.
    Auto,
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(0) => f.write_str("cuda"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
            DeviceSpec::Auto => f.write_str("auto"),
        }
    }
}

impl FromStr for DeviceSpec {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "cpu" => return Ok(DeviceSpec::Cpu),
            "cuda" | "gpu" => return Ok(DeviceSpec::Cuda(0)),
            "auto" => return Ok(DeviceSpec::Auto),
            _ => {}
        }
        if let Some(n) = s.strip_prefix("cuda:") {
            return n
                .parse()
                .map(DeviceSpec::Cuda)
                .map_err(|_| format!("bad device `{s}`: expected cuda:N with N a GPU index"));
        }
        Err(unknown("device", &s, &["cpu", "cuda", "cuda:N", "auto"]))
    }
}

serde_via_str!(DeviceSpec, "a device: cpu, cuda, cuda:N or auto");

/// `model.chat_template`: a builtin by name, or a Jinja template string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatTemplate {
    Chatml,
    Llama3,
    Mistral,
    Jinja(String),
}

impl ChatTemplate {
    pub const BUILTINS: &'static [&'static str] = &["chatml", "llama3", "mistral"];
}

impl fmt::Display for ChatTemplate {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            ChatTemplate::Chatml => "chatml",
            ChatTemplate::Llama3 => "llama3",
            ChatTemplate::Mistral => "mistral",
            ChatTemplate::Jinja(t) => t,
        })
    }
}

impl FromStr for ChatTemplate {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        // A template always has a tag or an expression; a bare word is a builtin name.
        if s.contains("{%") || s.contains("{{") {
            return Ok(ChatTemplate::Jinja(s.to_string()));
        }
        match s.trim().to_ascii_lowercase().as_str() {
            "chatml" => Ok(ChatTemplate::Chatml),
            "llama3" | "llama-3" => Ok(ChatTemplate::Llama3),
            "mistral" => Ok(ChatTemplate::Mistral),
            other => Err(format!(
                "{}, or a Jinja template (containing `{{{{` or `{{%`)",
                unknown("builtin chat template", other, Self::BUILTINS)
            )),
        }
    }
}

serde_via_str!(
    ChatTemplate,
    "a builtin chat template name or a Jinja template string"
);

/// One path, a list of paths, or glob patterns (`datasets/x/*.jsonl`), as written.
/// Nothing touches the disk until [`Paths::resolve`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Paths(pub Vec<String>);

impl Paths {
    /// Expand globs and check that each entry names at least one existing file, in the
    /// order written (glob matches sorted). `key` names the recipe key in errors.
    pub fn resolve(&self, key: &str) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for pat in &self.0 {
            if pat.contains(['*', '?', '[']) {
                let matches = glob::glob(pat)
                    .map_err(|e| recipe_err(key, &format!("bad glob `{pat}`: {e}")))?;
                let mut found: Vec<PathBuf> = matches
                    .filter_map(|m| m.ok())
                    .filter(|p| p.is_file())
                    .collect();
                if found.is_empty() {
                    return Err(recipe_err(
                        key,
                        &format!("no file matches `{pat}`{}", cwd_note()),
                    ));
                }
                found.sort();
                out.extend(found);
            } else if Path::new(pat).exists() {
                out.push(PathBuf::from(pat));
            } else {
                return Err(recipe_err(
                    key,
                    &format!("`{pat}` does not exist{}", cwd_note()),
                ));
            }
        }
        Ok(out)
    }
}

pub(crate) fn recipe_err(key: &str, msg: &str) -> Error {
    Error::Recipe {
        msg: format!("{key}: {msg}"),
    }
}

/// Relative paths are relative to where ft runs; say where that is.
pub(crate) fn cwd_note() -> String {
    match std::env::current_dir() {
        Ok(d) => format!(" (relative to the current directory {})", d.display()),
        Err(_) => String::new(),
    }
}

impl Serialize for Paths {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => s.serialize_str(one),
            many => s.collect_seq(many),
        }
    }
}

impl<'de> Deserialize<'de> for Paths {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Paths;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a path, a glob pattern, or a list of them")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Paths, E> {
                if v.trim().is_empty() {
                    return Err(E::custom("empty path"));
                }
                Ok(Paths(vec![v.to_string()]))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<Paths, A::Error> {
                let mut out = Vec::new();
                while let Some(p) = seq.next_element::<String>()? {
                    if p.trim().is_empty() {
                        return Err(de::Error::custom("empty path in list"));
                    }
                    out.push(p);
                }
                if out.is_empty() {
                    return Err(de::Error::custom("empty list of paths"));
                }
                Ok(Paths(out))
            }
        }
        d.deserialize_any(V)
    }
}

fn csv(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

fn strings<'de, A: de::SeqAccess<'de>>(mut seq: A) -> std::result::Result<Vec<String>, A::Error> {
    let mut out = Vec::new();
    while let Some(s) = seq.next_element::<String>()? {
        out.push(s.trim().to_string());
    }
    Ok(out)
}

/// A list of strings, or one comma-separated string (`"marketing, virology"`); entries trimmed.
pub(crate) fn list_or_csv<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Vec<String>, D::Error> {
    struct V;
    impl<'de> de::Visitor<'de> for V {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list of names or a comma-separated string")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Vec<String>, E> {
            Ok(csv(v))
        }
        fn visit_seq<A: de::SeqAccess<'de>>(
            self,
            seq: A,
        ) -> std::result::Result<Vec<String>, A::Error> {
            strings(seq)
        }
    }
    d.deserialize_any(V)
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

/// A section written as an empty key (`lora:` with nothing under it) means "all defaults".
pub(crate) fn null_default<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Like [`null_default`] for an optional section: present-but-empty means "run with defaults".
pub(crate) fn null_some_default<'de, D, T>(d: D) -> std::result::Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Some(Option::<T>::deserialize(d)?.unwrap_or_default()))
}
