//! Template augmentation of a dataset (`ft augment`): each example is copied with its question
//! reworded by templates — a frame around it ("Quick question: …", "I was wondering, …"), a
//! persona or situation before it, casual casing and punctuation — and the answer given a
//! different opener or closer. The facts in the answers are never changed.
//!
//! Why: a small model fine-tuned on a handful of phrasings per fact learns those sentences, not
//! the facts (Allen-Zhu & Li, "Physics of Language Models 3.1": knowledge becomes extractable
//! when it is seen in many phrasings). Templates cannot invent new vocabulary — hand-written or
//! model-written paraphrases do that — but they teach the model that the frame, the persona
//! and the register around a question do not change its answer.
//!
//! Deterministic: the same input, copies and seed give the same output.

use super::Example;
use crate::error::{Error, Result};
use crate::tokenizer::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;

/// The rewording templates. `{q}` is the question as written, `{lq}` the question with a
/// lower-cased first letter (for frames that continue a sentence).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Templates {
    /// Frames around the question.
    pub frames: Vec<String>,
    /// Sentences placed before the question (a persona or situation).
    pub personas: Vec<String>,
    /// Openers put before an answer.
    pub openers: Vec<String>,
    /// Closers put after an answer.
    pub closers: Vec<String>,
    /// Probability that a copy's question is lower-cased and loses its final punctuation.
    pub casual: f64,
}

impl Default for Templates {
    fn default() -> Self {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect();
        Templates {
            frames: s(&[
                "{q}",
                "Quick question: {q}",
                "I was wondering, {lq}",
                "Hi, {lq}",
                "Hello! {q}",
                "{q} Thanks in advance.",
                "Sorry to bother you, but {lq}",
                "{q} I couldn't find it anywhere.",
                "Can you help? {q}",
                "One more thing: {lq}",
                "{q} Please keep it short.",
                "Hey there. {q}",
            ]),
            personas: s(&[
                "I'm new to this.",
                "I'm asking for my parents.",
                "I run a small business.",
                "I'm a landlord with a few rentals.",
                "I'm a student on a budget.",
                "I'm not very technical.",
                "I'm setting this up for a friend.",
                "I manage IT for a small office.",
                "I'm thinking about buying one.",
                "I just got mine yesterday.",
                "I'm travelling this week.",
                "English is not my first language.",
            ]),
            openers: s(&[
                "",
                "",
                "Sure! ",
                "Happy to help! ",
                "Good question! ",
                "Of course. ",
            ]),
            closers: s(&[
                "",
                "",
                " Anything else I can help with?",
                " Hope that helps!",
            ]),
            casual: 0.15,
        }
    }
}

/// What `augment` made.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AugmentStats {
    pub input: usize,
    pub output: usize,
}

/// `copies` reworded copies of every example (after the original when `keep_original`).
pub fn augment(
    examples: &[Example],
    t: &Templates,
    copies: usize,
    keep_original: bool,
    seed: u64,
) -> Result<(Vec<Example>, AugmentStats)> {
    if t.frames.is_empty() {
        return Err(Error::invalid(
            "augment templates: `frames` is empty (use [\"{q}\"] for none)",
        ));
    }
    if !(0.0..=1.0).contains(&t.casual) {
        return Err(Error::invalid(format!(
            "augment templates: `casual` must be in [0, 1] (got {})",
            t.casual
        )));
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(examples.len() * (copies + keep_original as usize));
    for ex in examples {
        if keep_original {
            out.push(ex.clone());
        }
        for _ in 0..copies {
            out.push(reword(ex, t, &mut rng));
        }
    }
    let stats = AugmentStats {
        input: examples.len(),
        output: out.len(),
    };
    Ok((out, stats))
}

/// An example as a dataset record with the standard field names (what `read_examples` reads
/// back with the default `fields`).
pub fn record(ex: &Example) -> serde_json::Value {
    use serde_json::json;
    match ex {
        Example::Chat { messages } => json!({
            "messages": messages
                .iter()
                .map(|m| json!({"role": m.role, "content": m.content}))
                .collect::<Vec<_>>()
        }),
        Example::Instruction {
            instruction,
            input,
            output,
        } => match input {
            Some(i) => json!({"instruction": instruction, "input": i, "output": output}),
            None => json!({"instruction": instruction, "output": output}),
        },
        Example::Completion { prompt, completion } => {
            json!({"prompt": prompt, "completion": completion})
        }
        Example::Text { text } => json!({ "text": text }),
    }
}

fn pick<'a>(rng: &mut StdRng, v: &'a [String]) -> &'a str {
    if v.is_empty() {
        ""
    } else {
        &v[rng.random_range(0..v.len())]
    }
}

/// One reworded copy: every user turn (or instruction / prompt) gets a frame, maybe a persona
/// and casual casing; every answer maybe an opener and a closer.
fn reword(ex: &Example, t: &Templates, rng: &mut StdRng) -> Example {
    match ex {
        Example::Chat { messages } => {
            let messages = messages
                .iter()
                .map(|m| match m.role.as_str() {
                    "user" => Message::new("user", question(&m.content, t, rng)),
                    "assistant" => Message::new("assistant", answer(&m.content, t, rng)),
                    _ => m.clone(),
                })
                .collect();
            Example::Chat { messages }
        }
        Example::Instruction {
            instruction,
            input,
            output,
        } => Example::Instruction {
            instruction: question(instruction, t, rng),
            input: input.clone(),
            output: answer(output, t, rng),
        },
        Example::Completion { prompt, completion } => Example::Completion {
            prompt: question(prompt, t, rng),
            completion: completion.clone(),
        },
        Example::Text { .. } => ex.clone(),
    }
}

fn lower_first(q: &str) -> String {
    let first = q.split_whitespace().next().unwrap_or("");
    if first == "I" || first.starts_with("I'") {
        return q.to_string();
    }
    let mut c = q.chars();
    match (c.next(), c.clone().next()) {
        // Keep "I", acronyms and codes ("E101", "USB") as they are.
        (Some(f), Some(s)) if f.is_uppercase() && !s.is_uppercase() && !s.is_ascii_digit() => {
            f.to_lowercase().chain(c).collect()
        }
        _ => q.to_string(),
    }
}

fn question(q: &str, t: &Templates, rng: &mut StdRng) -> String {
    let q = q.trim();
    let framed = pick(rng, &t.frames)
        .replace("{q}", q)
        .replace("{lq}", &lower_first(q));
    let mut s = if !t.personas.is_empty() && rng.random_bool(0.35) {
        format!("{} {framed}", pick(rng, &t.personas))
    } else {
        framed
    };
    if rng.random_bool(t.casual) {
        s = s.to_lowercase();
        while s.ends_with(['?', '.', '!']) {
            s.pop();
        }
    }
    s
}

/// An opener and a closer around the answer, unless it already has one of them.
fn answer(a: &str, t: &Templates, rng: &mut StdRng) -> String {
    let a = a.trim();
    let (open, close) = (pick(rng, &t.openers), pick(rng, &t.closers));
    let has = |v: &[String], f: &dyn Fn(&str) -> bool| {
        v.iter().any(|x| !x.trim().is_empty() && f(x.trim()))
    };
    let open = if has(&t.openers, &|x| a.starts_with(x)) {
        ""
    } else {
        open
    };
    let close = if has(&t.closers, &|x| a.ends_with(x)) {
        ""
    } else {
        close
    };
    format!("{open}{a}{close}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(q: &str, a: &str) -> Example {
        Example::Chat {
            messages: vec![Message::new("user", q), Message::new("assistant", a)],
        }
    }

    #[test]
    fn copies_keep_the_answer_and_the_question_and_are_deterministic() {
        let ex = vec![
            chat("How much is Plus?", "Plus costs $7.49 per month."),
            chat("What is error E519?", "E519 means a failed update."),
        ];
        let t = Templates::default();
        let (a, stats) = augment(&ex, &t, 5, true, 7).unwrap();
        assert_eq!(
            stats,
            AugmentStats {
                input: 2,
                output: 12
            }
        );
        assert_eq!(a[0], ex[0]);
        let (b, _) = augment(&ex, &t, 5, true, 7).unwrap();
        assert_eq!(a, b);
        let (c, _) = augment(&ex, &t, 5, true, 8).unwrap();
        assert_ne!(a, c);
        let mut distinct = std::collections::HashSet::new();
        for e in &a[..6] {
            let Example::Chat { messages } = e else {
                panic!("not chat")
            };
            // The question survives (maybe lower-cased, without its "?"), the answer verbatim.
            let q = messages[0].content.to_lowercase();
            assert!(q.contains("how much is plus"), "{q}");
            assert!(messages[1].content.contains("Plus costs $7.49 per month."));
            distinct.insert(messages[0].content.clone());
        }
        assert!(distinct.len() >= 4, "copies should differ: {distinct:?}");
    }

    #[test]
    fn openers_and_closers_do_not_stack() {
        let t = Templates {
            openers: vec!["Sure! ".into()],
            closers: vec![" Bye.".into()],
            ..Default::default()
        };
        let mut rng = StdRng::seed_from_u64(0);
        assert_eq!(
            answer("Sure! It is 5.", &t, &mut rng),
            "Sure! It is 5. Bye."
        );
        assert_eq!(answer("It is 5. Bye.", &t, &mut rng), "Sure! It is 5. Bye.");
    }

    #[test]
    fn codes_and_acronyms_keep_their_case_inside_frames() {
        assert_eq!(lower_first("E519 keeps showing"), "E519 keeps showing");
        assert_eq!(lower_first("USB power?"), "USB power?");
        assert_eq!(lower_first("How much?"), "how much?");
        assert_eq!(lower_first("I lost it"), "I lost it");
    }

    #[test]
    fn bad_templates_are_errors() {
        let ex = vec![chat("q", "a")];
        let t = Templates {
            frames: vec![],
            ..Default::default()
        };
        assert!(augment(&ex, &t, 1, true, 0).is_err());
        let t = Templates {
            casual: 2.0,
            ..Default::default()
        };
        assert!(augment(&ex, &t, 1, true, 0).is_err());
    }
}
