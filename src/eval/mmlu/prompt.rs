//! MMLU prompts, byte for byte as lm-evaluation-harness builds them.
//!
//! Letter style (`lm_eval/tasks/mmlu/default`, the usual "MMLU" number):
//! ```text
//! The following are multiple choice questions (with answers) about {subject with _ -> space}.\n\n
//! {question.strip()}\nA. {a}\nB. {b}\nC. {c}\nD. {d}\nAnswer: {X}\n\n      <- each shot
//! {question.strip()}\nA. {a}\nB. {b}\nC. {c}\nD. {d}\nAnswer:              <- the scored question
//! ```
//! scored by the log-prob of `" A"`..`" D"` as the next token(s).
//!
//! Cloze style (`lm_eval/tasks/mmlu/continuation`, what e.g. the SmolLM2 card reports): the choices are
//! not listed; the model scores each answer text as a continuation:
//! ```text
//! The following are questions (with answers) about {subject}.\n\n
//! Question: {question.strip()}\nAnswer: {gold choice text}\n\n              <- each shot
//! Question: {question.strip()}\nAnswer:                                    <- continuations " " + choice
//! ```
//! The prefix (header + shots) is the same for every question of a subject, so a model can cache it.

use serde::{Deserialize, Serialize};

use super::load::Question;
use crate::error::{Error, Result};

/// How a question is scored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Style {
    /// Choices listed A-D; argmax of the next-token log-probs of `" A"`..`" D"`.
    Letter,
    /// Choices not listed; argmax of the summed log-probs of `" " + choice text`.
    Cloze,
}

impl std::str::FromStr for Style {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "letter" | "mc" => Ok(Style::Letter),
            "cloze" | "continuation" => Ok(Style::Cloze),
            _ => Err(Error::invalid(format!(
                "unknown MMLU style `{s}`; valid: letter, cloze"
            ))),
        }
    }
}

impl std::fmt::Display for Style {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Style::Letter => "letter",
            Style::Cloze => "cloze",
        })
    }
}

/// The letter candidates, with the leading space lm-eval's target delimiter adds.
pub const LETTERS: [&str; 4] = [" A", " B", " C", " D"];

/// One scored question: the part of the prompt after the subject's shared prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    /// The question in the style's format, ending with `Answer:` (no trailing space).
    pub prompt_suffix: String,
    /// Index of the correct choice.
    pub gold: usize,
    /// `" " + choice text` for each choice (used by the cloze style).
    pub cloze_continuations: [String; 4],
    /// Position of the question within its subject's questions (file order, 0-based).
    pub index_in_subject: usize,
}

/// Python's `str.strip()`: Rust's `trim` minus the ASCII separators 0x1C-0x1F, which Python also
/// counts as whitespace.
pub fn py_strip(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
}

/// The subject as the header writes it: `high_school_geography` -> `high school geography`.
pub fn display_subject(subject: &str) -> String {
    subject.replace('_', " ")
}

/// The description line(s) that open every prompt of a subject.
pub fn header(subject: &str, style: Style) -> String {
    let what = match style {
        Style::Letter => "multiple choice questions",
        Style::Cloze => "questions",
    };
    format!(
        "The following are {what} (with answers) about {}.\n\n",
        display_subject(subject)
    )
}

/// A question in the style's format, ending with `Answer:`.
pub fn format_question(q: &Question, style: Style) -> String {
    let text = py_strip(&q.question);
    match style {
        Style::Letter => {
            let [a, b, c, d] = &q.choices;
            format!("{text}\nA. {a}\nB. {b}\nC. {c}\nD. {d}\nAnswer:")
        }
        Style::Cloze => format!("Question: {text}\nAnswer:"),
    }
}

/// A worked example: the question, its answer, and the blank line that separates shots.
pub fn format_shot(q: &Question, style: Style) -> String {
    let target = match style {
        Style::Letter => LETTERS[q.answer].to_string(),
        Style::Cloze => format!(" {}", q.choices[q.answer]),
    };
    format!("{}{target}\n\n", format_question(q, style))
}

/// Prompts for one subject whose shot pool is its own first `pool` questions (in file order).
///
/// The first `shots` of the pool are the examples; every question after the pool is scored, so with
/// `pool = 5` both 0-shot and 5-shot score the same questions (the fixture's scheme). `pool = shots` is
/// lm-eval's scheme when there is no dev split. Returns (shared prefix, scored items).
pub fn build_items(
    questions: &[Question],
    shots: usize,
    pool: usize,
    style: Style,
) -> Result<(String, Vec<Item>)> {
    let subject = questions.first().map(|q| q.subject.as_str()).unwrap_or("");
    if shots > pool {
        return Err(Error::invalid(format!(
            "{shots} shots need a shot pool of at least {shots} questions (pool is {pool})"
        )));
    }
    if questions.len() <= pool {
        return Err(Error::invalid(format!(
            "MMLU subject `{subject}` has {} questions, all in the {pool}-question shot pool; none left to score",
            questions.len()
        )));
    }
    let prefix = prefix(subject, &questions[..shots], style);
    let items = items(&questions[pool..], pool, style);
    Ok((prefix, items))
}

/// Prompts for one subject with a separate shot pool (a dev split): the first `shots` of `dev` are
/// the examples and every question in `test` is scored.
pub fn build_items_with_dev(
    dev: &[Question],
    test: &[Question],
    shots: usize,
    style: Style,
) -> Result<(String, Vec<Item>)> {
    let subject = test.first().map(|q| q.subject.as_str()).unwrap_or("");
    if shots > dev.len() {
        return Err(Error::invalid(format!(
            "{shots} shots asked but the dev split of `{subject}` has {} questions",
            dev.len()
        )));
    }
    Ok((prefix(subject, &dev[..shots], style), items(test, 0, style)))
}

fn prefix(subject: &str, shots: &[Question], style: Style) -> String {
    let mut p = header(subject, style);
    for q in shots {
        p.push_str(&format_shot(q, style));
    }
    p
}

fn items(scored: &[Question], first_index: usize, style: Style) -> Vec<Item> {
    scored
        .iter()
        .enumerate()
        .map(|(i, q)| Item {
            prompt_suffix: format_question(q, style),
            gold: q.answer,
            cloze_continuations: q.choices.clone().map(|c| format!(" {c}")),
            index_in_subject: first_index + i,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(text: &str, answer: usize) -> Question {
        Question {
            subject: "us_foreign_policy".into(),
            question: text.into(),
            choices: ["w".into(), "x".into(), "y".into(), "z".into()],
            answer,
        }
    }

    #[test]
    fn letter_prompt_is_lm_eval_format() {
        let qs: Vec<_> = (0..7).map(|i| q(&format!("  Q{i}?\n"), i % 4)).collect();
        let (prefix, items) = build_items(&qs, 2, 5, Style::Letter).unwrap();
        assert_eq!(
            prefix,
            "The following are multiple choice questions (with answers) about us foreign policy.\n\n\
             Q0?\nA. w\nB. x\nC. y\nD. z\nAnswer: A\n\n\
             Q1?\nA. w\nB. x\nC. y\nD. z\nAnswer: B\n\n"
        );
        assert_eq!(items.len(), 2);
        assert_eq!(
            items[0].prompt_suffix,
            "Q5?\nA. w\nB. x\nC. y\nD. z\nAnswer:"
        );
        assert_eq!((items[0].gold, items[0].index_in_subject), (1, 5));
        assert_eq!(items[1].cloze_continuations[3], " z");
    }

    #[test]
    fn cloze_prompt_is_lm_eval_continuation_format() {
        let qs: Vec<_> = (0..3).map(|i| q(&format!("Q{i}?"), 2)).collect();
        let (prefix, items) = build_items(&qs, 1, 1, Style::Cloze).unwrap();
        assert_eq!(
            prefix,
            "The following are questions (with answers) about us foreign policy.\n\n\
             Question: Q0?\nAnswer: y\n\n"
        );
        assert_eq!(items[0].prompt_suffix, "Question: Q1?\nAnswer:");
    }

    #[test]
    fn pool_rules() {
        let qs: Vec<_> = (0..5).map(|i| q("Q", i % 4)).collect();
        assert!(build_items(&qs, 5, 5, Style::Letter)
            .unwrap_err()
            .to_string()
            .contains("none left to score"));
        assert!(build_items(&qs, 3, 2, Style::Letter).is_err());
        let (p, items) = build_items_with_dev(&qs[..2], &qs, 2, Style::Letter).unwrap();
        assert_eq!(items.len(), 5);
        assert_eq!(p.matches("Answer:").count(), 2);
        assert!(build_items_with_dev(&qs[..2], &qs, 3, Style::Letter).is_err());
    }

    #[test]
    fn strip_matches_python() {
        assert_eq!(py_strip("\u{1f}\u{a0} x y\t\u{2003}\n"), "x y");
    }
}
