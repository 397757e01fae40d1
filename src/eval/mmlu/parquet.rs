//! Hugging Face layout parquet (`cais/mmlu`), read with arrow: `question`, `subject`, `choices`
//! (list of 4 strings), `answer` (class-label integer 0..3, or a letter). Line numbers in errors are
//! 1-based rows.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int64Array, ListArray, StringArray};
use arrow::datatypes::{DataType, Field};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;

use super::load::{make, parse_answer, Groups};
use crate::error::{Error, Result};

/// Append the questions of a parquet file to `out`; returns how many.
pub(super) fn load_parquet(path: &Path, out: &mut Groups) -> Result<usize> {
    let fmt = |e: &dyn std::fmt::Display| Error::format(path, format!("parquet: {e}"));
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| fmt(&e))?
        .build()
        .map_err(|e| fmt(&e))?;
    let mut row = 0usize;
    for batch in reader {
        let batch = batch.map_err(|e| fmt(&e))?;
        let column = |name: &str| -> Result<&ArrayRef> {
            batch.column_by_name(name).ok_or_else(|| {
                Error::format(
                    path,
                    format!(
                        "no `{name}` column; expected the Hugging Face MMLU layout \
                         (question, subject, choices, answer)"
                    ),
                )
            })
        };
        let question = as_strings(path, "question", column("question")?)?;
        let subject = as_strings(path, "subject", column("subject")?)?;
        let choices_col = column("choices")?;
        let list_type = DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)));
        let choices = arrow::compute::cast(choices_col, &list_type).map_err(|e| {
            Error::format(
                path,
                format!("column `choices` is not a list of strings: {e}"),
            )
        })?;
        let choices = choices
            .as_any()
            .downcast_ref::<ListArray>()
            .ok_or_else(|| Error::format(path, "column `choices` is not a list of strings"))?;
        let answer_col = column("answer")?;
        let answers = Answers::new(path, answer_col)?;
        for i in 0..batch.num_rows() {
            row += 1;
            let null = |name: &str| Error::data(path, row, format!("field `{name}` is null"));
            if question.is_null(i) {
                return Err(null("question"));
            }
            if subject.is_null(i) {
                return Err(null("subject"));
            }
            if choices.is_null(i) {
                return Err(null("choices"));
            }
            let list = choices.value(i);
            let list = list.as_any().downcast_ref::<StringArray>().ok_or_else(|| {
                Error::data(path, row, "field `choices` is not a list of strings")
            })?;
            if list.len() != 4 || list.null_count() > 0 {
                return Err(Error::data(
                    path,
                    row,
                    format!(
                        "field `choices` must hold 4 strings (got {} entries, {} null)",
                        list.len(),
                        list.null_count()
                    ),
                ));
            }
            let choices4 = [0, 1, 2, 3].map(|k| list.value(k).to_string());
            let answer = answers.get(i).map_err(|msg| Error::data(path, row, msg))?;
            let q = make(
                subject.value(i).to_string(),
                question.value(i).to_string(),
                choices4,
                answer,
            )
            .map_err(|msg| Error::data(path, row, msg))?;
            out.push(q);
        }
    }
    Ok(row)
}

fn as_strings(path: &Path, name: &str, col: &ArrayRef) -> Result<StringArray> {
    let cast = arrow::compute::cast(col, &DataType::Utf8)
        .map_err(|e| Error::format(path, format!("column `{name}` is not text: {e}")))?;
    cast.as_any()
        .downcast_ref::<StringArray>()
        .cloned()
        .ok_or_else(|| Error::format(path, format!("column `{name}` is not text")))
}

/// The `answer` column: integers (Hugging Face's class label) or letters.
enum Answers {
    Index(Int64Array),
    Letter(StringArray),
}

impl Answers {
    fn new(path: &Path, col: &ArrayRef) -> Result<Self> {
        let bad = |e: String| Error::format(path, format!("column `answer`: {e}"));
        match col.data_type() {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                Ok(Answers::Letter(as_strings(path, "answer", col)?))
            }
            _ => {
                let cast = arrow::compute::cast(col, &DataType::Int64)
                    .map_err(|e| bad(format!("not an integer: {e}")))?;
                cast.as_any()
                    .downcast_ref::<Int64Array>()
                    .cloned()
                    .map(Answers::Index)
                    .ok_or_else(|| bad("not an integer".into()))
            }
        }
    }

    fn get(&self, i: usize) -> std::result::Result<usize, String> {
        let value = match self {
            Answers::Index(a) if a.is_valid(i) => Value::from(a.value(i)),
            Answers::Letter(a) if a.is_valid(i) => Value::from(a.value(i)),
            _ => return Err("field `answer` is null".into()),
        };
        parse_answer(Some(&value), "answer")
    }
}
