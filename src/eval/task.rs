//! The task metric of a held-out set: generate an answer to each question (greedy, the model's
//! chat template) and check it contains the facts a correct answer must state.
//! Fact-match rate = share of questions whose answer contains ALL their facts; fact recall =
//! share of individual facts found. Matching is case-insensitive on whitespace-normalised text.

use crate::error::{Error, Result};
use crate::generate::{generate_batch, SamplingParams};
use crate::model::{Ctx, Llama};
use crate::tokenizer::{ChatTemplate, Message, Tokenizer};
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Clone, Debug, Deserialize)]
pub struct TaskItem {
    pub question: String,
    pub facts: Vec<String>,
    #[serde(default)]
    pub reference: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct TaskAnswer {
    pub question: String,
    pub answer: String,
    pub facts_found: Vec<bool>,
}

#[derive(Clone, Debug, Serialize)]
pub struct TaskReport {
    pub questions: usize,
    pub fact_match_rate: f64,
    pub fact_recall: f64,
    pub answers: Vec<TaskAnswer>,
}

pub fn load(path: &Path) -> Result<Vec<TaskItem>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let item: TaskItem = serde_json::from_str(line).map_err(|e| {
            Error::data(
                path,
                i + 1,
                format!("expected {{\"question\", \"facts\": [..]}}: {e}"),
            )
        })?;
        if item.facts.is_empty() {
            return Err(Error::data(
                path,
                i + 1,
                "`facts` is empty: nothing to check",
            ));
        }
        out.push(item);
    }
    if out.is_empty() {
        return Err(Error::format(path, "no questions in the file"));
    }
    Ok(out)
}

fn normalise(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Which of `facts` the answer states.
pub fn facts_found(answer: &str, facts: &[String]) -> Vec<bool> {
    let a = normalise(answer);
    facts.iter().map(|f| a.contains(&normalise(f))).collect()
}

/// How the task questions are asked.
#[derive(Clone, Debug)]
pub struct TaskOptions {
    pub max_new_tokens: usize,
    /// A system prompt before each question (None: the template's default).
    pub system: Option<String>,
    /// Questions decoded together in one batch.
    pub batch: usize,
}

impl TaskOptions {
    pub fn new(max_new_tokens: usize) -> Self {
        TaskOptions {
            max_new_tokens,
            system: None,
            batch: 16,
        }
    }
}

pub fn run(
    model: &Llama,
    tok: &Tokenizer,
    template: &ChatTemplate,
    ctx: Ctx,
    items: &[TaskItem],
    max_new_tokens: usize,
    progress: impl FnMut(usize, usize),
) -> Result<TaskReport> {
    run_with(
        model,
        tok,
        template,
        ctx,
        items,
        &TaskOptions::new(max_new_tokens),
        progress,
    )
}

/// Greedy answers to every question, decoded in batches ([`generate_batch`]), then scored.
pub fn run_with(
    model: &Llama,
    tok: &Tokenizer,
    template: &ChatTemplate,
    ctx: Ctx,
    items: &[TaskItem],
    opts: &TaskOptions,
    mut progress: impl FnMut(usize, usize),
) -> Result<TaskReport> {
    let prompts = items
        .iter()
        .map(|it| {
            let mut msgs = Vec::new();
            if let Some(sys) = &opts.system {
                msgs.push(Message::new("system", sys.clone()));
            }
            msgs.push(Message::new("user", it.question.clone()));
            tok.encode_chat(template, &msgs, true)
        })
        .collect::<Result<Vec<_>>>()?;
    let outs = generate_batch(
        model,
        ctx,
        tok,
        &prompts,
        &SamplingParams::greedy(),
        opts.max_new_tokens,
        opts.batch,
        |done| progress(done, items.len()),
    )?;
    let answers: Vec<TaskAnswer> = items
        .iter()
        .zip(outs)
        .map(|(it, out)| TaskAnswer {
            question: it.question.clone(),
            facts_found: facts_found(&out.text, &it.facts),
            answer: out.text,
        })
        .collect();
    let all = answers
        .iter()
        .filter(|a| a.facts_found.iter().all(|&f| f))
        .count();
    let facts: usize = answers.iter().map(|a| a.facts_found.len()).sum();
    let found: usize = answers
        .iter()
        .map(|a| a.facts_found.iter().filter(|&&f| f).count())
        .sum();
    Ok(TaskReport {
        questions: answers.len(),
        fact_match_rate: all as f64 / answers.len().max(1) as f64,
        fact_recall: found as f64 / facts.max(1) as f64,
        answers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_match_case_and_whitespace_insensitively() {
        let f = vec![
            "30 days".to_string(),
            "E-104".to_string(),
            "refund".to_string(),
        ];
        assert_eq!(
            facts_found("Returns within 30\n days; code e-104.", &f),
            vec![true, true, false]
        );
    }
}
