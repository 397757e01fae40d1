//! Shared by the MMLU tests (`tests/mmlu_load.rs`, `tests/mmlu_score.rs`): where the mini data
//! sets live, and scorers that need no model.
#![allow(dead_code)]

use ft::eval::mmlu::{self, ChoiceScorer, Dataset, MmluOptions, Style};
use ft::eval::report::MmluReport;
use std::collections::HashMap;
use std::path::PathBuf;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn mini(ext: &str) -> PathBuf {
    root().join("tests/data/mmlu").join(format!("mini.{ext}"))
}

pub fn load(ext: &str) -> Dataset {
    mmlu::load(&mini(ext)).unwrap_or_else(|e| panic!("loading mini.{ext}: {e}"))
}

/// Deterministic pseudo log-probs from a hash of the full prompt and the candidate; records the
/// distinct prefixes (the trait promises one per subject).
#[derive(Default)]
pub struct Fake {
    pub prefixes: std::collections::HashSet<String>,
    pub calls: usize,
}

pub fn hash(s: &str) -> u64 {
    // FNV-1a: stable across runs and platforms.
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

impl Fake {
    pub fn score(&mut self, prefix: &str, suffix: &str, cands: [&str; 4]) -> [f64; 4] {
        self.calls += 1;
        assert!(prefix.starts_with("The following are"), "{prefix}");
        self.prefixes.insert(prefix.to_string());
        cands.map(|c| -((hash(&format!("{prefix}{suffix}{c}")) % 1000) as f64) / 100.0)
    }
}

impl ChoiceScorer for Fake {
    fn letter_logprobs(&mut self, p: &str, s: &str, l: &[&str; 4]) -> ft::Result<[f64; 4]> {
        Ok(self.score(p, s, *l))
    }
    fn cloze_logprobs(&mut self, p: &str, s: &str, c: &[String; 4]) -> ft::Result<[f64; 4]> {
        Ok(self.score(p, s, [&c[0], &c[1], &c[2], &c[3]].map(|x| x.as_str())))
    }
}

/// Always prefers A.
pub struct AlwaysA;

impl ChoiceScorer for AlwaysA {
    fn letter_logprobs(&mut self, _: &str, _: &str, _: &[&str; 4]) -> ft::Result<[f64; 4]> {
        Ok([-0.1, -2.0, -2.0, -2.0])
    }
    fn cloze_logprobs(&mut self, _: &str, _: &str, _: &[String; 4]) -> ft::Result<[f64; 4]> {
        Ok([-0.1, -2.0, -2.0, -2.0])
    }
}

/// Knows the answers (looked up by prompt suffix).
pub struct Oracle(pub HashMap<String, usize>);

impl ChoiceScorer for Oracle {
    fn letter_logprobs(&mut self, _: &str, s: &str, _: &[&str; 4]) -> ft::Result<[f64; 4]> {
        let mut lp = [-5.0; 4];
        lp[self.0[s]] = -0.5;
        Ok(lp)
    }
    fn cloze_logprobs(&mut self, p: &str, s: &str, _: &[String; 4]) -> ft::Result<[f64; 4]> {
        self.letter_logprobs(p, s, &mmlu::LETTERS)
    }
}

pub fn opts(shots: usize, pool: Option<usize>, style: Style) -> MmluOptions {
    MmluOptions {
        shots,
        pool,
        style,
        ..MmluOptions::default()
    }
}

/// The parts of a report that do not depend on timing or on which file was read.
pub fn scores(r: &MmluReport) -> String {
    let mut v = serde_json::to_value(r).unwrap();
    v.as_object_mut().unwrap().remove("settings");
    v.to_string()
}
