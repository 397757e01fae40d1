//! The mutation test: hostile model files end in success or a clean one-line error, never a
//! panic, an abort or a hang, under a memory cap.
//!
//! A tiny llama GGUF is written with the crate's own writer; every count, length, dim, offset
//! and type field of its header (and every integer or float metadata value) is set in turn to
//! 0, 1, 2^31, 2^32, 2^62, 2^64−1 and the bytes left after the field, and the file is cut at
//! every section boundary. The same for the safetensors header of a tiny HF folder (its length,
//! each tensor's dims, offsets and dtype) and for its `config.json` values (0, huge, negative,
//! fractional, wrong types). Then one case per file defect of issue 12, each with the outcome
//! it must have.
//!
//! Each case is loaded (`ft::model::load`), its chat template rendered and a forward pass run,
//! in a child process (this binary with `--child`) limited to [`MEMORY_CAP`] of address space
//! (`setrlimit(RLIMIT_AS)`, what `ulimit -v` sets), so an abort or an out-of-memory kill is seen
//! as that case's failure instead of taking the test runner down; a case that runs past
//! [`CASE_TIMEOUT`] is a hang. After a crash or hang the child restarts at the next case.
//! The child installs ft's budgeted allocator, as the `ft` binary does.

#[global_allocator]
static GLOBAL: ft::budget::Budgeted<std::alloc::System> = ft::budget::Budgeted(std::alloc::System);

mod common;
#[path = "common/tiny_files.rs"]
mod tiny_files;

use ft::gguf::Value;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tiny_files::{set_meta, tiny_gguf_parts, write_gguf};

/// Address space for the child: enough for the tiny models, far below what the defects asked.
const MEMORY_CAP: u64 = 2 << 30;
const CASE_TIMEOUT: Duration = Duration::from_secs(30);
const VALUES: [(&str, u64); 6] = [
    ("0", 0),
    ("1", 1),
    ("2^31", 1 << 31),
    ("2^32", 1 << 32),
    ("2^62", 1 << 62),
    ("2^64-1", u64::MAX),
];

/// What a case must end in. Every case must also end without a crash or hang, and an error
/// must be one non-empty line.
#[derive(Clone, Debug)]
enum Expect {
    /// Success.
    Ok,
    /// Success or a clean error.
    Clean,
    /// An error whose message holds all of these.
    Err(Vec<&'static str>),
    /// Success or a clean error within this many seconds.
    Within(f64),
}

#[derive(Clone, Debug)]
struct Case {
    label: String,
    /// `gguf` (a file) or `hf` (a folder).
    path: PathBuf,
    expect: Expect,
}

#[derive(Debug)]
enum Outcome {
    Ok,
    Err(String),
    Crash(String),
    Hang,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        child(Path::new(&args[i + 1]), args[i + 2].parse().unwrap_or(0));
        return;
    }
    if args.iter().any(|a| a == "--list") {
        println!("hostile_files: test");
        return;
    }
    // `cargo test NAME` passes NAME: run only when it names this test.
    let filters: Vec<&String> = args[1..].iter().filter(|a| !a.starts_with('-')).collect();
    if !filters.is_empty() && !filters.iter().any(|f| "hostile_files".contains(f.as_str())) {
        println!("hostile_files: filtered out");
        return;
    }
    parent();
}

// ---------------------------------------------------------------------------------------------
// The child: load each case, report one line per case.

fn exercise(path: &Path) -> ft::Result<String> {
    use candle_core::{Device, Tensor};
    use ft::model::{Ctx, LoadOptions};
    let loaded = ft::model::load(path, &LoadOptions::default())?;
    let prompt = match &loaded.template {
        Some(t) => t.render(&[ft::tokenizer::Message::new("user", "hi there")], true)?,
        None => "hi there".into(),
    };
    let mut ids: Vec<u32> = loaded
        .tokenizer
        .encode(&prompt, true)?
        .into_iter()
        .take(4)
        .collect();
    if ids.is_empty() {
        ids.push(0);
    }
    let x = Tensor::new(ids.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
    let ctx = Ctx::infer(ft::quant::MatmulMode::Exact, None);
    let logits = loaded.model.forward(&x, 0, None, &ctx)?;
    Ok(format!("{:?}", logits.dims()))
}

fn child(manifest: &Path, start: usize) {
    let text = std::fs::read_to_string(manifest).unwrap();
    let out = std::io::stdout();
    for (i, line) in text.lines().enumerate().skip(start) {
        let path = Path::new(line);
        writeln!(out.lock(), "@@start {i}").unwrap();
        let msg = match exercise(path) {
            Ok(_) => "ok".to_string(),
            Err(e) => format!("err {}", e.to_string().replace('\n', "\\n")),
        };
        writeln!(out.lock(), "@@done {i} {msg}").unwrap();
        out.lock().flush().unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// The parent: build the cases, run them in capped children, check and count the outcomes.

/// Run every case in capped child processes; one outcome per case, and each case's seconds.
fn run_children(cases: &[Case], dir: &Path) -> Vec<(Outcome, f64)> {
    use std::os::unix::process::CommandExt;
    let manifest = dir.join("manifest.txt");
    let lines: Vec<String> = cases.iter().map(|c| c.path.display().to_string()).collect();
    std::fs::write(&manifest, lines.join("\n")).unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut results: Vec<Option<(Outcome, f64)>> = (0..cases.len()).map(|_| None).collect();
    let mut next = 0;
    while next < cases.len() {
        let stderr_path = dir.join(format!("child-{next}.stderr"));
        let mut cmd = Command::new(&exe);
        // Errors as a user sees them: without candle's backtraces appended.
        cmd.env_remove("RUST_BACKTRACE")
            .env_remove("RUST_LIB_BACKTRACE")
            .arg("--child")
            .arg(&manifest)
            .arg(next.to_string())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_path).unwrap());
        // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                let lim = libc::rlimit {
                    rlim_cur: MEMORY_CAP,
                    rlim_max: MEMORY_CAP,
                };
                if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut current: Option<(usize, Instant)> = None;
        loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    if let Some(i) = line.strip_prefix("@@start ") {
                        current = Some((i.parse().unwrap(), Instant::now()));
                    } else if let Some(rest) = line.strip_prefix("@@done ") {
                        let (i, msg) = rest.split_once(' ').unwrap();
                        let i: usize = i.parse().unwrap();
                        let secs = current.map(|c| c.1.elapsed().as_secs_f64()).unwrap_or(0.0);
                        let o = match msg.strip_prefix("err ") {
                            Some(e) => Outcome::Err(e.to_string()),
                            None => Outcome::Ok,
                        };
                        results[i] = Some((o, secs));
                        next = i + 1;
                        current = None;
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if let Some((i, t)) = current {
                        if t.elapsed() > CASE_TIMEOUT {
                            let _ = child.kill();
                            let _ = child.wait();
                            results[i] = Some((Outcome::Hang, t.elapsed().as_secs_f64()));
                            next = i + 1;
                            break;
                        }
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait().unwrap();
                    if let Some((i, t)) = current {
                        let err = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                        let tail: Vec<&str> = err.lines().rev().take(3).collect();
                        results[i] = Some((
                            Outcome::Crash(format!("{status}: {}", tail.join(" | "))),
                            t.elapsed().as_secs_f64(),
                        ));
                        next = i + 1;
                    } else {
                        assert!(status.success(), "child failed between cases: {status}");
                    }
                    break;
                }
            }
        }
    }
    results.into_iter().map(|r| r.unwrap()).collect()
}

/// A field of the GGUF header: where it is, how wide, what it is.
struct Field {
    at: usize,
    width: usize,
    label: String,
}

fn field(fields: &mut Vec<Field>, at: usize, width: usize, label: String) {
    fields.push(Field { at, width, label });
}

/// Walk a GGUF written by the crate (a reader independent of the one under test): every
/// mutable field, the byte offsets where sections end, and where tensor data starts.
fn gguf_layout(b: &[u8]) -> (Vec<Field>, Vec<usize>, usize) {
    let mut fields = Vec::new();
    let mut cuts = Vec::new();
    let mut pos = 4;
    let u32_at = |p: usize| u32::from_le_bytes(b[p..p + 4].try_into().unwrap());
    let u64_at = |p: usize| u64::from_le_bytes(b[p..p + 8].try_into().unwrap()) as usize;
    cuts.push(4);
    field(&mut fields, pos, 4, "version".into());
    pos += 4;
    field(&mut fields, pos, 8, "tensor count".into());
    let n_tensors = u64_at(pos);
    pos += 8;
    field(&mut fields, pos, 8, "metadata count".into());
    let n_kv = u64_at(pos);
    pos += 8;
    cuts.push(pos);
    let width_of = |ty: u32| match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        10..=12 => 8,
        _ => 0,
    };
    let mut alignment = 32;
    for _ in 0..n_kv {
        let klen = u64_at(pos);
        let key = String::from_utf8_lossy(&b[pos + 8..pos + 8 + klen]).into_owned();
        field(&mut fields, pos, 8, format!("`{key}` key length"));
        pos += 8 + klen;
        let ty = u32_at(pos);
        field(&mut fields, pos, 4, format!("`{key}` value type"));
        pos += 4;
        match ty {
            8 => {
                field(&mut fields, pos, 8, format!("`{key}` string length"));
                pos += 8 + u64_at(pos);
            }
            9 => {
                let ety = u32_at(pos);
                field(&mut fields, pos, 4, format!("`{key}` element type"));
                pos += 4;
                let n = u64_at(pos);
                field(&mut fields, pos, 8, format!("`{key}` element count"));
                pos += 8;
                for j in 0..n {
                    if ety == 8 {
                        if j == 0 || j + 1 == n {
                            field(&mut fields, pos, 8, format!("`{key}`[{j}] length"));
                        }
                        pos += 8 + u64_at(pos);
                    } else {
                        pos += width_of(ety);
                    }
                }
            }
            t => {
                let w = width_of(t);
                if key == "general.alignment" {
                    alignment = u32_at(pos) as usize;
                }
                if w >= 2 {
                    field(&mut fields, pos, w, format!("`{key}` value"));
                }
                pos += w;
            }
        }
        cuts.push(pos);
    }
    let mut data_offsets = Vec::new();
    for _ in 0..n_tensors {
        let nlen = u64_at(pos);
        let name = String::from_utf8_lossy(&b[pos + 8..pos + 8 + nlen]).into_owned();
        field(&mut fields, pos, 8, format!("tensor `{name}` name length"));
        pos += 8 + nlen;
        let nd = u32_at(pos) as usize;
        field(&mut fields, pos, 4, format!("tensor `{name}` dim count"));
        pos += 4;
        for d in 0..nd {
            field(&mut fields, pos, 8, format!("tensor `{name}` dim {d}"));
            pos += 8;
        }
        field(&mut fields, pos, 4, format!("tensor `{name}` type"));
        pos += 4;
        data_offsets.push(u64_at(pos));
        field(&mut fields, pos, 8, format!("tensor `{name}` offset"));
        pos += 8;
        cuts.push(pos);
    }
    let data = pos.div_ceil(alignment) * alignment;
    cuts.push(data);
    cuts.extend(data_offsets.iter().map(|o| data + o));
    cuts.push(b.len() - 1);
    cuts.retain(|&c| c < b.len());
    cuts.sort();
    cuts.dedup();
    (fields, cuts, data)
}

/// The mutated copies of a GGUF: every field set to every value, cut at every boundary.
fn gguf_mutations(base: &[u8], dir: &Path) -> Vec<Case> {
    let (fields, cuts, _) = gguf_layout(base);
    let mut cases = Vec::new();
    let mut n = 0;
    let mut emit = |bytes: &[u8], label: String| {
        let p = dir.join(format!("m{n}.gguf"));
        n += 1;
        std::fs::write(&p, bytes).unwrap();
        cases.push(Case {
            label,
            path: p,
            expect: Expect::Clean,
        });
    };
    for f in &fields {
        let left = (base.len() - f.at - f.width) as u64;
        let mut seen = Vec::new();
        for (name, v) in VALUES.iter().copied().chain([("bytes left", left)]) {
            let bytes = &v.to_le_bytes()[..f.width];
            if seen.contains(&bytes.to_vec()) {
                continue;
            }
            seen.push(bytes.to_vec());
            let mut m = base.to_vec();
            m[f.at..f.at + f.width].copy_from_slice(bytes);
            emit(&m, format!("{} = {name}", f.label));
        }
    }
    for &c in &cuts {
        emit(&base[..c], format!("cut at byte {c} of {}", base.len()));
    }
    cases
}

/// The safetensors header of `bytes`: (JSON, data after it).
fn st_split(bytes: &[u8]) -> (serde_json::Value, &[u8]) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    (
        serde_json::from_slice(&bytes[8..8 + n]).unwrap(),
        &bytes[8 + n..],
    )
}

fn st_join(header: &serde_json::Value, data: &[u8]) -> Vec<u8> {
    let h = serde_json::to_vec(header).unwrap();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out
}

/// An HF folder like `base` whose `file` holds `bytes` (other files hard-linked).
fn hf_variant(base: &Path, dir: &Path, n: usize, file: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(format!("hf{n}"));
    std::fs::create_dir(&p).unwrap();
    for e in std::fs::read_dir(base).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        if name.to_str() == Some(file) {
            std::fs::write(p.join(&name), bytes).unwrap();
        } else {
            std::fs::hard_link(e.path(), p.join(&name)).unwrap();
        }
    }
    p
}

/// Folders made from the tiny HF base, one per case.
struct HfCases<'a> {
    base: &'a Path,
    dir: &'a Path,
    cases: Vec<Case>,
}

impl HfCases<'_> {
    /// A copy of the base whose `file` holds `bytes`, which must load or fail cleanly.
    fn emit(&mut self, file: &str, bytes: &[u8], label: String) {
        let p = hf_variant(self.base, self.dir, self.cases.len(), file, bytes);
        self.cases.push(Case {
            label,
            path: p,
            expect: Expect::Clean,
        });
    }

    /// An empty case folder.
    fn folder(&mut self) -> PathBuf {
        let p = self.dir.join(format!("hf{}", self.cases.len()));
        std::fs::create_dir(&p).unwrap();
        p
    }
}

fn hf_mutations(base: &Path, dir: &Path) -> Vec<Case> {
    let mut hf = HfCases {
        base,
        dir,
        cases: Vec::new(),
    };
    // safetensors: the header length, then dims, offsets and dtype of four tensors.
    let st = std::fs::read(base.join("model.safetensors")).unwrap();
    let file = "model.safetensors";
    for (name, v) in VALUES
        .iter()
        .copied()
        .chain([("bytes left", st.len() as u64 - 8)])
    {
        let mut m = st.clone();
        m[..8].copy_from_slice(&v.to_le_bytes());
        hf.emit(file, &m, format!("safetensors header length = {name}"));
    }
    let (header, data) = st_split(&st);
    let numbers: Vec<(String, serde_json::Value)> = VALUES
        .iter()
        .map(|(n, v)| (n.to_string(), serde_json::json!(v)))
        .chain([
            ("data size".into(), serde_json::json!(data.len())),
            ("-1".into(), serde_json::json!(-1)),
            ("1.5".into(), serde_json::json!(1.5)),
            ("\"7\"".into(), serde_json::json!("7")),
        ])
        .collect();
    for t in [
        "model.embed_tokens.weight",
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.1.input_layernorm.weight",
        "lm_head.weight",
    ] {
        let rank = header[t]["shape"].as_array().unwrap().len();
        let slots = (0..rank)
            .map(|d| ("shape", d))
            .chain([("data_offsets", 0), ("data_offsets", 1)]);
        for (key, idx) in slots {
            for (vn, v) in &numbers {
                let mut h = header.clone();
                h[t][key][idx] = v.clone();
                hf.emit(
                    file,
                    &st_join(&h, data),
                    format!("safetensors `{t}` {key}[{idx}] = {vn}"),
                );
            }
        }
        for dt in ["F16", "BF16", "F64", "I64", "U8", "BOOL", "F8_E4M3", "XX"] {
            let mut h = header.clone();
            h[t]["dtype"] = serde_json::json!(dt);
            hf.emit(
                file,
                &st_join(&h, data),
                format!("safetensors `{t}` dtype = {dt}"),
            );
        }
    }
    let hlen = st.len() - data.len();
    for c in [
        0,
        4,
        8,
        hlen / 2,
        hlen - 1,
        hlen,
        hlen + data.len() / 2,
        st.len() - 1,
    ] {
        hf.emit(
            file,
            &st[..c],
            format!("safetensors cut at byte {c} of {}", st.len()),
        );
    }
    // A shard index whose names point outside the folder.
    for shard in ["../hf-base/model.safetensors", "/etc/passwd", ""] {
        let p = hf.folder();
        for f in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
            std::fs::hard_link(base.join(f), p.join(f)).unwrap();
        }
        let index = serde_json::json!({"weight_map": {"lm_head.weight": shard}});
        std::fs::write(p.join("model.safetensors.index.json"), index.to_string()).unwrap();
        hf.cases.push(Case {
            label: format!("safetensors index names shard `{shard}`"),
            path: p,
            expect: Expect::Err(vec!["not a file name inside the folder"]),
        });
    }
    // config.json: each value 0, huge, negative, fractional, or of the wrong type.
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(base.join("config.json")).unwrap()).unwrap();
    let values: Vec<(&str, serde_json::Value)> = vec![
        ("0", serde_json::json!(0)),
        ("1", serde_json::json!(1)),
        ("2^31", serde_json::json!(1u64 << 31)),
        ("2^32", serde_json::json!(1u64 << 32)),
        ("2^62", serde_json::json!(1u64 << 62)),
        ("2^64-1", serde_json::json!(u64::MAX)),
        ("-1", serde_json::json!(-1)),
        ("1.5", serde_json::json!(1.5)),
        ("1e300", serde_json::json!(1e300)),
        ("string", serde_json::json!("64")),
        ("null", serde_json::Value::Null),
        ("list", serde_json::json!([64])),
        ("object", serde_json::json!({"a": 1})),
        ("true", serde_json::json!(true)),
    ];
    let keys = [
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "max_position_embeddings",
        "rms_norm_eps",
        "rope_theta",
        "sliding_window",
        "tie_word_embeddings",
        "model_type",
        "rope_scaling",
    ];
    for key in keys {
        for (vn, v) in &values {
            let mut c = cfg.clone();
            c[key] = v.clone();
            hf.emit(
                "config.json",
                c.to_string().as_bytes(),
                format!("config.json {key} = {vn}"),
            );
        }
    }
    for ty in ["linear", "llama3"] {
        for field in [
            "factor",
            "low_freq_factor",
            "high_freq_factor",
            "original_max_position_embeddings",
        ] {
            for (vn, v) in &values {
                let mut c = cfg.clone();
                c["rope_scaling"] = serde_json::json!({"rope_type": ty, "factor": 2.0});
                c["rope_scaling"][field] = v.clone();
                hf.emit(
                    "config.json",
                    c.to_string().as_bytes(),
                    format!("config.json rope_scaling {ty} {field} = {vn}"),
                );
            }
        }
    }
    hf.cases
}

/// Position of a metadata value or tensor-info field in a GGUF written from `parts`.
fn field_at(bytes: &[u8], label: &str) -> usize {
    let (fields, _, _) = gguf_layout(bytes);
    fields
        .iter()
        .find(|f| f.label == label)
        .unwrap_or_else(|| panic!("no field {label}"))
        .at
}

type Meta = Vec<(String, Value)>;
type Tensors = Vec<ft::gguf::write::TensorOut<'static>>;

/// A writer of the tiny GGUF with its parts edited first.
fn plain(edit: impl Fn(&mut Meta, &mut Tensors)) -> impl Fn(&Path) {
    move |p: &Path| {
        let (mut meta, mut tensors) = tiny_gguf_parts(1);
        edit(&mut meta, &mut tensors);
        write_gguf(p, &meta, &tensors);
    }
}

/// A writer of the tiny GGUF with its bytes edited after writing.
fn patch(edit: impl Fn(&mut Vec<u8>)) -> impl Fn(&Path) {
    move |p: &Path| {
        let (meta, tensors) = tiny_gguf_parts(1);
        write_gguf(p, &meta, &tensors);
        let mut b = std::fs::read(p).unwrap();
        edit(&mut b);
        std::fs::write(p, b).unwrap();
    }
}

/// One case per file defect of issue 12, each with the outcome it must have.
fn defect_cases(dir: &Path) -> Vec<Case> {
    let mut cases = Vec::new();
    let mut add = |name: &str, label: &str, expect: Expect, write: &dyn Fn(&Path)| {
        let p = dir.join(format!("{name}.gguf"));
        write(&p);
        cases.push(Case {
            label: label.to_string(),
            path: p,
            expect,
        });
    };
    add(
        "ok",
        "the unmutated tiny GGUF loads",
        Expect::Ok,
        &plain(|_, _| {}),
    );
    // Defect 3: attn_q with rows that do not split into the config's heads (SmolLM2's 9 heads
    // of 64: 4 rows divided by zero, 580 rows indexed past the end while un-permuting).
    for rows in [4usize, 580] {
        add(
            &format!("d3-{rows}"),
            &format!("defect 3: attn_q with {rows} rows, 9 heads of 64"),
            Expect::Err(vec!["q_proj", "shape"]),
            &plain(move |m, t| {
                set_meta(m, "llama.attention.head_count", Value::U32(9));
                set_meta(m, "llama.attention.key_length", Value::U32(64));
                let q = t
                    .iter_mut()
                    .find(|x| x.name == "blk.0.attn_q.weight")
                    .unwrap();
                q.shape = vec![rows, tiny_files::HIDDEN];
                q.dtype = candle_core::quantized::GgmlDType::F32;
                q.data = vec![0u8; rows * tiny_files::HIDDEN * 4].into();
            }),
        );
    }
    // Defect 4: a tensor claiming 2^62 elements (its byte size wrapped around to 0).
    add(
        "d4",
        "defect 4: output_norm claims 2^62 f32 elements",
        Expect::Err(vec!["output_norm"]),
        &patch(|b| {
            let at = field_at(b, "tensor `output_norm.weight` dim 0");
            b[at..at + 8].copy_from_slice(&(1u64 << 62).to_le_bytes());
        }),
    );
    // Defect 8: block_count 2^40 reserved 2^40 blocks.
    add(
        "d8-blocks",
        "defect 8: block_count 2^40 (u64)",
        Expect::Err(vec!["d8-blocks.gguf", "num_layers"]),
        &plain(|m, _| set_meta(m, "llama.block_count", Value::U64(1 << 40))),
    );
    // Defect 8: a token array whose count is the bytes left, in a 192 MiB file, reserved
    // 32 bytes per "element": 6 GiB.
    add(
        "d8-array",
        "defect 8: tokenizer.ggml.tokens count = bytes left (192 MiB file)",
        Expect::Err(vec!["tokenizer.ggml.tokens"]),
        &|p: &Path| {
            let (meta, tensors) = tiny_gguf_parts(1);
            write_gguf(p, &meta, &tensors);
            let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
            let len = f.metadata().unwrap().len() + (192 << 20);
            f.set_len(len).unwrap();
            drop(f);
            let mut b = std::fs::read(p).unwrap();
            let at = field_at(&b, "`tokenizer.ggml.tokens` element count");
            let left = (b.len() - at - 8) as u64;
            b[at..at + 8].copy_from_slice(&left.to_le_bytes());
            std::fs::write(p, b).unwrap();
        },
    );
    // Defect 10: a norm weight of the wrong length loaded, then panicked in a kernel.
    add(
        "d10",
        "defect 10: attn_norm with 96 elements",
        Expect::Err(vec!["input_layernorm", "shape"]),
        &plain(|_, t| {
            let n = t
                .iter_mut()
                .find(|x| x.name == "blk.0.attn_norm.weight")
                .unwrap();
            n.shape = vec![96];
            n.data = vec![0u8; 96 * 4].into();
        }),
    );
    // Defect 13: tensor data misaligned (offset not a multiple of general.alignment).
    add(
        "d13-offset",
        "defect 13: attn_norm offset + 4 (not a multiple of 32)",
        Expect::Err(vec!["attn_norm", "alignment"]),
        &patch(|b| {
            let at = field_at(b, "tensor `blk.0.attn_norm.weight` offset");
            let v = u64::from_le_bytes(b[at..at + 8].try_into().unwrap()) + 4;
            b[at..at + 8].copy_from_slice(&v.to_le_bytes());
        }),
    );
    // Defect 13: general.alignment 1 puts data at odd addresses.
    add(
        "d13-align1",
        "defect 13: general.alignment = 1 with f32 data at odd offsets",
        Expect::Err(vec!["aligned"]),
        &|p: &Path| {
            let (mut meta, tensors) = tiny_gguf_parts(1);
            set_meta(&mut meta, "general.alignment", Value::U32(1));
            // Pad the metadata until the data section starts at an odd byte.
            for pad in 1..=2 {
                set_meta(&mut meta, "general.pad", Value::String("x".repeat(pad)));
                write_gguf(p, &meta, &tensors);
                let (_, _, data) = gguf_layout(&std::fs::read(p).unwrap());
                if data % 2 == 1 {
                    return;
                }
            }
            panic!("could not misalign the data section");
        },
    );
    // Defect 13: RoPE scaling factor 0, negative, NaN.
    for (name, f) in [("0", 0.0f32), ("neg", -2.0), ("nan", f32::NAN)] {
        add(
            &format!("d13-rope-{name}"),
            &format!("defect 13: rope.scaling.factor = {f}"),
            Expect::Err(vec![".gguf", "rope_scaling.factor"]),
            &plain(move |m, _| {
                set_meta(m, "llama.rope.scaling.type", Value::String("linear".into()));
                set_meta(m, "llama.rope.scaling.factor", Value::F32(f));
            }),
        );
    }
    // Defect 13: a 300k-character token in a sentencepiece vocabulary.
    add(
        "d13-token",
        "defect 13: one 300k-character token (llama vocabulary)",
        Expect::Within(5.0),
        &plain(|m, _| {
            let mut tokens: Vec<Value> = vec![Value::String("<unk>".into())];
            tokens.extend((0..256).map(|b| Value::String(format!("<0x{b:02X}>"))));
            tokens.push(Value::String("a".into()));
            tokens.push(Value::String("ab".repeat(150_000)));
            let n = tokens.len();
            let types: Vec<Value> = (0..n)
                .map(|i| {
                    Value::I32(if i == 0 {
                        2
                    } else if i <= 256 {
                        6
                    } else {
                        1
                    })
                })
                .collect();
            set_meta(m, "tokenizer.ggml.model", Value::String("llama".into()));
            set_meta(m, "tokenizer.ggml.tokens", Value::Array(tokens));
            set_meta(m, "tokenizer.ggml.token_type", Value::Array(types));
            set_meta(
                m,
                "tokenizer.ggml.scores",
                Value::Array((0..n).map(|i| Value::F32(-(i as f32))).collect()),
            );
            m.retain(|(k, _)| k != "tokenizer.ggml.merges");
        }),
    );
    // Defect 6: hostile chat templates in the file's metadata.
    let templates = [
        (
            "loop",
            "{% for i in range(100000) %}{% for j in range(100000) %}{{ '' }}{% endfor %}{% endfor %}",
            "instructions",
        ),
        (
            "double",
            "{% set ns = namespace(s='xxxxxxxxxxxxxxxx') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
            "memory",
        ),
        ("flood", "{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}", "output exceeds"),
    ];
    for (name, src, needle) in templates {
        add(
            &format!("d6-{name}"),
            &format!("defect 6: chat template {name}"),
            Expect::Err(vec!["tokenizer.chat_template of", needle]),
            &plain(move |m, _| set_meta(m, "tokenizer.chat_template", Value::String(src.into()))),
        );
    }
    cases
}

fn parent() {
    let start = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let base_path = dir.join("base.gguf");
    let (meta, tensors) = tiny_gguf_parts(1);
    write_gguf(&base_path, &meta, &tensors);
    let base = std::fs::read(&base_path).unwrap();
    let gguf_dir = dir.join("gguf");
    let hf_dir = dir.join("hf");
    let defect_dir = dir.join("defects");
    for d in [&gguf_dir, &hf_dir, &defect_dir] {
        std::fs::create_dir(d).unwrap();
    }
    let hf_base = dir.join("hf-base");
    ft::testing::tiny_hf_dir(&hf_base, 1).unwrap();
    let groups: Vec<(&str, Vec<Case>)> = vec![
        ("GGUF header mutations", gguf_mutations(&base, &gguf_dir)),
        (
            "HF safetensors + config.json mutations",
            hf_mutations(&hf_base, &hf_dir),
        ),
        ("file defects of issue 12", defect_cases(&defect_dir)),
    ];
    let all: Vec<Case> = groups.iter().flat_map(|(_, c)| c.clone()).collect();
    let built = start.elapsed().as_secs_f64();
    let outcomes = run_children(&all, dir);
    let mut failures = Vec::new();
    let mut k = 0;
    println!(
        "hostile files (memory cap {} GiB per child):",
        MEMORY_CAP >> 30
    );
    for (group, cases) in &groups {
        let (mut ok, mut err) = (0, 0);
        for case in cases {
            let (outcome, secs) = &outcomes[k];
            k += 1;
            let problem = match (outcome, &case.expect) {
                (Outcome::Crash(m), _) => Some(format!("crashed: {m}")),
                (Outcome::Hang, _) => Some(format!("hung (killed after {secs:.0}s)")),
                (Outcome::Err(e), _) if e.is_empty() || e.contains("\\n") => {
                    Some(format!("error is not one line: {e}"))
                }
                (Outcome::Ok, Expect::Err(_)) => Some("loaded, but must be refused".into()),
                (Outcome::Err(e), Expect::Ok) => Some(format!("must load: {e}")),
                (Outcome::Err(e), Expect::Err(needles))
                    if !needles.iter().all(|n| e.contains(n)) =>
                {
                    Some(format!("error `{e}` lacks {needles:?}"))
                }
                (_, Expect::Within(limit)) if secs > limit => {
                    Some(format!("took {secs:.1}s, more than {limit}s"))
                }
                _ => None,
            };
            match outcome {
                Outcome::Ok => ok += 1,
                Outcome::Err(_) => err += 1,
                _ => {}
            }
            if let Some(p) = problem {
                failures.push(format!("{}: {p}", case.label));
            }
            if group.starts_with("file defects") {
                let shown = match outcome {
                    Outcome::Ok => "ok".to_string(),
                    Outcome::Err(e) => format!("error: {e}"),
                    other => format!("{other:?}"),
                };
                println!(
                    "  {:<62} {secs:>5.2}s  {}",
                    case.label,
                    shown.chars().take(150).collect::<String>()
                );
            }
        }
        println!(
            "{group}: {} cases -> {ok} loaded, {err} clean errors, {} failures",
            cases.len(),
            cases.len() - ok - err
        );
    }
    println!(
        "{} cases in {:.1}s ({built:.1}s to write them; shared 2-core machine)",
        all.len(),
        start.elapsed().as_secs_f64()
    );
    if !failures.is_empty() {
        for f in &failures {
            eprintln!("FAIL {f}");
        }
        panic!("{} hostile-file cases failed", failures.len());
    }
}
