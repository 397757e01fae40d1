//! Parquet files (the Hugging Face Hub's usual export), ft's one parquet reader: each row of
//! the columns a caller names becomes a JSON object, converted by the same rules as a `.jsonl`
//! record (training examples here, MMLU questions in `eval::mmlu`).
//!
//! Supported column types: strings (`utf8`, `large_utf8`, `utf8_view`) for the simple formats;
//! for chat, `list<struct<role: string, content: string>>` or a string column holding JSON.
//! Numbers and booleans are read too, so a wrong type gets the same error as in JSON.

use std::path::Path;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{
    DataType, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type,
    UInt32Type, UInt64Type, UInt8Type,
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;
use serde_json::{Map, Value};

use super::example::{missing, FieldMap, Format};
use crate::error::{Error, Result};

/// Read the dataset records of a parquet file: the columns `format` uses, under `fields`.
pub(crate) fn read_parquet(
    path: &Path,
    format: Format,
    fields: &FieldMap,
    push: &mut impl FnMut(usize, &Value) -> Result<()>,
) -> Result<()> {
    let missing_column = |name: &str, have: &[&str]| {
        format!(
            "{}; columns are: {}",
            missing(name, format),
            have.join(", ")
        )
    };
    read_rows(path, &fields.columns(format), &missing_column, push)
}

/// Call `push(row, object)` for every row (1-based) of `path`, the object holding the named
/// `columns` that exist. A missing column marked required is an error with the message
/// `missing_column(name, columns the file has)`. Other columns are never decoded, so they may
/// have any type.
pub fn read_rows(
    path: &Path,
    columns: &[(&str, bool)],
    missing_column: &dyn Fn(&str, &[&str]) -> String,
    push: &mut impl FnMut(usize, &Value) -> Result<()>,
) -> Result<()> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| Error::format(path, format!("parquet: not a readable parquet file: {e}")))?;
    let schema = builder.schema().clone();

    let mut roots = Vec::new();
    let mut names = Vec::new();
    for &(name, required) in columns {
        match schema.index_of(name) {
            Ok(i) => {
                roots.push(i);
                names.push(name.to_string());
            }
            Err(_) if required => {
                let have: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                return Err(Error::format(path, missing_column(name, &have)));
            }
            Err(_) => {}
        }
    }
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let reader = builder
        .with_projection(mask)
        .build()
        .map_err(|e| Error::format(path, e.to_string()))?;

    let mut row = 0usize;
    for batch in reader {
        let batch = batch.map_err(|e| Error::format(path, format!("reading rows: {e}")))?;
        let columns: Vec<(&String, &dyn Array)> = names
            .iter()
            .filter_map(|n| batch.column_by_name(n).map(|c| (n, c.as_ref())))
            .collect();
        for i in 0..batch.num_rows() {
            row += 1;
            let mut obj = Map::new();
            for (name, col) in &columns {
                let v = cell(*col, i)
                    .map_err(|msg| Error::data(path, row, format!("column `{name}`: {msg}")))?;
                obj.insert((*name).clone(), v);
            }
            push(row, &Value::Object(obj))?;
        }
    }
    Ok(())
}

/// One cell as JSON. Lists and structs recurse, so `list<struct<role, content>>` becomes a
/// list of message objects.
fn cell(array: &dyn Array, i: usize) -> std::result::Result<Value, String> {
    if array.is_null(i) {
        return Ok(Value::Null);
    }
    Ok(match array.data_type() {
        DataType::Null => Value::Null,
        DataType::Utf8 => Value::String(array.as_string::<i32>().value(i).to_string()),
        DataType::LargeUtf8 => Value::String(array.as_string::<i64>().value(i).to_string()),
        DataType::Utf8View => Value::String(array.as_string_view().value(i).to_string()),
        DataType::Boolean => Value::Bool(array.as_boolean().value(i)),
        DataType::Int8 => Value::from(array.as_primitive::<Int8Type>().value(i)),
        DataType::Int16 => Value::from(array.as_primitive::<Int16Type>().value(i)),
        DataType::Int32 => Value::from(array.as_primitive::<Int32Type>().value(i)),
        DataType::Int64 => Value::from(array.as_primitive::<Int64Type>().value(i)),
        DataType::UInt8 => Value::from(array.as_primitive::<UInt8Type>().value(i)),
        DataType::UInt16 => Value::from(array.as_primitive::<UInt16Type>().value(i)),
        DataType::UInt32 => Value::from(array.as_primitive::<UInt32Type>().value(i)),
        DataType::UInt64 => Value::from(array.as_primitive::<UInt64Type>().value(i)),
        DataType::Float32 => Value::from(array.as_primitive::<Float32Type>().value(i)),
        DataType::Float64 => Value::from(array.as_primitive::<Float64Type>().value(i)),
        DataType::List(_) => list(array.as_list::<i32>().value(i).as_ref())?,
        DataType::LargeList(_) => list(array.as_list::<i64>().value(i).as_ref())?,
        DataType::Struct(_) => {
            let s = array.as_struct();
            let mut obj = Map::new();
            for (name, col) in s.column_names().into_iter().zip(s.columns()) {
                obj.insert(name.to_string(), cell(col.as_ref(), i)?);
            }
            Value::Object(obj)
        }
        other => return Err(format!("unsupported column type {other}")),
    })
}

fn list(values: &dyn Array) -> std::result::Result<Value, String> {
    (0..values.len())
        .map(|j| cell(values, j))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map(Value::Array)
}
