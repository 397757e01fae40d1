//! Eval reports: the MMLU report (JSON via serde, and a table), a generic base / tuned / delta
//! comparison table, and the sha256 that ties a report to the exact model file.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::eval::mmlu::{Category, Style, CATEGORIES};
use crate::eval::stats::{macro_avg, micro, Accuracy, MacroAccuracy};
use crate::model::identity::hex;
use crate::output::write_bytes;

/// How the headline numbers are aggregated, printed with every score.
pub const AGGREGATION: &str = "micro = over questions (lm-eval's group number); \
    macro = mean of subject accuracies; 95% CI: Wilson score (micro, subjects), normal (macro)";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MmluSettings {
    pub model: Option<String>,
    /// sha256 of the model file (or of the folder's files, see [`file_sha256`]).
    pub model_sha256: Option<String>,
    /// Data files loaded.
    pub dataset: Vec<String>,
    pub style: Style,
    pub shots: usize,
    /// Where the shots came from and which questions were therefore not scored.
    pub shot_source: String,
    /// Per-subject cap on scored questions.
    pub limit: Option<usize>,
    /// Whether the prompts went through the model's chat template.
    pub chat_template: bool,
    pub aggregation: String,
    /// Rows in the data files that were not questions (header rows), never scored.
    pub skipped: usize,
    pub skipped_rows: Vec<String>,
    /// Questions scored.
    pub questions: usize,
    pub seconds: f64,
    pub questions_per_s: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubjectResult {
    pub subject: String,
    /// lm-eval's category; `None` for a subject outside the 57.
    pub category: Option<Category>,
    /// scored, correct, acc, ci_low, ci_high.
    #[serde(flatten)]
    pub accuracy: Accuracy,
    /// How often each of A, B, C, D was predicted: a model near chance often picks one letter.
    pub pred_counts: [usize; 4],
    /// Cloze only: lm-eval's acc_norm (log-prob per character of the choice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acc_norm: Option<Accuracy>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CategoryResult {
    pub category: Category,
    pub subjects: usize,
    /// Micro average over the category's questions.
    #[serde(flatten)]
    pub accuracy: Accuracy,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MmluReport {
    pub settings: MmluSettings,
    pub subjects: Vec<SubjectResult>,
    /// Categories with at least one selected subject.
    pub categories: Vec<CategoryResult>,
    pub micro: Accuracy,
    #[serde(rename = "macro")]
    pub macro_: MacroAccuracy,
    /// Cloze only: micro acc_norm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub micro_norm: Option<Accuracy>,
}

impl MmluReport {
    /// Aggregate per-subject results.
    pub fn new(settings: MmluSettings, subjects: Vec<SubjectResult>) -> Self {
        let parts: Vec<(usize, usize)> = subjects
            .iter()
            .map(|s| (s.accuracy.correct, s.accuracy.scored))
            .collect();
        let categories = CATEGORIES
            .iter()
            .filter_map(|&c| {
                let p: Vec<_> = subjects
                    .iter()
                    .filter(|s| s.category == Some(c))
                    .map(|s| (s.accuracy.correct, s.accuracy.scored))
                    .collect();
                (!p.is_empty()).then(|| CategoryResult {
                    category: c,
                    subjects: p.len(),
                    accuracy: micro(&p),
                })
            })
            .collect();
        let norm: Option<Vec<(usize, usize)>> = subjects
            .iter()
            .map(|s| s.acc_norm.map(|a| (a.correct, a.scored)))
            .collect();
        MmluReport {
            micro: micro(&parts),
            macro_: macro_avg(&parts),
            micro_norm: norm.filter(|n| !n.is_empty()).map(|n| micro(&n)),
            categories,
            subjects,
            settings,
        }
    }

    /// Record the model path and its sha256.
    pub fn set_model(&mut self, path: &Path) -> Result<()> {
        self.settings.model_sha256 = Some(file_sha256(path)?);
        self.settings.model = Some(path.display().to_string());
        Ok(())
    }

    pub fn to_json(&self) -> Result<String> {
        Ok(serde_json::to_string_pretty(self)?)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let mut json = self.to_json()?;
        json.push('\n');
        write_bytes(path, json.as_bytes())
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        serde_json::from_str(&text)
            .map_err(|e| Error::format(path, format!("not an MMLU report: {e}")))
    }

    /// One line: format, shots and both aggregations.
    pub fn summary_line(&self) -> String {
        let s = &self.settings;
        let norm = self
            .micro_norm
            .map(|a| format!(", acc_norm {:.4}", a.acc))
            .unwrap_or_default();
        format!(
            "MMLU {} {}-shot{}: micro {:.4} [{:.4}, {:.4}] over {} questions, macro {:.4} over {} subjects{norm}",
            s.style,
            s.shots,
            if s.chat_template { " (chat template)" } else { "" },
            self.micro.acc,
            self.micro.ci_low,
            self.micro.ci_high,
            self.micro.scored,
            self.macro_.acc,
            self.macro_.subjects,
        )
    }

    /// The settings, then a table of subjects, categories, micro and macro (markdown, also fine
    /// in a terminal).
    pub fn to_markdown(&self) -> String {
        let s = &self.settings;
        let mut out = format!("{}\n\n", self.summary_line());
        out.push_str(&format!(
            "- style: {}, {} shots from the {}\n",
            s.style, s.shots, s.shot_source
        ));
        out.push_str(&format!(
            "- chat template: {}\n",
            if s.chat_template { "yes" } else { "no" }
        ));
        out.push_str(&format!("- aggregation: {}\n", s.aggregation));
        if let Some(m) = &s.model {
            let sha = s.model_sha256.as_deref().unwrap_or("?");
            out.push_str(&format!("- model: {m} (sha256 {sha})\n"));
        }
        if let Some(l) = s.limit {
            out.push_str(&format!("- limit: {l} questions per subject\n"));
        }
        out.push_str(&format!(
            "- skipped rows (not questions): {}\n- {} questions in {:.1} s ({:.2} questions/s)\n\n",
            s.skipped, s.questions, s.seconds, s.questions_per_s
        ));
        let row = |name: String, a: &Accuracy, extra: String| {
            vec![
                name,
                a.scored.to_string(),
                a.correct.to_string(),
                format!("{:.4}", a.acc),
                format!("{:.4}-{:.4}", a.ci_low, a.ci_high),
                extra,
            ]
        };
        let mut rows: Vec<Vec<String>> = self
            .subjects
            .iter()
            .map(|r| {
                let p = r.pred_counts;
                row(
                    r.subject.clone(),
                    &r.accuracy,
                    format!("{} {} {} {}", p[0], p[1], p[2], p[3]),
                )
            })
            .collect();
        for c in &self.categories {
            let name = format!("{} ({})", c.category.name(), plural(c.subjects, "subject"));
            rows.push(row(name, &c.accuracy, String::new()));
        }
        rows.push(row("micro".into(), &self.micro, String::new()));
        let m = &self.macro_;
        rows.push(vec![
            format!("macro ({})", plural(m.subjects, "subject")),
            String::new(),
            String::new(),
            format!("{:.4}", m.acc),
            format!("{:.4}-{:.4}", m.ci_low, m.ci_high),
            String::new(),
        ]);
        out.push_str(&render_table(
            &["subject", "n", "correct", "acc", "95% CI", "pred A B C D"],
            &[false, true, true, true, false, false],
            &rows,
        ));
        out
    }
}

fn plural(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// Base vs tuned per subject, category, micro and macro; notes first where the settings differ.
pub fn compare(base: &MmluReport, tuned: &MmluReport) -> String {
    let (b, t) = (&base.settings, &tuned.settings);
    let mut notes = String::new();
    let mut differ = |what: &str, x: String, y: String| {
        if x != y {
            notes.push_str(&format!("note: {what} differs: base {x}, tuned {y}\n"));
        }
    };
    differ("style", b.style.to_string(), t.style.to_string());
    differ("shots", b.shots.to_string(), t.shots.to_string());
    differ("shot source", b.shot_source.clone(), t.shot_source.clone());
    differ(
        "chat template",
        b.chat_template.to_string(),
        t.chat_template.to_string(),
    );
    differ("limit", format!("{:?}", b.limit), format!("{:?}", t.limit));
    differ(
        "questions",
        b.questions.to_string(),
        t.questions.to_string(),
    );

    let mut rows: Vec<(String, Option<f64>, Option<f64>)> = Vec::new();
    let find = |r: &MmluReport, name: &str| {
        r.subjects
            .iter()
            .find(|s| s.subject == name)
            .map(|s| s.accuracy.acc)
    };
    for s in &base.subjects {
        rows.push((
            s.subject.clone(),
            Some(s.accuracy.acc),
            find(tuned, &s.subject),
        ));
    }
    for s in &tuned.subjects {
        if find(base, &s.subject).is_none() {
            rows.push((s.subject.clone(), None, Some(s.accuracy.acc)));
        }
    }
    for c in CATEGORIES {
        let get = |r: &MmluReport| {
            r.categories
                .iter()
                .find(|x| x.category == c)
                .map(|x| x.accuracy.acc)
        };
        if get(base).is_some() || get(tuned).is_some() {
            rows.push((c.name().to_string(), get(base), get(tuned)));
        }
    }
    rows.push(("micro".into(), Some(base.micro.acc), Some(tuned.micro.acc)));
    rows.push((
        "macro".into(),
        Some(base.macro_.acc),
        Some(tuned.macro_.acc),
    ));
    format!(
        "{notes}MMLU {} {}-shot, accuracy\n\n{}",
        b.style,
        b.shots,
        side_by_side_with("subject", &rows, 4)
    )
}

/// A base / tuned / delta table (4 decimals), for any metric: MMLU accuracy, perplexity, task scores.
pub fn side_by_side(rows: &[(String, Option<f64>, Option<f64>)]) -> String {
    side_by_side_with("name", rows, 4)
}

/// [`side_by_side`] with a first-column title and a number of decimals. A missing value is `-`.
pub fn side_by_side_with(
    label: &str,
    rows: &[(String, Option<f64>, Option<f64>)],
    decimals: usize,
) -> String {
    let fmt = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.decimals$}"));
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|(name, b, t)| {
            let delta = match (b, t) {
                (Some(b), Some(t)) => format!("{:+.decimals$}", t - b),
                _ => "-".to_string(),
            };
            vec![name.clone(), fmt(*b), fmt(*t), delta]
        })
        .collect();
    render_table(
        &[label, "base", "tuned", "delta"],
        &[false, true, true, true],
        &body,
    )
}

/// A markdown table padded to column width (readable as plain text too).
pub fn render_table(header: &[&str], right: &[bool], rows: &[Vec<String>]) -> String {
    let n = header.len();
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count().max(3)).collect();
    for r in rows {
        for (i, cell) in r.iter().enumerate().take(n) {
            width[i] = width[i].max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = (usize, String)>| {
        let mut s = String::from("|");
        for (i, c) in cells {
            let pad = " ".repeat(width[i].saturating_sub(c.chars().count()));
            if right.get(i).copied().unwrap_or(false) {
                s.push_str(&format!(" {pad}{c} |"));
            } else {
                s.push_str(&format!(" {c}{pad} |"));
            }
        }
        s.push('\n');
        s
    };
    let mut out = line(&mut header.iter().map(|h| h.to_string()).enumerate());
    out.push('|');
    for (i, w) in width.iter().enumerate() {
        let dashes = "-".repeat(*w);
        if right.get(i).copied().unwrap_or(false) {
            out.push_str(&format!(" {}: |", &dashes[1..]));
        } else {
            out.push_str(&format!(" {dashes} |"));
        }
    }
    out.push('\n');
    for r in rows {
        let mut cells = (0..n).map(|i| (i, r.get(i).cloned().unwrap_or_default()));
        out.push_str(&line(&mut cells));
    }
    out
}

/// Hex sha256 of a file, streamed. For a folder: sha256 over the lines `relative/path\0<file sha256>\n`
/// of every file under it (recursively, sorted by path, `/` separators, dot-files and dot-folders
/// left out), so a model folder has one stable hash.
pub fn file_sha256(path: &Path) -> Result<String> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_dir() {
        return hash_file(path);
    }
    let mut files = Vec::new();
    walk(path, &mut files)?;
    let mut rel: Vec<(String, PathBuf)> = files
        .into_iter()
        .map(|f| {
            let r = f.strip_prefix(path).unwrap_or(&f);
            let name = r
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            (name, f)
        })
        .collect();
    rel.sort();
    let mut h = Sha256::new();
    for (name, f) in rel {
        h.update(name.as_bytes());
        h.update([0u8]);
        h.update(hash_file(&f)?.as_bytes());
        h.update(b"\n");
    }
    Ok(hex(&h.finalize()))
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let p = entry.map_err(|e| Error::io(dir, e))?.path();
        if p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        {
            continue;
        }
        // metadata() follows symlinks: Hugging Face cache folders link to blobs.
        let meta = std::fs::metadata(&p).map_err(|e| Error::io(&p, e))?;
        if meta.is_dir() {
            walk(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

fn hash_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn side_by_side_aligns_and_signs_delta() {
        let t = side_by_side(&[
            ("marketing".into(), Some(0.25), Some(0.3)),
            ("ppl".into(), Some(12.5), None),
        ]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "| name      |    base |  tuned |   delta |");
        assert_eq!(lines[1], "| --------- | ------: | -----: | ------: |");
        assert_eq!(lines[2], "| marketing |  0.2500 | 0.3000 | +0.0500 |");
        assert_eq!(lines[3], "| ppl       | 12.5000 |      - |       - |");
        assert_eq!(lines.len(), 4);
    }

    #[test]
    fn sha256_of_file_and_folder() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.txt");
        std::fs::write(&f, b"abc").unwrap();
        // sha256("abc"), FIPS 180-2 test vector.
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(file_sha256(&f).unwrap(), abc);
        std::fs::write(dir.path().join(".hidden"), b"x").unwrap();
        let mut h = Sha256::new();
        h.update(format!("a.txt\0{abc}\n").as_bytes());
        assert_eq!(file_sha256(dir.path()).unwrap(), hex(&h.finalize()));
    }
}
