//! The typed recipe behind `ft train` / `ft eval`: one YAML file, deserialized straight into
//! [`Recipe`] (unknown keys rejected), with defaults < YAML < `--set key.path=value`, then
//! [`Recipe::validate`]. Every error is one line naming the place and the key:
//! `recipes/x.yaml:12:5: lora.r must be > 0 (got 0)`. Nothing here touches model or data
//! files; [`Recipe::check_paths`] does that, separately, so dry runs work without weights.
//! `recipes/README.md` documents every key.

mod load;
mod location;
mod schema;
mod values;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
pub use values::{
    BaseQuant, ChatTemplate, DataFormat, DeviceSpec, Paths, Scheduler, TargetModule, TargetModules,
};
use values::{list_or_csv, null_default, null_some_default, toggle_path};

/// A whole recipe. After [`Recipe::load`], `train.output_dir` and the `logging` paths are
/// resolved (never empty).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub model: ModelSpec,
    pub dataset: DatasetSpec,
    #[serde(default, deserialize_with = "null_default")]
    pub lora: LoraSpec,
    #[serde(default, deserialize_with = "null_default")]
    pub train: TrainSpec,
    #[serde(default, deserialize_with = "null_default")]
    pub logging: LoggingSpec,
    #[serde(default, deserialize_with = "null_default")]
    pub eval: EvalSpec,
}

/// `model:` the frozen base.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// A GGUF file or a Hugging Face folder (config.json + safetensors + tokenizer.json),
    /// relative to the current directory.
    pub path: PathBuf,
    /// In-memory form of an unquantized base (default q4_0); quantized GGUF tensors stay as is.
    #[serde(default)]
    pub quantize: BaseQuant,
    /// Overrides the model's own chat template.
    #[serde(default)]
    pub chat_template: Option<ChatTemplate>,
    #[serde(default)]
    pub device: DeviceSpec,
}

/// `dataset:` what to train and evaluate on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetSpec {
    /// jsonl or parquet files: one path, a list, or globs.
    pub train: Paths,
    /// Held-out files for eval loss; or use `eval_split`.
    #[serde(default)]
    pub eval: Option<Paths>,
    /// Fraction of `train` held out for eval, chosen deterministically from `train.seed`.
    #[serde(default)]
    pub eval_split: Option<f64>,
    #[serde(default)]
    pub format: DataFormat,
    /// Column names, when they differ from the standard ones.
    #[serde(default, deserialize_with = "null_default")]
    pub fields: Fields,
    /// Tokens per example after templating; longer ones are truncated.
    #[serde(default = "d_max_seq_len")]
    pub max_seq_len: usize,
    /// Concatenate short examples into full `max_seq_len` rows.
    #[serde(default)]
    pub packing: bool,
    /// Also train on prompt/user tokens (default: only on the answer).
    #[serde(default)]
    pub train_on_prompt: bool,
}

/// `dataset.fields:` column names in the data files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Fields {
    pub messages: String,
    pub instruction: String,
    pub input: String,
    pub output: String,
    pub prompt: String,
    pub completion: String,
    pub text: String,
    pub role: String,
    pub content: String,
}

impl Default for Fields {
    fn default() -> Self {
        Fields {
            messages: "messages".into(),
            instruction: "instruction".into(),
            input: "input".into(),
            output: "output".into(),
            prompt: "prompt".into(),
            completion: "completion".into(),
            text: "text".into(),
            role: "role".into(),
            content: "content".into(),
        }
    }
}

/// `lora:` the adapter's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoraSpec {
    pub r: usize,
    pub alpha: f64,
    pub dropout: f64,
    pub target_modules: TargetModules,
    /// rsLoRA: scale by alpha/sqrt(r) instead of alpha/r.
    pub rslora: bool,
}

impl Default for LoraSpec {
    fn default() -> Self {
        LoraSpec {
            r: 16,
            alpha: 32.0,
            dropout: 0.05,
            target_modules: TargetModules::AllLinear,
            rslora: false,
        }
    }
}

impl LoraSpec {
    /// The factor on `B·A`: alpha/r, or alpha/sqrt(r) with rsLoRA.
    pub fn scale(&self) -> f64 {
        let r = self.r as f64;
        if self.rslora {
            self.alpha / r.sqrt()
        } else {
            self.alpha / r
        }
    }
}

/// `train:` the optimisation. A step is one optimizer update (`batch_size * grad_accum` rows).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSpec {
    pub epochs: usize,
    /// Overrides `epochs` when set.
    pub max_steps: Option<usize>,
    pub batch_size: usize,
    pub grad_accum: usize,
    pub lr: f64,
    pub scheduler: Scheduler,
    pub warmup_steps: usize,
    pub warmup_ratio: f64,
    pub weight_decay: f64,
    /// Clip the global gradient norm; 0 disables.
    pub max_grad_norm: f64,
    pub seed: u64,
    pub grad_checkpointing: bool,
    pub eval_every: Option<usize>,
    pub save_every: Option<usize>,
    pub keep_checkpoints: usize,
    /// Default `runs/<recipe file stem>`.
    pub output_dir: PathBuf,
    pub log_every: usize,
}

impl Default for TrainSpec {
    fn default() -> Self {
        TrainSpec {
            epochs: 1,
            max_steps: None,
            batch_size: 4,
            grad_accum: 1,
            lr: 2e-4,
            scheduler: Scheduler::Cosine,
            warmup_steps: 0,
            warmup_ratio: 0.0,
            weight_decay: 0.0,
            max_grad_norm: 1.0,
            seed: 42,
            grad_checkpointing: false,
            eval_every: None,
            save_every: None,
            keep_checkpoints: 3,
            output_dir: PathBuf::new(),
            log_every: 1,
        }
    }
}

impl TrainSpec {
    /// Optimizer steps for a run over `examples` training rows (after packing):
    /// `max_steps`, or `epochs * ceil(ceil(examples / batch_size) / grad_accum)`.
    pub fn total_steps(&self, examples: usize) -> usize {
        if let Some(m) = self.max_steps {
            return m;
        }
        let batches = examples.div_ceil(self.batch_size.max(1));
        self.epochs * batches.div_ceil(self.grad_accum.max(1))
    }

    /// Warmup steps for a run of `total` steps: `warmup_steps`, or `warmup_ratio * total` rounded up.
    pub fn warmup_for(&self, total: usize) -> usize {
        if self.warmup_steps > 0 {
            self.warmup_steps
        } else {
            (self.warmup_ratio * total as f64).ceil() as usize
        }
    }
}

/// `logging:` where metrics go. `None` = switched off (`false` in YAML).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingSpec {
    /// TensorBoard event dir; default `<output_dir>/tb`.
    #[serde(with = "toggle_path")]
    pub tensorboard: Option<PathBuf>,
    /// One JSON object per logged step; default `<output_dir>/metrics.jsonl`.
    #[serde(with = "toggle_path")]
    pub metrics_jsonl: Option<PathBuf>,
}

impl Default for LoggingSpec {
    fn default() -> Self {
        // Empty = "the default location", filled in by `Recipe::load` once output_dir is known.
        LoggingSpec {
            tensorboard: Some(PathBuf::new()),
            metrics_jsonl: Some(PathBuf::new()),
        }
    }
}

/// `eval:` what `ft eval RECIPE` runs; each present subsection runs.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalSpec {
    #[serde(deserialize_with = "null_some_default")]
    pub mmlu: Option<MmluSpec>,
    pub task: Option<TaskSpec>,
    /// A jsonl/text file to report perplexity on.
    pub perplexity: Option<PathBuf>,
}

/// `eval.mmlu:` multiple-choice accuracy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MmluSpec {
    pub path: PathBuf,
    /// Subject names (`high school geography`); empty = all 57.
    #[serde(deserialize_with = "list_or_csv")]
    pub subjects: Vec<String>,
    pub shots: usize,
    /// At most this many questions per subject.
    pub limit: Option<usize>,
}

impl Default for MmluSpec {
    fn default() -> Self {
        MmluSpec {
            path: PathBuf::from("datasets/mmlu/mmlu.jsonl"),
            subjects: Vec::new(),
            shots: 0,
            limit: None,
        }
    }
}

/// `eval.task:` generate answers for held-out prompts and score them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    pub path: PathBuf,
    #[serde(default = "d_max_new_tokens")]
    pub max_new_tokens: usize,
}

fn d_max_seq_len() -> usize {
    512
}
fn d_max_new_tokens() -> usize {
    128
}

/// The 57 MMLU subjects, as `datasets/mmlu/mmlu.jsonl` spells them (`topic`).
pub const MMLU_SUBJECTS: &[&str] = &[
    "abstract algebra", "anatomy", "astronomy", "business ethics", "clinical knowledge",
    "college biology", "college chemistry", "college computer science", "college mathematics",
    "college medicine", "college physics", "computer security", "conceptual physics",
    "econometrics", "electrical engineering", "elementary mathematics", "formal logic",
    "global facts", "high school biology", "high school chemistry",
    "high school computer science", "high school european history", "high school geography",
    "high school government and politics", "high school macroeconomics",
    "high school mathematics", "high school microeconomics", "high school physics",
    "high school psychology", "high school statistics", "high school us history",
    "high school world history", "human aging", "human sexuality", "international law",
    "jurisprudence", "logical fallacies", "machine learning", "management", "marketing",
    "medical genetics", "miscellaneous", "moral disputes", "moral scenarios", "nutrition",
    "philosophy", "prehistory", "professional accounting", "professional law",
    "professional medicine", "professional psychology", "public relations",
    "security studies", "sociology", "us foreign policy", "virology", "world religions",
];

/// A failed check: the key to point at and the one-line message.
pub(crate) struct Problem {
    pub key: &'static str,
    pub msg: String,
}

macro_rules! ensure {
    ($cond:expr, $key:literal, $($fmt:tt)+) => {
        if !($cond) {
            return Err(Problem { key: $key, msg: format!($($fmt)+) });
        }
    };
}

impl Recipe {
    /// Range and consistency checks (no file access). Errors name the key but not the
    /// place; [`Recipe::load`] and [`Recipe::from_str`] add `file:line:col`.
    pub fn validate(&self) -> Result<()> {
        self.check().map_err(|p| Error::Recipe { msg: p.msg })
    }

    pub(crate) fn check(&self) -> std::result::Result<(), Problem> {
        let (d, l, t) = (&self.dataset, &self.lora, &self.train);
        ensure!(!self.model.path.as_os_str().is_empty(), "model.path", "model.path must not be empty");
        if let Some(s) = d.eval_split {
            ensure!(s > 0.0 && s < 1.0, "dataset.eval_split", "dataset.eval_split must be in (0, 1) (got {s})");
            ensure!(d.eval.is_none(), "dataset.eval_split", "set dataset.eval or dataset.eval_split, not both");
        }
        ensure!(d.max_seq_len >= 8, "dataset.max_seq_len", "dataset.max_seq_len must be >= 8 (got {})", d.max_seq_len);
        ensure!(l.r > 0, "lora.r", "lora.r must be > 0 (got {})", l.r);
        ensure!(l.alpha > 0.0 && l.alpha.is_finite(), "lora.alpha", "lora.alpha must be > 0 (got {})", l.alpha);
        ensure!((0.0..1.0).contains(&l.dropout), "lora.dropout", "lora.dropout must be in [0, 1) (got {})", l.dropout);
        ensure!(t.lr > 0.0 && t.lr.is_finite(), "train.lr", "train.lr must be > 0 (got {})", t.lr);
        ensure!(t.batch_size >= 1, "train.batch_size", "train.batch_size must be >= 1 (got {})", t.batch_size);
        ensure!(t.grad_accum >= 1, "train.grad_accum", "train.grad_accum must be >= 1 (got {})", t.grad_accum);
        match t.max_steps {
            Some(m) => ensure!(m >= 1, "train.max_steps", "train.max_steps must be >= 1 (got {m})"),
            None => ensure!(t.epochs >= 1, "train.epochs", "train.epochs must be >= 1 unless train.max_steps is set (got {})", t.epochs),
        }
        ensure!((0.0..1.0).contains(&t.warmup_ratio), "train.warmup_ratio", "train.warmup_ratio must be in [0, 1) (got {})", t.warmup_ratio);
        ensure!(t.warmup_steps == 0 || t.warmup_ratio == 0.0, "train.warmup_ratio", "set train.warmup_steps or train.warmup_ratio, not both");
        ensure!(t.weight_decay >= 0.0 && t.weight_decay.is_finite(), "train.weight_decay", "train.weight_decay must be >= 0 (got {})", t.weight_decay);
        ensure!(t.max_grad_norm >= 0.0 && t.max_grad_norm.is_finite(), "train.max_grad_norm", "train.max_grad_norm must be >= 0; 0 disables clipping (got {})", t.max_grad_norm);
        if let Some(e) = t.eval_every {
            ensure!(e >= 1, "train.eval_every", "train.eval_every must be >= 1 (got {e})");
            ensure!(d.eval.is_some() || d.eval_split.is_some(), "train.eval_every", "train.eval_every needs eval data: set dataset.eval or dataset.eval_split");
        }
        if let Some(s) = t.save_every {
            ensure!(s >= 1, "train.save_every", "train.save_every must be >= 1 (got {s})");
        }
        ensure!(t.keep_checkpoints >= 1, "train.keep_checkpoints", "train.keep_checkpoints must be >= 1 (got {})", t.keep_checkpoints);
        ensure!(t.log_every >= 1, "train.log_every", "train.log_every must be >= 1 (got {})", t.log_every);
        if let Some(m) = &self.eval.mmlu {
            for s in &m.subjects {
                let norm = s.replace('_', " ").to_ascii_lowercase();
                if !MMLU_SUBJECTS.contains(&norm.as_str()) {
                    let hint = schema::closest(&norm, MMLU_SUBJECTS)
                        .map(|n| format!("; did you mean `{n}`?"))
                        .unwrap_or_default();
                    return Err(Problem { key: "eval.mmlu.subjects", msg: format!("eval.mmlu.subjects: unknown subject `{s}`{hint}") });
                }
            }
            if let Some(n) = m.limit {
                ensure!(n >= 1, "eval.mmlu.limit", "eval.mmlu.limit must be >= 1 (got {n})");
            }
        }
        if let Some(task) = &self.eval.task {
            ensure!(task.max_new_tokens >= 1, "eval.task.max_new_tokens", "eval.task.max_new_tokens must be >= 1 (got {})", task.max_new_tokens);
        }
        Ok(())
    }

    /// Check that the base model and the dataset files exist (globs expanded), naming the
    /// key: ``dataset.train: no file matches `datasets/x/*.jsonl` ``. Call before loading.
    pub fn check_paths(&self) -> Result<()> {
        if !self.model.path.exists() {
            return Err(values::recipe_err(
                "model.path",
                &format!("`{}` does not exist{}", self.model.path.display(), values::cwd_note()),
            ));
        }
        self.dataset.train.resolve("dataset.train")?;
        if let Some(e) = &self.dataset.eval {
            e.resolve("dataset.eval")?;
        }
        Ok(())
    }
}

impl EvalSpec {
    /// Check that the files the present eval subsections read exist.
    pub fn check_paths(&self) -> Result<()> {
        let files = [
            self.mmlu.as_ref().map(|m| ("eval.mmlu.path", &m.path)),
            self.task.as_ref().map(|t| ("eval.task.path", &t.path)),
            self.perplexity.as_ref().map(|p| ("eval.perplexity", p)),
        ];
        for (key, path) in files.into_iter().flatten() {
            if !path.exists() {
                let msg = format!("`{}` does not exist{}", path.display(), values::cwd_note());
                return Err(values::recipe_err(key, &msg));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
