//! Reading dataset files into [`Example`]s: `.jsonl` (one object per line, blank lines ignored),
//! `.json` (an array of objects) and `.parquet` (see [`super::parquet`]).
//!
//! Line numbers in errors and in [`ReadReport::skipped`] are 1-based file lines for JSON files
//! (the line where the record starts) and 1-based row numbers for parquet.

use std::collections::HashSet;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::example::{example_from_record, Example, FieldMap, Format, Record};
use crate::error::{Error, Result};

/// What [`read_examples`] found.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ReadReport {
    pub examples: Vec<Example>,
    /// Records that were valid but empty: (file, line or row, reason). Nothing is dropped silently.
    pub skipped: Vec<(PathBuf, usize, String)>,
}

/// File extensions [`read_examples`] understands.
pub const EXTENSIONS: [&str; 3] = ["jsonl", "json", "parquet"];

/// Read every file in order. Fails on the first malformed record, naming file and line.
pub fn read_examples(paths: &[PathBuf], format: Format, fields: &FieldMap) -> Result<ReadReport> {
    let mut report = ReadReport::default();
    for path in paths {
        let mut push = |line: usize, record: &Value| -> Result<()> {
            match example_from_record(record, format, fields) {
                Ok(Record::Keep(ex)) => report.examples.push(ex),
                Ok(Record::Skip(reason)) => report.skipped.push((path.clone(), line, reason)),
                Err(msg) => return Err(Error::data(path, line, msg)),
            }
            Ok(())
        };
        match extension(path).as_deref() {
            Some("jsonl") => read_jsonl(path, &mut push)?,
            Some("json") => read_json_array(path, &mut push)?,
            Some("parquet") => super::parquet::read_parquet(path, format, fields, &mut push)?,
            other => {
                return Err(Error::format(
                    path,
                    format!(
                        "unsupported dataset file type `{}` (expected .jsonl, .json or .parquet)",
                        other.unwrap_or("")
                    ),
                ))
            }
        }
    }
    Ok(report)
}

/// Resolve dataset paths: plain files, directories (their .jsonl/.json/.parquet files) or glob
/// patterns (`data/*.jsonl`). Sorted within each entry, de-duplicated, order of entries kept.
/// A pattern or directory that yields nothing is an error, as is a file that does not exist.
pub fn expand_paths(spec: &[String]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for entry in spec {
        let mut found = if entry.contains(['*', '?', '[']) {
            let paths = glob::glob(entry)
                .map_err(|e| Error::invalid(format!("bad dataset path pattern `{entry}`: {e}")))?;
            let mut v = Vec::new();
            for p in paths {
                let p = p.map_err(|e| {
                    let path = PathBuf::from(e.path());
                    Error::io(path, e.into())
                })?;
                if p.is_file() {
                    v.push(p);
                }
            }
            if v.is_empty() {
                return Err(Error::invalid(format!(
                    "dataset path pattern `{entry}` matched no files"
                )));
            }
            v
        } else {
            let path = PathBuf::from(entry);
            let meta = std::fs::metadata(&path).map_err(|e| Error::io(&path, e))?;
            if meta.is_dir() {
                let v = dir_files(&path)?;
                if v.is_empty() {
                    return Err(Error::invalid(format!(
                        "dataset folder `{entry}` holds no .jsonl, .json or .parquet files"
                    )));
                }
                v
            } else {
                vec![path]
            }
        };
        found.sort();
        for p in found {
            if seen.insert(p.clone()) {
                out.push(p);
            }
        }
    }
    Ok(out)
}

fn dir_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let p = entry.map_err(|e| Error::io(dir, e))?.path();
        let known = extension(&p).is_some_and(|e| EXTENSIONS.contains(&e.as_str()));
        if p.is_file() && known {
            v.push(p);
        }
    }
    Ok(v)
}

fn extension(path: &Path) -> Option<String> {
    path.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
}

fn read_jsonl(path: &Path, push: &mut impl FnMut(usize, &Value) -> Result<()>) -> Result<()> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let reader = std::io::BufReader::new(file);
    for (i, line) in reader.lines().enumerate() {
        let n = i + 1;
        let line = line.map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidData => Error::data(path, n, "not valid UTF-8"),
            _ => Error::io(path, e),
        })?;
        let line = if n == 1 {
            line.trim_start_matches('\u{feff}')
        } else {
            &line
        };
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(line).map_err(|e| {
            let msg = format!("invalid JSON: {} (column {})", json_msg(&e), e.column());
            Error::data(path, n, msg)
        })?;
        push(n, &value)?;
    }
    Ok(())
}

fn read_json_array(path: &Path, push: &mut impl FnMut(usize, &Value) -> Result<()>) -> Result<()> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let records = json_array_records(&text).map_err(|(line, msg)| Error::data(path, line, msg))?;
    for (line, value) in &records {
        push(*line, value)?;
    }
    Ok(())
}

/// Split a JSON array into its elements, each with the line it starts on, so errors in a
/// `.json` file point at a line like they do in `.jsonl`. `Err((line, message))`.
fn json_array_records(text: &str) -> std::result::Result<Vec<(usize, Value)>, (usize, String)> {
    let bytes = text.as_bytes();
    let mut pos = 0;
    let mut line = 1;
    // Advance over whitespace (and a BOM), counting newlines.
    let skip_ws = |pos: &mut usize, line: &mut usize| {
        if text[*pos..].starts_with('\u{feff}') {
            *pos += 3;
        }
        while *pos < bytes.len() && bytes[*pos].is_ascii_whitespace() {
            if bytes[*pos] == b'\n' {
                *line += 1;
            }
            *pos += 1;
        }
    };
    let count_lines =
        |from: usize, to: usize| bytes[from..to].iter().filter(|&&b| b == b'\n').count();
    skip_ws(&mut pos, &mut line);
    if bytes.get(pos) != Some(&b'[') {
        return Err((
            line,
            "expected a JSON array of records (use .jsonl for one record per line)".into(),
        ));
    }
    pos += 1;
    let mut out = Vec::new();
    loop {
        skip_ws(&mut pos, &mut line);
        if out.is_empty() && bytes.get(pos) == Some(&b']') {
            pos += 1;
            break;
        }
        let mut stream = serde_json::Deserializer::from_str(&text[pos..]).into_iter::<Value>();
        match stream.next() {
            Some(Ok(v)) => {
                let end = pos + stream.byte_offset();
                out.push((line, v));
                line += count_lines(pos, end);
                pos = end;
            }
            Some(Err(e)) => {
                let at = line + e.line().saturating_sub(1);
                return Err((at, format!("invalid JSON: {}", json_msg(&e))));
            }
            None => return Err((line, "invalid JSON: unterminated array".into())),
        }
        skip_ws(&mut pos, &mut line);
        match bytes.get(pos) {
            Some(b',') => pos += 1,
            Some(b']') => {
                pos += 1;
                break;
            }
            _ => {
                return Err((
                    line,
                    "invalid JSON: expected `,` or `]` after a record".into(),
                ))
            }
        }
    }
    skip_ws(&mut pos, &mut line);
    if pos < bytes.len() {
        return Err((
            line,
            "invalid JSON: trailing characters after the array".into(),
        ));
    }
    Ok(out)
}

/// serde_json's message without its "at line L column C", which is relative to the record.
fn json_msg(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    msg.strip_suffix(&suffix).unwrap_or(&msg).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_array_lines() {
        let text = "[\n  {\"a\": 1},\n  {\"a\":\n 2}, {\"a\": 3}\n]\n";
        let recs = json_array_records(text).unwrap();
        let lines: Vec<usize> = recs.iter().map(|r| r.0).collect();
        assert_eq!(lines, vec![2, 3, 4]);
        assert_eq!(recs[2].1, json!({"a": 3}));
        assert_eq!(json_array_records(" [ ] ").unwrap(), vec![]);
    }

    #[test]
    fn json_array_errors_point_at_lines() {
        let (line, msg) = json_array_records("[\n{\"a\": 1},\n{\"a\": }\n]").unwrap_err();
        assert_eq!(line, 3);
        assert!(msg.starts_with("invalid JSON"), "{msg}");
        assert_eq!(json_array_records("[{}\n{}]").unwrap_err().0, 2);
        assert!(json_array_records("{\"a\": 1}")
            .unwrap_err()
            .1
            .contains("expected a JSON array"));
        assert!(json_array_records("[{}] x")
            .unwrap_err()
            .1
            .contains("trailing"));
        assert!(json_array_records("[{},").is_err());
    }
}
