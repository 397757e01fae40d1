//! Bounds-checked GGUF reader over a memory map.

use super::{dtype_from_u32, Value, DEFAULT_ALIGNMENT};
use crate::error::{Error, Result};
use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType, QTensor};
use candle_core::Device;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 4] = b"GGUF";
/// Sanity bounds: far above any real file, low enough that corrupt counts fail fast.
const MAX_DIMS: u32 = 4;
const MAX_ARRAY_NESTING: usize = 2;
/// Array elements in all metadata together. A real vocabulary has ~1M (tokens, types, scores,
/// merges); each element is a 32-byte [`Value`], so this bounds metadata at ~0.5 GB.
const MAX_ARRAY_ELEMENTS: u64 = 1 << 24;
/// Never reserve more than this many entries up front from a count read from the file; a
/// vector grows past it only as real entries are parsed.
const MAX_PREALLOC: usize = 4096;
/// The fewest bytes a metadata entry (key length, type, 1-byte value) and a tensor info (name
/// length, dim count, one dim, type, offset) take: counts are checked against the bytes left.
const MIN_KV_BYTES: u64 = 8 + 4 + 1;
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 4 + 8 + 4 + 8;

/// Bytes one array element of value type `ty` takes at least; None for an unknown type.
fn min_value_bytes(ty: u32) -> Option<u64> {
    Some(match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        10..=12 => 8,
        // A string: its 8-byte length. An array: element type + count.
        8 => 8,
        9 => 12,
        _ => return None,
    })
}

/// The memory alignment candle's typed view of a tensor's bytes needs (`qtensor_from_ggml`
/// casts the bytes to a slice of blocks; a misaligned one is undefined behaviour).
fn type_alignment(dtype: GgmlDType) -> usize {
    use candle_core::quantized::k_quants as k;
    use std::mem::align_of;
    match dtype {
        GgmlDType::F32 => align_of::<f32>(),
        GgmlDType::F16 | GgmlDType::BF16 => align_of::<u16>(),
        GgmlDType::Q4_0 => align_of::<k::BlockQ4_0>(),
        GgmlDType::Q4_1 => align_of::<k::BlockQ4_1>(),
        GgmlDType::Q5_0 => align_of::<k::BlockQ5_0>(),
        GgmlDType::Q5_1 => align_of::<k::BlockQ5_1>(),
        GgmlDType::Q8_0 => align_of::<k::BlockQ8_0>(),
        GgmlDType::Q8_1 => align_of::<k::BlockQ8_1>(),
        GgmlDType::Q2K => align_of::<k::BlockQ2K>(),
        GgmlDType::Q3K => align_of::<k::BlockQ3K>(),
        GgmlDType::Q4K => align_of::<k::BlockQ4K>(),
        GgmlDType::Q5K => align_of::<k::BlockQ5K>(),
        GgmlDType::Q6K => align_of::<k::BlockQ6K>(),
        GgmlDType::Q8K => align_of::<k::BlockQ8K>(),
    }
}

#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    /// Dims as GGUF stores them: innermost (row length) first.
    pub ggml_dims: Vec<u64>,
    pub dtype: GgmlDType,
    /// Byte offset in the file (absolute).
    pub start: usize,
    pub size: usize,
}

impl TensorInfo {
    /// Shape in candle/PyTorch order: outermost first, e.g. (out_features, in_features).
    pub fn shape(&self) -> Vec<usize> {
        self.ggml_dims.iter().rev().map(|&d| d as usize).collect()
    }

    pub fn elem_count(&self) -> usize {
        self.ggml_dims.iter().product::<u64>() as usize
    }
}

/// An open GGUF file: metadata parsed, tensor data left in the memory map until asked for.
pub struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    pub metadata: BTreeMap<String, Value>,
    pub tensors: Vec<TensorInfo>,
    mmap: memmap2::Mmap,
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
    /// Array elements read so far (bounded by [`MAX_ARRAY_ELEMENTS`]).
    array_elements: u64,
}

impl<'a> Cursor<'a> {
    fn err(&self, msg: impl Into<String>) -> Error {
        Error::format(
            self.path,
            format!(
                "truncated or corrupt GGUF at byte {}: {}",
                self.pos,
                msg.into()
            ),
        )
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(end) => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(self.err(format!(
                "file truncated while reading {what} ({n} bytes wanted, {} left)",
                self.buf.len() - self.pos
            ))),
        }
    }

    fn left(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let len = self.u64(what)?;
        let len = usize::try_from(len).map_err(|_| self.err(format!("{what}: length {len}")))?;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.err(format!("{what} is not UTF-8")))
    }

    fn value(&mut self, ty: u32, key: &str, depth: usize) -> Result<Value> {
        Ok(match ty {
            0 => Value::U8(self.array::<1>(key)?[0]),
            1 => Value::I8(self.array::<1>(key)?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.array(key)?)),
            3 => Value::I16(i16::from_le_bytes(self.array(key)?)),
            4 => Value::U32(self.u32(key)?),
            5 => Value::I32(i32::from_le_bytes(self.array(key)?)),
            6 => Value::F32(f32::from_le_bytes(self.array(key)?)),
            7 => match self.array::<1>(key)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(self.err(format!("{key}: bool byte {b}"))),
            },
            8 => Value::String(self.string(key)?),
            9 => {
                if depth >= MAX_ARRAY_NESTING {
                    return Err(self.err(format!("{key}: arrays nested too deeply")));
                }
                let elem_ty = self.u32(key)?;
                let n = self.u64(key)?;
                let min = min_value_bytes(elem_ty).ok_or_else(|| {
                    self.err(format!("{key}: unknown array element type {elem_ty}"))
                })?;
                // Checked against the bytes left before anything is reserved for it.
                if n > self.left() / min {
                    return Err(self.err(format!(
                        "{key}: array of {n} elements of at least {min} bytes exceeds the {} bytes left",
                        self.left()
                    )));
                }
                self.array_elements = self.array_elements.saturating_add(n);
                if self.array_elements > MAX_ARRAY_ELEMENTS {
                    return Err(self.err(format!(
                        "{key}: metadata arrays hold more than {MAX_ARRAY_ELEMENTS} elements in all"
                    )));
                }
                let mut v = Vec::with_capacity((n as usize).min(MAX_PREALLOC));
                for _ in 0..n {
                    v.push(self.value(elem_ty, key, depth + 1)?);
                }
                Value::Array(v)
            }
            10 => Value::U64(self.u64(key)?),
            11 => Value::I64(i64::from_le_bytes(self.array(key)?)),
            12 => Value::F64(f64::from_le_bytes(self.array(key)?)),
            t => return Err(self.err(format!("{key}: unknown value type {t}"))),
        })
    }
}

impl GgufFile {
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only; ft never writes to a file while it has it mapped
        // (outputs go to a temp file that is renamed over the destination).
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        Self::parse(path, mmap)
    }

    fn parse(path: &Path, mmap: memmap2::Mmap) -> Result<Self> {
        let mut c = Cursor {
            buf: &mmap,
            pos: 0,
            path,
            array_elements: 0,
        };
        let magic = c
            .take(4, "magic")
            .map_err(|_| Error::format(path, "not a GGUF file (shorter than its 4-byte magic)"))?;
        if magic != MAGIC {
            return Err(Error::format(
                path,
                format!("not a GGUF file (magic {magic:02x?}, expected \"GGUF\")"),
            ));
        }
        let version = c.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(Error::format(
                path,
                format!("GGUF version {version} is not supported (expected 2 or 3)"),
            ));
        }
        let n_tensors = c.u64("tensor count")?;
        let n_kv = c.u64("metadata count")?;
        let left = c.left();
        if n_kv > left / MIN_KV_BYTES
            || n_tensors > left / MIN_TENSOR_INFO_BYTES
            || n_kv
                .saturating_mul(MIN_KV_BYTES)
                .saturating_add(n_tensors.saturating_mul(MIN_TENSOR_INFO_BYTES))
                > left
        {
            return Err(c.err(format!(
                "file truncated or corrupt: {n_tensors} tensors / {n_kv} metadata entries cannot fit in its {left} bytes"
            )));
        }
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = c.string("metadata key")?;
            let ty = c.u32(&key)?;
            let v = c.value(ty, &key, 0)?;
            if metadata.contains_key(&key) {
                return Err(c.err(format!("metadata key `{key}` appears twice")));
            }
            metadata.insert(key, v);
        }
        let mut infos = Vec::with_capacity((n_tensors as usize).min(MAX_PREALLOC));
        let mut names = std::collections::HashSet::new();
        for _ in 0..n_tensors {
            let name = c.string("tensor name")?;
            if !names.insert(name.clone()) {
                return Err(c.err(format!("tensor `{name}` appears twice")));
            }
            let n_dims = c.u32(&name)?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(c.err(format!("tensor `{name}` has {n_dims} dimensions")));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(c.u64(&name)?);
            }
            let ty = c.u32(&name)?;
            let dtype = dtype_from_u32(ty)
                .ok_or_else(|| c.err(format!("tensor `{name}` has unknown ggml type {ty}")))?;
            let offset = c.u64(&name)?;
            infos.push((name, dims, dtype, offset));
        }
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() => a,
                _ => return Err(c.err(format!("general.alignment {v:?} is not a power of two"))),
            },
        };
        let data_start = (c.pos as u64).div_ceil(alignment) * alignment;
        let file_len = c.buf.len() as u64;
        let mut tensors = Vec::with_capacity(infos.len());
        for (name, dims, dtype, offset) in infos {
            if !offset.is_multiple_of(alignment) {
                return Err(Error::format(
                    path,
                    format!("tensor `{name}`: data offset {offset} is not a multiple of the alignment {alignment}"),
                ));
            }
            let elems = dims
                .iter()
                .try_fold(1u64, |a, &d| a.checked_mul(d))
                .filter(|&e| e > 0)
                .ok_or_else(|| {
                    Error::format(path, format!("tensor `{name}`: bad dims {dims:?}"))
                })?;
            let block = dtype.block_size() as u64;
            if dims[0] % block != 0 {
                return Err(Error::format(
                    path,
                    format!(
                        "tensor `{name}`: row length {} is not a multiple of the {} block size {block}",
                        dims[0],
                        super::dtype_name(dtype)
                    ),
                ));
            }
            // Checked: 2^62 elements of 4 bytes must not wrap around to a small size.
            let size = (elems / block).checked_mul(dtype.type_size() as u64);
            let start = data_start.checked_add(offset);
            let end = start.zip(size).and_then(|(s, n)| s.checked_add(n));
            match (start, size, end) {
                (Some(s), Some(n), Some(e)) if e <= file_len => {
                    // With general.alignment below the type's own, data can sit misaligned.
                    if !(s as usize).is_multiple_of(type_alignment(dtype)) {
                        return Err(Error::format(
                            path,
                            format!(
                                "tensor `{name}`: data at byte {s} is not aligned for {} (general.alignment {alignment})",
                                super::dtype_name(dtype)
                            ),
                        ));
                    }
                    tensors.push(TensorInfo {
                        name,
                        ggml_dims: dims,
                        dtype,
                        start: s as usize,
                        size: n as usize,
                    })
                }
                _ => {
                    return Err(Error::format(
                        path,
                        format!(
                            "file truncated or corrupt: tensor `{name}` needs bytes up to {} but the file has {file_len}",
                            end.map(|e| e.to_string()).unwrap_or_else(|| "overflow".into())
                        ),
                    ))
                }
            }
        }
        Ok(GgufFile {
            path: path.to_path_buf(),
            version,
            metadata,
            tensors,
            mmap,
        })
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }

    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(Value::as_u64)
    }

    pub fn get_f64(&self, key: &str) -> Option<f64> {
        self.get(key).and_then(Value::as_f64)
    }

    pub fn architecture(&self) -> Result<&str> {
        self.get_str("general.architecture")
            .ok_or_else(|| Error::format(&self.path, "metadata `general.architecture` is missing"))
    }

    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The raw stored bytes of a tensor.
    pub fn tensor_bytes(&self, info: &TensorInfo) -> &[u8] {
        &self.mmap[info.start..info.start + info.size]
    }

    /// A tensor in its stored form (quantized blocks stay quantized).
    pub fn qtensor(&self, name: &str, device: &Device) -> Result<QTensor> {
        let info = self
            .tensor_info(name)
            .ok_or_else(|| Error::format(&self.path, format!("tensor `{name}` is missing")))?;
        qtensor_from_ggml(info.dtype, self.tensor_bytes(info), info.shape(), device)
            .map_err(|e| Error::format(&self.path, format!("tensor `{name}`: {e}")))
    }
}
