//! TensorBoard event files, written by hand: TFRecord framing (u64 length, masked CRC32C of
//! the length, the record, masked CRC32C of the record) around a hand-encoded `Event` protobuf
//! (wall_time = 1, step = 2, file_version = 3, summary = 5 { value = 1 { tag = 1,
//! simple_value = 2 } }). Scalars only: that is all ft logs, and it avoids an unmaintained
//! dependency tree. Also a JSONL metrics log for scripts.

use crate::error::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

fn masked_crc(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    (crc.rotate_right(15)).wrapping_add(0xa282_ead8)
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn field_bytes(field: u32, bytes: &[u8], out: &mut Vec<u8>) {
    varint(((field as u64) << 3) | 2, out);
    varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// An `Event` with either a file version or one scalar summary value.
fn event(wall: f64, step: i64, version: Option<&str>, scalar: Option<(&str, f32)>) -> Vec<u8> {
    let mut e = Vec::new();
    e.push((1 << 3) | 1); // wall_time: double
    e.extend_from_slice(&wall.to_le_bytes());
    varint(2 << 3, &mut e); // step: int64 varint
    varint(step as u64, &mut e);
    if let Some(v) = version {
        field_bytes(3, v.as_bytes(), &mut e);
    }
    if let Some((tag, value)) = scalar {
        let mut val = Vec::new();
        field_bytes(1, tag.as_bytes(), &mut val);
        val.push((2 << 3) | 5); // simple_value: float
        val.extend_from_slice(&value.to_le_bytes());
        let mut summary = Vec::new();
        field_bytes(1, &val, &mut summary);
        field_bytes(5, &summary, &mut e);
    }
    e
}

fn record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut r = Vec::with_capacity(data.len() + 16);
    r.extend_from_slice(&len);
    r.extend_from_slice(&masked_crc(&len).to_le_bytes());
    r.extend_from_slice(data);
    r.extend_from_slice(&masked_crc(data).to_le_bytes());
    r
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The host name for the file name, reduced to characters safe in a path.
fn hostname() -> String {
    let raw = ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .unwrap_or_default();
    let clean: String = raw
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect();
    if clean.is_empty() {
        "localhost".into()
    } else {
        clean
    }
}

/// Appends scalar events to one TensorBoard event file.
pub struct EventWriter {
    path: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
}

impl EventWriter {
    /// A new event file in `dir` (`events.out.tfevents.<secs>.<host>.ft`), opening with the
    /// `brain.Event:2` version record TensorBoard expects first.
    pub fn create(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let base = format!("events.out.tfevents.{}.{}.ft", now() as u64, hostname());
        // Never truncate another writer's file: two runs started within one second (a quick
        // --resume, tests) get `.ft.1`, `.ft.2`; TensorBoard reads any name containing "tfevents".
        let mut n = 0;
        let (path, f) = loop {
            let path = dir.join(if n == 0 {
                base.clone()
            } else {
                format!("{base}.{n}")
            });
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(f) => break (path, f),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
                Err(e) => return Err(Error::io(&path, e)),
            }
        };
        let mut w = EventWriter {
            path,
            file: std::io::BufWriter::new(f),
        };
        w.write(&event(now(), 0, Some("brain.Event:2"), None))?;
        w.flush()?;
        Ok(w)
    }

    fn write(&mut self, ev: &[u8]) -> Result<()> {
        self.file
            .write_all(&record(ev))
            .map_err(|e| Error::io(&self.path, e))
    }

    /// One scalar event (buffered; [`EventWriter::flush`] makes it visible to TensorBoard).
    pub fn add_scalar(&mut self, tag: &str, value: f32, step: i64) -> Result<()> {
        self.write(&event(now(), step, None, Some((tag, value))))
    }

    pub fn flush(&mut self) -> Result<()> {
        self.file.flush().map_err(|e| Error::io(&self.path, e))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// One JSON object per line: `{"step": N, "loss": .., ...}` (appends, so resumed runs continue).
/// Each line is written whole and unbuffered, so a killed run leaves only complete lines;
/// a non-finite value (NaN loss) is written as `null`, since JSON has no NaN.
pub struct MetricsLog {
    path: PathBuf,
    file: std::fs::File,
}

impl MetricsLog {
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(d) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        Ok(MetricsLog {
            path: path.to_path_buf(),
            file,
        })
    }

    pub fn log(&mut self, step: u64, metrics: &[(&str, f64)]) -> Result<()> {
        let mut m = serde_json::Map::new();
        m.insert("step".into(), step.into());
        for (k, v) in metrics {
            m.insert((*k).into(), serde_json::json!(v));
        }
        let line = format!("{}\n", serde_json::Value::Object(m));
        self.file
            .write_all(line.as_bytes())
            .map_err(|e| Error::io(&self.path, e))
    }
}

/// Read back the scalars of an event file: (tag, step, value). For tests and `ft` tooling.
pub fn read_scalars(path: &Path) -> Result<Vec<(String, i64, f32)>> {
    let data = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |m: &str| Error::format(path, format!("corrupt event file: {m}"));
    let mut out = Vec::new();
    let mut p = 0;
    while p < data.len() {
        let len_bytes = data.get(p..p + 8).ok_or_else(|| bad("truncated length"))?;
        let len = u64::from_le_bytes(len_bytes.try_into().map_err(|_| bad("length"))?) as usize;
        let crc = data
            .get(p + 8..p + 12)
            .ok_or_else(|| bad("truncated crc"))?;
        if u32::from_le_bytes(crc.try_into().map_err(|_| bad("crc"))?) != masked_crc(len_bytes) {
            return Err(bad("length crc mismatch"));
        }
        let body = data
            .get(p + 12..p + 12 + len)
            .ok_or_else(|| bad("truncated record"))?;
        let dcrc = data
            .get(p + 12 + len..p + 16 + len)
            .ok_or_else(|| bad("truncated data crc"))?;
        if u32::from_le_bytes(dcrc.try_into().map_err(|_| bad("crc"))?) != masked_crc(body) {
            return Err(bad("data crc mismatch"));
        }
        if let Some(s) = decode_scalar(body) {
            out.push(s);
        }
        p += 16 + len;
    }
    Ok(out)
}

fn read_varint(b: &[u8], p: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*p)?;
        *p += 1;
        v |= ((byte & 0x7f) as u64) << shift;
        if byte < 0x80 {
            return Some(v);
        }
    }
    None
}

/// Fields of a protobuf message: (field, wire type, payload slice or varint value).
fn fields(b: &[u8]) -> Option<Vec<(u32, &[u8], u64)>> {
    let mut p = 0;
    let mut out = Vec::new();
    while p < b.len() {
        let key = read_varint(b, &mut p)?;
        let (f, wt) = ((key >> 3) as u32, key & 7);
        match wt {
            0 => out.push((f, &b[0..0], read_varint(b, &mut p)?)),
            1 => {
                out.push((f, b.get(p..p + 8)?, 0));
                p += 8;
            }
            2 => {
                let n = read_varint(b, &mut p)? as usize;
                out.push((f, b.get(p..p + n)?, 0));
                p += n;
            }
            5 => {
                out.push((f, b.get(p..p + 4)?, 0));
                p += 4;
            }
            _ => return None,
        }
    }
    Some(out)
}

fn decode_scalar(ev: &[u8]) -> Option<(String, i64, f32)> {
    let f = fields(ev)?;
    let step = f.iter().find(|x| x.0 == 2).map(|x| x.2 as i64).unwrap_or(0);
    let summary = f.iter().find(|x| x.0 == 5)?.1;
    let value = fields(summary)?.into_iter().find(|x| x.0 == 1)?.1;
    let vf = fields(value)?;
    let tag = String::from_utf8(vf.iter().find(|x| x.0 == 1)?.1.to_vec()).ok()?;
    let v = f32::from_le_bytes(vf.iter().find(|x| x.0 == 2)?.1.try_into().ok()?);
    Some((tag, step, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_masking_matches_tensorflow() {
        // Vectors from Python: tensorboard.compat.tensorflow_stub.pywrap_tensorflow.masked_crc32c.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283); // RFC 3720 check value
        assert_eq!(masked_crc(b"123456789"), 0xc78a_b0e5);
        assert_eq!(masked_crc(b""), 0xa282_ead8);
        assert_eq!(masked_crc(&5u64.to_le_bytes()), 0x3e04_b2ea);
    }

    #[test]
    fn event_bytes_match_protobuf() {
        // Event{wall_time: 1.0, step: 3, summary{value{tag: "a", simple_value: 0.5}}}, as
        // tensorboard's own `event_pb2.Event(...).SerializeToString()` writes it.
        let got = event(1.0, 3, None, Some(("a", 0.5)));
        let want: &[u8] = &[
            0x09, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f, 0x10, 0x03, 0x2a, 0x0a, 0x0a, 0x08, 0x0a, 0x01,
            b'a', 0x15, 0, 0, 0, 0x3f,
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn two_writers_in_one_second_do_not_clobber() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = EventWriter::create(dir.path()).unwrap();
        let mut b = EventWriter::create(dir.path()).unwrap();
        assert_ne!(a.path(), b.path());
        a.add_scalar("x", 1.0, 1).unwrap();
        b.add_scalar("x", 2.0, 1).unwrap();
        a.flush().unwrap();
        b.flush().unwrap();
        assert_eq!(read_scalars(a.path()).unwrap(), vec![("x".into(), 1, 1.0)]);
        assert_eq!(read_scalars(b.path()).unwrap(), vec![("x".into(), 1, 2.0)]);
    }

    #[test]
    fn metrics_jsonl_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/metrics.jsonl");
        let mut m = MetricsLog::open(&p).unwrap();
        m.log(1, &[("loss", 2.5), ("lr", 1e-3)]).unwrap();
        m.log(2, &[("loss", f64::NAN)]).unwrap();
        drop(m);
        MetricsLog::open(&p)
            .unwrap()
            .log(3, &[("eval_loss", 1.0)])
            .unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3, "reopening appends");
        assert_eq!(lines[0]["step"], 1);
        assert_eq!(lines[0]["lr"], 1e-3);
        assert!(lines[1]["loss"].is_null());
        assert_eq!(lines[2]["eval_loss"], 1.0);
    }

    /// Writes a sample file for `scripts/check_tensorboard.py` (TensorBoard's own reader):
    /// `FT_TB_OUT=/tmp/tb cargo test --release --lib tensorboard -- --ignored`.
    #[test]
    #[ignore]
    fn write_sample_for_tensorboard() {
        let dir = std::env::var("FT_TB_OUT").unwrap_or_else(|_| "target/tb-sample".into());
        let mut w = EventWriter::create(Path::new(&dir)).unwrap();
        for step in 1..=5 {
            w.add_scalar("train/loss", 3.0 / step as f32, step).unwrap();
            w.add_scalar("train/lr", 1e-3, step).unwrap();
        }
        w.add_scalar("eval/loss", 0.75, 5).unwrap();
        w.flush().unwrap();
        println!("{}", w.path().display());
    }

    #[test]
    fn scalars_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EventWriter::create(dir.path()).unwrap();
        w.add_scalar("train/loss", 2.5, 1).unwrap();
        w.add_scalar("train/loss", 1.25, 2).unwrap();
        w.add_scalar("eval/loss", 3.0, 2).unwrap();
        w.flush().unwrap();
        let got = read_scalars(w.path()).unwrap();
        assert_eq!(
            got,
            vec![
                ("train/loss".into(), 1, 2.5),
                ("train/loss".into(), 2, 1.25),
                ("eval/loss".into(), 2, 3.0)
            ]
        );
    }
}
