//! The one table mapping Hugging Face tensor names to GGUF tensor names.
//! Model code uses HF names (`model.layers.3.self_attn.q_proj.weight`) everywhere.

/// (HF suffix inside a layer, GGUF suffix inside a block)
const LAYER_TABLE: [(&str, &str); 9] = [
    ("input_layernorm", "attn_norm"),
    ("self_attn.q_proj", "attn_q"),
    ("self_attn.k_proj", "attn_k"),
    ("self_attn.v_proj", "attn_v"),
    ("self_attn.o_proj", "attn_output"),
    ("post_attention_layernorm", "ffn_norm"),
    ("mlp.gate_proj", "ffn_gate"),
    ("mlp.up_proj", "ffn_up"),
    ("mlp.down_proj", "ffn_down"),
];

const GLOBAL_TABLE: [(&str, &str); 3] = [
    ("model.embed_tokens", "token_embd"),
    ("model.norm", "output_norm"),
    ("lm_head", "output"),
];

/// `model.layers.3.self_attn.q_proj.weight` -> `blk.3.attn_q.weight`.
pub fn hf_to_gguf(name: &str) -> Option<String> {
    let (stem, kind) = name.rsplit_once('.')?;
    for (hf, gg) in GLOBAL_TABLE {
        if stem == hf {
            return Some(format!("{gg}.{kind}"));
        }
    }
    let rest = stem.strip_prefix("model.layers.")?;
    let (idx, module) = rest.split_once('.')?;
    let idx: usize = idx.parse().ok()?;
    LAYER_TABLE
        .iter()
        .find(|(hf, _)| *hf == module)
        .map(|(_, gg)| format!("blk.{idx}.{gg}.{kind}"))
}

/// `blk.3.attn_q.weight` -> `model.layers.3.self_attn.q_proj.weight`.
pub fn gguf_to_hf(name: &str) -> Option<String> {
    let (stem, kind) = name.rsplit_once('.')?;
    for (hf, gg) in GLOBAL_TABLE {
        if stem == gg {
            return Some(format!("{hf}.{kind}"));
        }
    }
    let rest = stem.strip_prefix("blk.")?;
    let (idx, module) = rest.split_once('.')?;
    let idx: usize = idx.parse().ok()?;
    LAYER_TABLE
        .iter()
        .find(|(_, gg)| *gg == module)
        .map(|(hf, _)| format!("model.layers.{idx}.{hf}.{kind}"))
}

/// HF name of a layer's tensor: `layer(3, "self_attn.q_proj", "weight")`.
pub fn layer(idx: usize, module: &str, kind: &str) -> String {
    format!("model.layers.{idx}.{module}.{kind}")
}

/// The HF module path of a projection short name: `q_proj` -> `self_attn.q_proj`.
pub fn proj_path(short: &str) -> &'static str {
    match short {
        "q_proj" => "self_attn.q_proj",
        "k_proj" => "self_attn.k_proj",
        "v_proj" => "self_attn.v_proj",
        "o_proj" => "self_attn.o_proj",
        "gate_proj" => "mlp.gate_proj",
        "up_proj" => "mlp.up_proj",
        _ => "mlp.down_proj",
    }
}

/// llama.cpp stores llama-architecture q/k rows permuted for its interleaved RoPE
/// (convert_hf_to_gguf.py `LlamaModel.permute`). For GGUF row `g`, the HF row it holds:
/// GGUF[h·hd + 2i + j] = HF[h·hd + j·hd/2 + i], for head h, pair i, half j.
/// `rows` must split into `n_head` heads of even size (see [`check_qk_rows`]).
pub fn qk_gguf_to_hf_rows(rows: usize, n_head: usize) -> Vec<usize> {
    debug_assert!(check_qk_rows(rows, n_head).is_ok());
    let hd = rows / n_head.max(1);
    (0..rows)
        .map(|g| {
            let (h, r) = (g / hd, g % hd);
            let (i, j) = (r / 2, r % 2);
            h * hd + j * (hd / 2) + i
        })
        .collect()
}

/// Whether `rows` q/k rows split into `n_head` heads of an even, non-zero size: what the
/// permutation needs. File data reaches it, so this is an error, never a panic.
pub fn check_qk_rows(rows: usize, n_head: usize) -> Result<(), String> {
    if n_head == 0
        || rows == 0
        || !rows.is_multiple_of(n_head)
        || !(rows / n_head).is_multiple_of(2)
    {
        return Err(format!(
            "{rows} rows do not split into {n_head} heads of an even size"
        ));
    }
    Ok(())
}

/// Reorder equal-sized rows of `bytes`: out row `k` = in row `src[k]`. `src` is a permutation
/// of `0..src.len()` and `bytes` holds `src.len()` whole rows.
fn gather_rows(bytes: &[u8], src: &[usize]) -> Vec<u8> {
    let row = bytes.len() / src.len().max(1);
    let mut out = Vec::with_capacity(bytes.len());
    for &s in src {
        out.extend_from_slice(&bytes[s * row..(s + 1) * row]);
    }
    out
}

fn check_bytes(bytes: &[u8], rows: usize, n_head: usize) -> Result<(), String> {
    check_qk_rows(rows, n_head)?;
    if !bytes.len().is_multiple_of(rows) {
        return Err(format!(
            "{} bytes do not hold {rows} equal rows",
            bytes.len()
        ));
    }
    Ok(())
}

/// GGUF layout -> HF layout.
pub fn unpermute_qk(bytes: &[u8], rows: usize, n_head: usize) -> Result<Vec<u8>, String> {
    check_bytes(bytes, rows, n_head)?;
    // HF row perm[g] holds GGUF row g, so HF row k comes from the g with perm[g] == k.
    let perm = qk_gguf_to_hf_rows(rows, n_head);
    let mut inv = vec![0; rows];
    for (g, &h) in perm.iter().enumerate() {
        inv[h] = g;
    }
    Ok(gather_rows(bytes, &inv))
}

/// HF layout -> GGUF layout.
pub fn permute_qk(bytes: &[u8], rows: usize, n_head: usize) -> Result<Vec<u8>, String> {
    check_bytes(bytes, rows, n_head)?;
    Ok(gather_rows(bytes, &qk_gguf_to_hf_rows(rows, n_head)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for n in [
            "model.embed_tokens.weight",
            "model.norm.weight",
            "lm_head.weight",
            "model.layers.12.self_attn.k_proj.bias",
            "model.layers.0.mlp.down_proj.weight",
            "model.layers.29.post_attention_layernorm.weight",
        ] {
            let g = hf_to_gguf(n).unwrap();
            assert_eq!(gguf_to_hf(&g).unwrap(), n, "{g}");
        }
        assert_eq!(
            hf_to_gguf("model.layers.3.self_attn.q_proj.weight").unwrap(),
            "blk.3.attn_q.weight"
        );
        assert!(hf_to_gguf("model.layers.x.mlp.up_proj.weight").is_none());
    }

    #[test]
    fn qk_permutation_matches_llama_cpp() {
        // 2 heads of dim 4: HF rows [a0 a1 b0 b1 | c0 c1 d0 d1] -> GGUF [a0 b0 a1 b1 | c0 d0 c1 d1]
        let hf: Vec<u8> = (0..8).collect();
        let g = permute_qk(&hf, 8, 2).unwrap();
        assert_eq!(g, vec![0, 2, 1, 3, 4, 6, 5, 7]);
        assert_eq!(unpermute_qk(&g, 8, 2).unwrap(), hf);
        let hf: Vec<u8> = (0..64).collect();
        assert_eq!(
            unpermute_qk(&permute_qk(&hf, 32, 4).unwrap(), 32, 4).unwrap(),
            hf
        );
    }

    #[test]
    fn rows_that_do_not_split_into_heads_are_errors() {
        // Defect 3: 4 rows over 9 heads divided by zero; 580 rows indexed past the end.
        for (rows, heads) in [(4, 9), (580, 9), (8, 0), (6, 2), (0, 1)] {
            let bytes = vec![0u8; rows * 2];
            assert!(unpermute_qk(&bytes, rows, heads).is_err(), "{rows}/{heads}");
            assert!(permute_qk(&bytes, rows, heads).is_err(), "{rows}/{heads}");
        }
        assert!(unpermute_qk(&[0u8; 9], 4, 2).is_err());
    }
}
