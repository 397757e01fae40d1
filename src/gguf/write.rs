//! GGUF v3 writer: header, metadata, tensor infos (dims innermost-first), then each tensor's
//! data at an offset aligned to `general.alignment` (32). Written atomically: a temp file in
//! the destination folder is renamed over the destination only once complete.
//!
//! [`write_streaming`] asks for each tensor's bytes only when it is written, so an exporter can
//! quantize one tensor at a time and never hold the whole output in memory.

use super::{dtype_name, dtype_to_u32, Value, DEFAULT_ALIGNMENT};
use crate::error::{Error, Result};
use candle_core::quantized::GgmlDType;
use std::borrow::Cow;
use std::io::Write;
use std::path::Path;

/// One tensor to write: raw bytes in ggml layout (what `QTensor::data()` gives).
#[derive(Clone, Debug)]
pub struct TensorOut<'a> {
    pub name: String,
    /// Candle/PyTorch order: outermost first, e.g. (out_features, in_features).
    pub shape: Vec<usize>,
    pub dtype: GgmlDType,
    pub data: Cow<'a, [u8]>,
}

/// What the header says about a tensor whose bytes come later.
#[derive(Clone, Debug)]
pub struct TensorHeader {
    pub name: String,
    /// Candle/PyTorch order.
    pub shape: Vec<usize>,
    pub dtype: GgmlDType,
}

impl TensorHeader {
    /// Bytes of this tensor's data, or an error when the row length does not fit the block.
    pub fn byte_size(&self) -> Result<usize> {
        let block = self.dtype.block_size();
        let ncols = self.shape.last().copied().unwrap_or(1);
        if self.shape.is_empty() || ncols % block != 0 {
            return Err(Error::tensor(
                &self.name,
                format!(
                    "shape {:?} does not fit {} (rows must be a multiple of {block})",
                    self.shape,
                    dtype_name(self.dtype)
                ),
            ));
        }
        let elems: usize = self.shape.iter().product();
        Ok(elems / block * self.dtype.type_size())
    }
}

/// Write a complete GGUF file from in-memory tensors.
pub fn write(path: &Path, metadata: &[(String, Value)], tensors: &[TensorOut<'_>]) -> Result<()> {
    let headers: Vec<TensorHeader> = tensors
        .iter()
        .map(|t| TensorHeader {
            name: t.name.clone(),
            shape: t.shape.clone(),
            dtype: t.dtype,
        })
        .collect();
    write_streaming(path, metadata, &headers, |i| {
        Ok(Cow::Borrowed(tensors[i].data.as_ref()))
    })
}

/// Write a GGUF file, calling `data(i)` for the bytes of `headers[i]` in order.
pub fn write_streaming<'a>(
    path: &Path,
    metadata: &[(String, Value)],
    headers: &[TensorHeader],
    mut data: impl FnMut(usize) -> Result<Cow<'a, [u8]>>,
) -> Result<()> {
    let mut meta: Vec<(String, Value)> = metadata.to_vec();
    let alignment = match meta.iter().find(|(k, _)| k == "general.alignment") {
        Some((_, v)) => match v.as_u64() {
            Some(a) if a > 0 && a.is_power_of_two() => a,
            _ => {
                return Err(Error::invalid(format!(
                    "general.alignment {v:?} is not a power of two"
                )))
            }
        },
        None => {
            meta.push((
                "general.alignment".into(),
                Value::U32(DEFAULT_ALIGNMENT as u32),
            ));
            DEFAULT_ALIGNMENT
        }
    } as usize;
    let mut seen = std::collections::HashSet::new();
    for (k, _) in &meta {
        if !seen.insert(k.as_str()) {
            return Err(Error::invalid(format!("metadata key `{k}` given twice")));
        }
    }
    let mut names = std::collections::HashSet::new();
    let mut head = Vec::new();
    head.extend_from_slice(b"GGUF");
    head.extend_from_slice(&3u32.to_le_bytes());
    head.extend_from_slice(&(headers.len() as u64).to_le_bytes());
    head.extend_from_slice(&(meta.len() as u64).to_le_bytes());
    for (k, v) in &meta {
        put_str(&mut head, k);
        head.extend_from_slice(&v.type_id().to_le_bytes());
        put_value(&mut head, k, v)?;
    }
    let mut sizes = Vec::with_capacity(headers.len());
    let mut offset = 0usize;
    for h in headers {
        if !names.insert(h.name.as_str()) {
            return Err(Error::tensor(&h.name, "given twice"));
        }
        let size = h.byte_size()?;
        put_str(&mut head, &h.name);
        head.extend_from_slice(&(h.shape.len() as u32).to_le_bytes());
        for &d in h.shape.iter().rev() {
            head.extend_from_slice(&(d as u64).to_le_bytes());
        }
        head.extend_from_slice(&dtype_to_u32(h.dtype).to_le_bytes());
        head.extend_from_slice(&(offset as u64).to_le_bytes());
        sizes.push(size);
        offset += size.div_ceil(alignment) * alignment;
    }
    pad(&mut head, alignment);
    // The callback's library errors cannot cross the io::Result boundary: park them here.
    let mut failure: Option<Error> = None;
    let result = crate::output::write_file(path, |w| {
        w.write_all(&head)?;
        for (i, h) in headers.iter().enumerate() {
            let bytes = match data(i) {
                Ok(b) => b,
                Err(e) => {
                    failure = Some(e);
                    return Err(std::io::Error::other("tensor data failed"));
                }
            };
            if bytes.len() != sizes[i] {
                failure = Some(Error::tensor(
                    &h.name,
                    format!(
                        "{} bytes of data, {:?} {} needs {}",
                        bytes.len(),
                        h.shape,
                        dtype_name(h.dtype),
                        sizes[i]
                    ),
                ));
                return Err(std::io::Error::other("tensor size mismatch"));
            }
            w.write_all(&bytes)?;
            let padded = sizes[i].div_ceil(alignment) * alignment;
            w.write_all(&vec![0u8; padded - sizes[i]])?;
        }
        Ok(())
    });
    match (failure, result) {
        (Some(e), _) => Err(e),
        (None, r) => r,
    }
}

fn pad(buf: &mut Vec<u8>, alignment: usize) {
    let n = buf.len().div_ceil(alignment) * alignment - buf.len();
    buf.extend(std::iter::repeat_n(0u8, n));
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as u64).to_le_bytes());
    buf.extend_from_slice(s.as_bytes());
}

fn put_value(buf: &mut Vec<u8>, key: &str, v: &Value) -> Result<()> {
    match v {
        Value::U8(x) => buf.push(*x),
        Value::I8(x) => buf.push(*x as u8),
        Value::U16(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => buf.push(*x as u8),
        Value::String(s) => put_str(buf, s),
        Value::U64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::Array(items) => {
            // An empty array has no element to take the type from: strings (e.g. no merges).
            let ty = items.first().map(Value::type_id).unwrap_or(8);
            if items.iter().any(|x| x.type_id() != ty) {
                return Err(Error::invalid(format!(
                    "metadata `{key}`: array mixes value types"
                )));
            }
            if let Some(Value::Array(_)) = items.first() {
                return Err(Error::invalid(format!(
                    "metadata `{key}`: nested arrays are not written"
                )));
            }
            buf.extend_from_slice(&ty.to_le_bytes());
            buf.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for x in items {
                put_value(buf, key, x)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::GgufFile;
    use candle_core::quantized::QTensor;
    use candle_core::{Device, Tensor};

    #[test]
    fn round_trip_metadata_and_tensors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.gguf");
        let meta = vec![
            (
                "general.architecture".to_string(),
                Value::String("llama".into()),
            ),
            ("a.u32".into(), Value::U32(7)),
            ("a.f32".into(), Value::F32(1.5)),
            ("a.bool".into(), Value::Bool(true)),
            ("a.i64".into(), Value::I64(-3)),
            (
                "a.strs".into(),
                Value::Array(vec![Value::String("x".into()), Value::String("yz".into())]),
            ),
            ("a.empty".into(), Value::Array(vec![])),
        ];
        let dev = Device::Cpu;
        let w: Vec<f32> = (0..64 * 3).map(|i| (i as f32 * 0.37).sin()).collect();
        let t = Tensor::from_vec(w.clone(), (3, 64), &dev).unwrap();
        let q = QTensor::quantize(&t, GgmlDType::Q8_0).unwrap();
        let norm: Vec<u8> = [1.0f32, 2.0, 3.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let tensors = vec![
            TensorOut {
                name: "w".into(),
                shape: vec![3, 64],
                dtype: GgmlDType::Q8_0,
                data: q.data().unwrap(),
            },
            TensorOut {
                name: "n".into(),
                shape: vec![3],
                dtype: GgmlDType::F32,
                data: Cow::Owned(norm),
            },
        ];
        write(&path, &meta, &tensors).unwrap();
        let f = GgufFile::open(&path).unwrap();
        assert_eq!(f.version, 3);
        for (k, v) in &meta {
            assert_eq!(f.get(k), Some(v), "{k}");
        }
        assert_eq!(f.get_u64("general.alignment"), Some(32));
        let info = f.tensor_info("w").unwrap();
        assert_eq!(info.ggml_dims, vec![64, 3]);
        assert_eq!(info.start % 32, 0);
        assert_eq!(f.tensor_bytes(info), q.data().unwrap().as_ref());
        let n = f.qtensor("n", &dev).unwrap().dequantize(&dev).unwrap();
        assert_eq!(n.to_vec1::<f32>().unwrap(), vec![1.0, 2.0, 3.0]);
        assert_eq!(f.tensor_info("n").unwrap().start % 32, 0);
    }

    #[test]
    fn wrong_sizes_are_errors_and_leave_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.gguf");
        let t = TensorOut {
            name: "w".into(),
            shape: vec![2, 32],
            dtype: GgmlDType::F32,
            data: Cow::Owned(vec![0; 10]),
        };
        let e = write(&path, &[], &[t]).unwrap_err().to_string();
        assert!(e.contains("`w`") && e.contains("256"), "{e}");
        assert!(!path.exists());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "temp file left behind"
        );
        let t = TensorOut {
            name: "w".into(),
            shape: vec![2, 100],
            dtype: GgmlDType::Q4K,
            data: Cow::Owned(vec![]),
        };
        let e = write(&path, &[], &[t]).unwrap_err().to_string();
        assert!(e.contains("multiple of 256"), "{e}");
    }
}
