//! Perplexity of a text, computed as llama.cpp's `llama-perplexity` does: the tokens are cut
//! into chunks of `ctx`; each chunk is run from an empty cache and only the second half of its
//! positions is scored (so every scored token has at least ctx/2 tokens of context).
//! With `stride` < ctx, a sliding window instead scores each token once with up to ctx of context.

use crate::error::{Error, Result};
use crate::model::{Ctx, Llama};
use candle_core::{DType, Tensor, D};
use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
pub struct Perplexity {
    pub ppl: f64,
    /// Standard error of the perplexity (delta method over per-token NLLs).
    pub ppl_stderr: f64,
    pub mean_nll: f64,
    pub scored_tokens: usize,
    pub chunks: usize,
    pub ctx: usize,
    pub method: &'static str,
}

/// NLL of each next token in `ids` (len n) -> n-1 values, for positions `from..`.
fn window_nll(model: &Llama, ctx: &Ctx, ids: &[u32], from: usize) -> Result<Vec<f64>> {
    let input = Tensor::new(ids, &model.device)?.unsqueeze(0)?;
    let h = model.forward_hidden(&input, 0, None, None, ctx)?;
    let n = ids.len();
    let h = h.narrow(1, from, n - 1 - from)?;
    let logits = model.logits(&h, ctx)?.squeeze(0)?.to_dtype(DType::F64)?;
    let lp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
    let targets = Tensor::new(&ids[from + 1..], &model.device)?;
    let picked = lp.gather(&targets.unsqueeze(1)?, 1)?.squeeze(1)?;
    Ok(picked.neg()?.to_vec1::<f64>()?)
}

pub fn perplexity(
    model: &Llama,
    ctx: &Ctx,
    ids: &[u32],
    n_ctx: usize,
    stride: Option<usize>,
    mut progress: impl FnMut(usize, usize),
) -> Result<Perplexity> {
    if n_ctx < 8 || n_ctx > model.max_positions() {
        return Err(Error::invalid(format!(
            "--ctx must be in 8..={} (got {n_ctx})",
            model.max_positions()
        )));
    }
    // Each scored token needs one before it: an empty or one-token text has nothing to score
    // (the sliding window would otherwise average zero values into NaN).
    if ids.len() < 2 {
        return Err(Error::invalid(format!(
            "the text has {} token(s); perplexity needs at least 2",
            ids.len()
        )));
    }
    let mut nll = Vec::new();
    let (chunks, method) = match stride {
        None => {
            let chunks = ids.len() / n_ctx;
            if chunks == 0 {
                return Err(Error::invalid(format!(
                    "the text has {} tokens, fewer than one chunk of --ctx {n_ctx}",
                    ids.len()
                )));
            }
            for c in 0..chunks {
                let w = &ids[c * n_ctx..(c + 1) * n_ctx];
                nll.extend(window_nll(model, ctx, w, n_ctx / 2)?);
                progress(c + 1, chunks);
            }
            (
                chunks,
                "llama.cpp chunks: score the second half of each chunk",
            )
        }
        Some(s) => {
            if s == 0 || s > n_ctx {
                return Err(Error::invalid(format!(
                    "--stride must be in 1..=ctx (got {s})"
                )));
            }
            // Targets ids[..=scored_to] are done; each window scores the ones after them.
            let mut scored_to = 0;
            let mut start = 0;
            let mut windows = 0;
            let total = ids.len().saturating_sub(n_ctx).div_ceil(s) + 1;
            while scored_to + 1 < ids.len() {
                let end = (start + n_ctx).min(ids.len());
                let from = scored_to.max(start) - start;
                nll.extend(window_nll(model, ctx, &ids[start..end], from)?);
                scored_to = end - 1;
                windows += 1;
                progress(windows, total);
                start += s;
            }
            (windows, "sliding window")
        }
    };
    let n = nll.len() as f64;
    let mean = nll.iter().sum::<f64>() / n;
    let var = nll.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    let ppl = mean.exp();
    Ok(Perplexity {
        ppl,
        ppl_stderr: ppl * (var / n).sqrt(),
        mean_nll: mean,
        scored_tokens: nll.len(),
        chunks,
        ctx: n_ctx,
        method,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::MatmulMode;

    #[test]
    fn too_short_texts_are_errors_not_nan() {
        let model = crate::testing::tiny_model(1, None).unwrap();
        let ctx = Ctx::infer(MatmulMode::Exact, None);
        for ids in [&[][..], &[72u32][..]] {
            for stride in [Some(4), None] {
                let e = perplexity(&model, &ctx, ids, 16, stride, |_, _| {})
                    .map(|p| p.ppl)
                    .unwrap_err()
                    .to_string();
                assert!(
                    e.contains("token"),
                    "{} tokens, stride {stride:?}: {e}",
                    ids.len()
                );
            }
        }
        let p = perplexity(&model, &ctx, &[72, 101, 108], 16, Some(4), |_, _| {}).unwrap();
        assert!(p.ppl.is_finite() && p.scored_tokens == 2, "{p:?}");
    }
}
