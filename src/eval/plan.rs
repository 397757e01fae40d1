//! What `ft eval` runs and on which columns, and running it. Two ways to plan:
//!
//! - [`EvalPlan::for_run`]: a trained run (from `Recipe::eval_plan`): the base exactly as
//!   training loaded it (device, base quantization), training's chat template, the recipe's
//!   `eval:` section, and the held-out loss over the examples training held out, read and
//!   encoded as training did (format, fields, `max_seq_len`, `train_on_prompt`, batch size);
//!   columns "base" and "tuned" (the adapter in `train.output_dir`).
//! - [`EvalPlan::for_model`]: any model, with an adapter or a second model to compare, and the
//!   files given on the command line.
//!
//! [`EvalPlan::run`] loads the model once and evaluates every column; the CLI only draws
//! progress and prints the [`Results`].

use std::path::{Path, PathBuf};

use super::mmlu::{MmluOptions, Style};
use super::EvalConfig;
use crate::data::{read_examples, DatasetConfig, Example, Paths};
use crate::error::{Error, Result};
use crate::model::peft::CONFIG_FILE;
use crate::model::LoadOptions;
use crate::quant::MatmulMode;
use crate::tokenizer::TemplateSpec;

/// A trained run as evaluation needs it: the base and how training loaded it, its chat
/// template, its data (and the seed of its held-out split), its batch size, its adapter.
#[derive(Clone, Debug)]
pub struct TrainedRun {
    pub base: PathBuf,
    pub load: LoadOptions,
    pub template: Option<TemplateSpec>,
    pub data: DatasetConfig,
    pub seed: u64,
    pub batch_size: usize,
    /// The PEFT folder training wrote (`train.output_dir`).
    pub adapter: PathBuf,
}

/// How to run what a plan lists: the command line's settings, the same in both modes.
#[derive(Clone, Debug)]
pub struct EvalSettings {
    pub style: Style,
    /// MMLU shot pool (see [`MmluOptions::pool`]).
    pub pool: Option<usize>,
    /// Wrap MMLU prompts in the chat template.
    pub chat: bool,
    /// Reuse the KV cache of a few-shot prefix across questions.
    pub reuse_prefix: bool,
    /// Perplexity chunk length in tokens (also the least RoPE table length loaded).
    pub ctx: usize,
    /// Sliding-window stride for perplexity (default: llama.cpp's chunks).
    pub stride: Option<usize>,
    pub mode: MatmulMode,
}

impl Default for EvalSettings {
    fn default() -> Self {
        EvalSettings {
            style: Style::Letter,
            pool: None,
            chat: false,
            reuse_prefix: true,
            ctx: 512,
            stride: None,
            mode: MatmulMode::Exact,
        }
    }
}

/// MMLU questions and how to ask them.
#[derive(Clone, Debug)]
pub struct MmluPlan {
    pub path: PathBuf,
    /// `--subjects` spec: names, categories or `all`, comma-separated.
    pub subjects: String,
    pub options: MmluOptions,
    pub reuse_prefix: bool,
}

/// Perplexity of a plain text file.
#[derive(Clone, Debug)]
pub struct PerplexityPlan {
    pub path: PathBuf,
    pub ctx: usize,
    pub stride: Option<usize>,
}

/// Masked loss over dataset examples.
#[derive(Clone, Debug)]
pub struct LossPlan {
    /// Format and field names to read with; `max_seq_len` and `train_on_prompt` to encode with.
    pub data: DatasetConfig,
    /// A data file read with `data`'s format and fields; None: `data`'s held-out examples
    /// (its `eval` files, or its `eval_split` drawn with `seed`).
    pub file: Option<PathBuf>,
    pub seed: u64,
    pub batch_size: usize,
}

impl LossPlan {
    /// The examples to score.
    pub fn examples(&self) -> Result<Vec<Example>> {
        match &self.file {
            Some(p) => {
                Ok(
                    read_examples(std::slice::from_ref(p), self.data.format, &self.data.fields)?
                        .examples,
                )
            }
            None => Ok(self.data.read(self.seed)?.eval),
        }
    }
}

/// The held-out task (generate, then check facts).
#[derive(Clone, Debug)]
pub struct TaskPlan {
    pub path: PathBuf,
    pub max_new_tokens: usize,
    /// Also ask every question after this system prompt.
    pub system: Option<String>,
}

/// One column of the report: a label and the adapter slot (None = the base alone).
#[derive(Clone, Debug, PartialEq)]
pub struct Column {
    pub label: String,
    pub adapter: Option<usize>,
}

/// Everything `ft eval` will do.
#[derive(Clone, Debug)]
pub struct EvalPlan {
    pub model: PathBuf,
    /// How to load `model`: device, base quantization, adapters in slots 0, 1, ...
    pub load: LoadOptions,
    /// The chat template the user chose; resolved against the loaded model with
    /// [`crate::tokenizer::ChatTemplate::choose`], the rule training uses.
    pub template: Option<TemplateSpec>,
    pub columns: Vec<Column>,
    /// A second model evaluated with the same plan, as a last column labelled "compare".
    pub compare_model: Option<PathBuf>,
    pub mode: MatmulMode,
    pub mmlu: Option<MmluPlan>,
    pub perplexity: Option<PerplexityPlan>,
    pub loss: Option<LossPlan>,
    pub task: Option<TaskPlan>,
}

/// Whether `path` is a dataset file (scored as masked loss) rather than plain text.
fn is_data_file(path: &Path) -> bool {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    crate::data::EXTENSIONS.contains(&ext)
}

impl EvalPlan {
    /// The recipe's evaluation of a trained run: base vs tuned, the model exactly as trained.
    pub fn for_run(run: &TrainedRun, cfg: &EvalConfig, s: &EvalSettings) -> Result<EvalPlan> {
        if !run.adapter.join(CONFIG_FILE).exists() {
            return Err(Error::invalid(format!(
                "no trained adapter in train.output_dir `{}`; run `ft train` on the recipe first",
                run.adapter.display()
            )));
        }
        let loss = |file: Option<PathBuf>| LossPlan {
            data: run.data.clone(),
            file,
            seed: run.seed,
            batch_size: run.batch_size,
        };
        // The held-out loss of the run's eval data, and the perplexity of a general text: the
        // two halves of the quality card (a dataset file as `eval.perplexity` is scored as loss).
        let (perplexity, loss) = match &cfg.perplexity {
            Some(p) if is_data_file(p) => (None, Some(loss(Some(p.clone())))),
            Some(p) => (
                Some(text_plan(p, s)),
                run.data.has_eval().then(|| loss(None)),
            ),
            None => (None, run.data.has_eval().then(|| loss(None))),
        };
        Ok(EvalPlan {
            model: run.base.clone(),
            load: LoadOptions {
                max_positions: run.load.max_positions.map(|n| n.max(s.ctx).max(4096)),
                adapters: vec![run.adapter.clone()],
                ..run.load.clone()
            },
            template: run.template.clone(),
            columns: vec![
                Column {
                    label: "base".into(),
                    adapter: None,
                },
                Column {
                    label: "tuned".into(),
                    adapter: Some(0),
                },
            ],
            compare_model: None,
            mode: s.mode,
            mmlu: cfg.mmlu.as_ref().map(|m| MmluPlan {
                path: m.path.clone(),
                subjects: if m.subjects.is_empty() {
                    "all".into()
                } else {
                    m.subjects.join(",")
                },
                options: MmluOptions {
                    style: m.style,
                    ..mmlu_options(m.shots, m.limit, s)
                },
                reuse_prefix: s.reuse_prefix,
            }),
            perplexity,
            loss,
            task: cfg.task.as_ref().map(|t| TaskPlan {
                path: t.path.clone(),
                max_new_tokens: t.max_new_tokens,
                system: t.system.clone(),
            }),
        })
    }

    /// Any model (`load` without adapters), with `adapter` applied in the first column, and
    /// `compare` (an adapter folder on the same base, or another model) as a second column.
    /// Add what to measure with [`EvalPlan::with_mmlu`], [`EvalPlan::with_file`],
    /// [`EvalPlan::with_task`].
    pub fn for_model(
        model: &Path,
        load: LoadOptions,
        adapter: Option<&Path>,
        compare: Option<&Path>,
        s: &EvalSettings,
    ) -> EvalPlan {
        let mut load = LoadOptions {
            max_positions: Some(s.ctx.max(4096)),
            adapters: adapter.iter().map(|a| a.to_path_buf()).collect(),
            ..load
        };
        let mut columns = vec![Column {
            label: if adapter.is_some() {
                "adapter"
            } else {
                "model"
            }
            .into(),
            adapter: adapter.map(|_| 0),
        }];
        let mut compare_model = None;
        if let Some(c) = compare {
            if c.join(CONFIG_FILE).exists() {
                load.adapters.push(c.to_path_buf());
                columns.push(Column {
                    label: "compare".into(),
                    adapter: Some(load.adapters.len() - 1),
                });
            } else {
                compare_model = Some(c.to_path_buf());
            }
        }
        EvalPlan {
            model: model.to_path_buf(),
            load,
            template: None,
            columns,
            compare_model,
            mode: s.mode,
            mmlu: None,
            perplexity: None,
            loss: None,
            task: None,
        }
    }

    /// MMLU from `path`: `subjects` spec, `shots` per question, at most `limit` per subject.
    pub fn with_mmlu(
        mut self,
        path: &Path,
        subjects: &str,
        shots: usize,
        limit: Option<usize>,
        s: &EvalSettings,
    ) -> Self {
        self.mmlu = Some(MmluPlan {
            path: path.to_path_buf(),
            subjects: subjects.to_string(),
            options: mmlu_options(shots, limit, s),
            reuse_prefix: s.reuse_prefix,
        });
        self
    }

    /// Perplexity of a text file, or masked loss of a dataset file read as `format` with the
    /// standard field names, truncated at `s.ctx` tokens.
    pub fn with_file(mut self, path: &Path, format: crate::data::Format, s: &EvalSettings) -> Self {
        if is_data_file(path) {
            let mut data = DatasetConfig::new(Paths(vec![path.display().to_string()]));
            data.format = format;
            data.max_seq_len = s.ctx;
            self.loss = Some(LossPlan {
                data,
                file: Some(path.to_path_buf()),
                seed: 0,
                batch_size: 4,
            });
        } else {
            self.perplexity = Some(text_plan(path, s));
        }
        self
    }

    /// The task set at `path`, `max_new_tokens` per answer.
    pub fn with_task(mut self, path: &Path, max_new_tokens: usize) -> Self {
        self.task = Some(TaskPlan {
            path: path.to_path_buf(),
            max_new_tokens,
            system: None,
        });
        self
    }

    /// Whether the plan measures anything.
    pub fn is_empty(&self) -> bool {
        self.mmlu.is_none()
            && self.perplexity.is_none()
            && self.loss.is_none()
            && self.task.is_none()
    }
}

fn text_plan(path: &Path, s: &EvalSettings) -> PerplexityPlan {
    PerplexityPlan {
        path: path.to_path_buf(),
        ctx: s.ctx,
        stride: s.stride,
    }
}

fn mmlu_options(shots: usize, limit: Option<usize>, s: &EvalSettings) -> MmluOptions {
    MmluOptions {
        shots,
        limit,
        style: s.style,
        pool: s.pool,
        chat: s.chat,
    }
}
