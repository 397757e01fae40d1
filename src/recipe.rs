//! The typed recipe behind `ft train` / `ft eval`: one YAML file, deserialized straight into
//! [`Recipe`] (unknown keys rejected), with defaults < YAML < `--set key.path=value`, then
//! [`Recipe::validate`]. Every error is one line naming the place and the key:
//! `recipes/x.yaml:12:5: lora.r must be > 0 (got 0)`. Nothing here touches model or data
//! files; [`Recipe::check_paths`] does that, separately, so dry runs work without weights.
//! `recipes/README.md` documents every key.

mod load;
mod location;
mod schema;
mod validate;
mod values;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use validate::MMLU_SUBJECTS;
use values::{list_or_csv, null_default, null_some_default, toggle_path};
pub use values::{
    BaseQuant, ChatTemplate, DataFormat, DeviceSpec, Paths, Scheduler, TargetModule, TargetModules,
};

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

#[cfg(test)]
mod tests;
