//! The 57 MMLU subjects, their four categories, and `--subjects` selection.
//!
//! The category of each subject follows lm-evaluation-harness (`lm_eval/tasks/mmlu/_generate_configs.py`,
//! the `mmlu_stem`, `mmlu_humanities`, `mmlu_social_sciences`, `mmlu_other` groups): 19 + 13 + 12 + 13.

use serde::{Deserialize, Serialize};

use super::load::Dataset;
use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Stem,
    Humanities,
    SocialSciences,
    Other,
}

pub const CATEGORIES: [Category; 4] = [
    Category::Stem,
    Category::Humanities,
    Category::SocialSciences,
    Category::Other,
];

impl Category {
    /// The name accepted by [`select`] and shown in reports.
    pub fn name(self) -> &'static str {
        match self {
            Category::Stem => "stem",
            Category::Humanities => "humanities",
            Category::SocialSciences => "social_sciences",
            Category::Other => "other",
        }
    }
}

use Category::{Humanities as H, Other as O, SocialSciences as S, Stem as T};

/// lm-evaluation-harness's subject → category table.
pub const SUBJECTS: [(&str, Category); 57] = [
    ("abstract_algebra", T),
    ("anatomy", T),
    ("astronomy", T),
    ("business_ethics", O),
    ("clinical_knowledge", O),
    ("college_biology", T),
    ("college_chemistry", T),
    ("college_computer_science", T),
    ("college_mathematics", T),
    ("college_medicine", O),
    ("college_physics", T),
    ("computer_security", T),
    ("conceptual_physics", T),
    ("econometrics", S),
    ("electrical_engineering", T),
    ("elementary_mathematics", T),
    ("formal_logic", H),
    ("global_facts", O),
    ("high_school_biology", T),
    ("high_school_chemistry", T),
    ("high_school_computer_science", T),
    ("high_school_european_history", H),
    ("high_school_geography", S),
    ("high_school_government_and_politics", S),
    ("high_school_macroeconomics", S),
    ("high_school_mathematics", T),
    ("high_school_microeconomics", S),
    ("high_school_physics", T),
    ("high_school_psychology", S),
    ("high_school_statistics", T),
    ("high_school_us_history", H),
    ("high_school_world_history", H),
    ("human_aging", O),
    ("human_sexuality", S),
    ("international_law", H),
    ("jurisprudence", H),
    ("logical_fallacies", H),
    ("machine_learning", T),
    ("management", O),
    ("marketing", O),
    ("medical_genetics", O),
    ("miscellaneous", O),
    ("moral_disputes", H),
    ("moral_scenarios", H),
    ("nutrition", O),
    ("philosophy", H),
    ("prehistory", H),
    ("professional_accounting", O),
    ("professional_law", H),
    ("professional_medicine", O),
    ("professional_psychology", S),
    ("public_relations", S),
    ("security_studies", S),
    ("sociology", S),
    ("us_foreign_policy", S),
    ("virology", O),
    ("world_religions", H),
];

/// The matching key of a name: lower case, words (split at space, `_`, `-`) joined by `_`.
fn key(name: &str) -> String {
    name.split(|c: char| c == '_' || c == '-' || c.is_whitespace())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join("_")
        .to_lowercase()
}

/// The MMLU category of a subject (any spelling), `None` for a subject outside the 57.
pub fn category_of(subject: &str) -> Option<Category> {
    let k = key(subject);
    SUBJECTS.iter().find(|s| s.0 == k).map(|s| s.1)
}

/// Resolve a comma-separated `--subjects` spec to the data set's subject names, in data set order.
///
/// Each item is `all`, a category (`stem`, `humanities`, `social sciences`, `other`) or a subject;
/// matching ignores case and treats spaces, `_` and `-` alike. An unknown item is an error that
/// lists the valid names.
pub fn select(ds: &Dataset, spec: &str) -> Result<Vec<String>> {
    let names = ds.names();
    let keys: Vec<String> = names.iter().map(|n| key(n)).collect();
    let mut chosen = vec![false; names.len()];
    let items: Vec<&str> = spec
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if items.is_empty() {
        return Err(Error::invalid(format!(
            "no MMLU subjects given; valid: {}",
            valid_names(&names)
        )));
    }
    for item in items {
        let k = key(item);
        if k == "all" {
            chosen.iter_mut().for_each(|c| *c = true);
        } else if let Some(cat) = CATEGORIES.iter().find(|c| c.name() == k) {
            let mut any = false;
            for (i, n) in names.iter().enumerate() {
                if category_of(n) == Some(*cat) {
                    chosen[i] = true;
                    any = true;
                }
            }
            if !any {
                return Err(Error::invalid(format!(
                    "MMLU category `{item}` has no subject in this data set; valid: {}",
                    valid_names(&names)
                )));
            }
        } else if let Some(i) = keys.iter().position(|n| *n == k) {
            chosen[i] = true;
        } else {
            let hint = closest(&k, &keys)
                .map(|i| format!(" (did you mean `{}`?)", names[i]))
                .unwrap_or_default();
            return Err(Error::invalid(format!(
                "unknown MMLU subject or category `{item}`{hint}; valid: {}",
                valid_names(&names)
            )));
        }
    }
    Ok(names
        .iter()
        .zip(chosen)
        .filter(|(_, c)| *c)
        .map(|(n, _)| n.to_string())
        .collect())
}

fn valid_names(names: &[&str]) -> String {
    let mut all = vec!["all"];
    all.extend(CATEGORIES.iter().map(|c| c.name()));
    let mut sorted = names.to_vec();
    sorted.sort_unstable();
    all.extend(sorted);
    all.join(", ")
}

fn closest(k: &str, keys: &[String]) -> Option<usize> {
    keys.iter()
        .enumerate()
        .map(|(i, n)| (i, strsim::jaro_winkler(k, n)))
        .filter(|(_, s)| *s > 0.85)
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_lm_eval_category_sizes() {
        let count = |c| SUBJECTS.iter().filter(|s| s.1 == c).count();
        assert_eq!(count(T), 19);
        assert_eq!(count(H), 13);
        assert_eq!(count(S), 12);
        assert_eq!(count(O), 13);
        let mut names: Vec<_> = SUBJECTS.iter().map(|s| s.0).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 57);
    }

    #[test]
    fn category_lookup_ignores_spelling() {
        assert_eq!(category_of("High School Geography"), Some(S));
        assert_eq!(category_of("us-foreign-policy"), Some(S));
        assert_eq!(category_of("cooking"), None);
    }
}
