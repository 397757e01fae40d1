//! MMLU (Hendrycks et al. 2021, arXiv:2009.03300), the model-independent half of `ft eval mmlu`:
//! load questions ([`load`]), pick subjects ([`select`]), build lm-evaluation-harness prompts
//! ([`build_items`]), and count answers from any [`ChoiceScorer`] into an [`MmluReport`]
//! (`crate::eval::report`).
//!
//! ```ignore
//! let ds = mmlu::load(Path::new("datasets/mmlu/mmlu.jsonl"))?;
//! let subjects = mmlu::select(&ds, "stem,marketing")?;
//! let report = mmlu::run(&ds, &subjects, &MmluOptions::default(), &mut model, |done, total| ())?;
//! ```

mod load;
mod prompt;
mod score;
mod subjects;

pub use load::{canonical_subject, load, Dataset, Question, Skip, Subject};
pub use prompt::{
    build_items, build_items_with_dev, display_subject, format_question, format_shot, header,
    py_strip, Item, Style, LETTERS,
};
pub use score::{run, ChoiceScorer, MmluOptions};
pub use subjects::{category_of, select, Category, CATEGORIES, SUBJECTS};

pub use crate::eval::report::MmluReport;
