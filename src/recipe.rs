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

use crate::config::null_default;
use crate::error::Result;
use crate::eval::{EvalPlan, EvalSettings, TrainedRun};
use crate::model::{LoadOptions, Loaded};
use crate::tokenizer::ChatTemplate;
use values::toggle_path;
pub use values::Scheduler;

/// The owners' config types a recipe composes, for callers that build recipes in code.
pub use crate::{
    data::{DatasetConfig, FieldMap, Format, Paths},
    device::DeviceSpec,
    eval::{EvalConfig, MmluConfig, SelectConfig, TaskConfig},
    lora::{LoraConfig, TargetModule, TargetModules},
    quant::BaseQuant,
    tokenizer::TemplateSpec,
};

/// A whole recipe: each section is the config type of the module that owns the concept
/// (`dataset:` is `data`'s, `lora:` is `lora`'s, `eval:` is `eval`'s), deserialized straight
/// from YAML. After [`Recipe::load`], `train.output_dir` and the `logging` paths are resolved
/// (never empty).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub model: ModelSpec,
    pub dataset: DatasetConfig,
    #[serde(default, deserialize_with = "null_default")]
    pub lora: LoraConfig,
    #[serde(default, deserialize_with = "null_default")]
    pub train: TrainSpec,
    #[serde(default, deserialize_with = "null_default")]
    pub logging: LoggingSpec,
    #[serde(default, deserialize_with = "null_default")]
    pub eval: EvalConfig,
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
    pub chat_template: Option<TemplateSpec>,
    #[serde(default)]
    pub device: DeviceSpec,
}

impl Recipe {
    /// How to load the base: the device, the base quantization and RoPE tables for
    /// `max_seq_len`, no adapters. Training, `ft eval RECIPE` and the dry run all start here,
    /// so eval never measures a different model than the one trained.
    pub fn load_options(&self) -> Result<LoadOptions> {
        Ok(LoadOptions {
            device: self.model.device.resolve()?,
            quantize: self.model.quantize.dtype(),
            max_positions: Some(self.dataset.max_seq_len.max(16)),
            adapters: Vec::new(),
        })
    }

    /// The chat template for `loaded` (this recipe's base): `model.chat_template`, else the
    /// model's own, else ChatML ([`ChatTemplate::choose`]).
    pub fn template(&self, loaded: &Loaded) -> Result<ChatTemplate> {
        ChatTemplate::choose(
            self.model.chat_template.as_ref(),
            loaded.template.as_ref(),
            &loaded.tokenizer,
        )
    }

    /// The run this recipe trains, as evaluation needs it: [`Recipe::load_options`],
    /// `model.chat_template`, the dataset, `train.seed` (the held-out split's), the batch size
    /// and the adapter folder (`train.output_dir`).
    pub fn trained_run(&self) -> Result<TrainedRun> {
        Ok(TrainedRun {
            base: self.model.path.clone(),
            load: self.load_options()?,
            template: self.model.chat_template.clone(),
            data: self.dataset.clone(),
            seed: self.train.seed,
            batch_size: self.train.batch_size,
            adapter: self.train.output_dir.clone(),
        })
    }

    /// What `ft eval RECIPE` runs: the `eval:` section and the held-out loss, on the base and
    /// on the trained adapter, with the model loaded exactly as training loaded it.
    pub fn eval_plan(&self, settings: &EvalSettings) -> Result<EvalPlan> {
        EvalPlan::for_run(&self.trained_run()?, &self.eval, settings)
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
    /// NEFTune: uniform noise of this magnitude on the input embeddings while training (0 = off).
    pub neftune_alpha: f64,
    /// LoRA+: the B matrices' learning rate is this multiple of `lr` (1 = plain LoRA).
    pub lora_plus_ratio: f64,
    /// Choose the final adapter by the task metric on validation questions.
    pub select: Option<SelectConfig>,
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
            neftune_alpha: 0.0,
            lora_plus_ratio: 1.0,
            select: None,
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

#[cfg(test)]
mod tests;
