//! Held-out loss: the mean masked next-token loss of a model (any adapter slot) over encoded
//! examples. Training's eval loss and `ft eval`'s "held-out loss" are this one function over
//! rows encoded the same way ([`crate::data::encode::Encoder::for_dataset`]).

use crate::data::encode::{pad_batch, Encoded, Encoder};
use crate::data::{DatasetConfig, Example};
use crate::error::Result;
use crate::model::loss::masked_nll_sum;
use crate::model::{Ctx, Llama, Loaded};
use crate::tokenizer::ChatTemplate;

/// Mean masked loss over `rows` under `ctx` (any adapter slot or none), `batch_size` rows at a
/// time with `pad` as padding; None when no row has a target token.
pub fn dataset_loss(
    model: &Llama,
    rows: &[Encoded],
    batch_size: usize,
    pad: u32,
    ctx: Ctx,
) -> Result<Option<f64>> {
    if rows.is_empty() {
        return Ok(None);
    }
    let (mut sum, mut count) = (0f64, 0f64);
    for chunk in rows.chunks(batch_size.max(1)) {
        let refs: Vec<&Encoded> = chunk.iter().collect();
        let b = pad_batch(&refs, pad, &model.device)?;
        let h = model.forward_hidden(&b.input, 0, None, None, &ctx)?;
        let (s, c) = masked_nll_sum(model, &h, &ctx, &b.target, &b.loss_mask)?;
        sum += s.to_scalar::<f32>()? as f64;
        count += c;
    }
    Ok((count > 0.0).then(|| sum / count))
}

/// What [`held_out_loss`] measured.
#[derive(Clone, Debug, PartialEq)]
pub struct HeldOutLoss {
    /// Mean masked loss; None when no example kept a target token.
    pub loss: Option<f64>,
    /// Examples scored (after dropping those left without a target token).
    pub examples: usize,
}

/// `examples` encoded as `data` asks (template, `max_seq_len`, `train_on_prompt`), then
/// [`dataset_loss`] with the tokenizer's EOS as padding, as training measures its eval loss.
pub fn held_out_loss(
    loaded: &Loaded,
    template: &ChatTemplate,
    data: &DatasetConfig,
    examples: &[Example],
    batch_size: usize,
    ctx: Ctx,
) -> Result<HeldOutLoss> {
    let enc = Encoder::for_dataset(&loaded.tokenizer, template, data);
    let (rows, _) = enc.encode_all(examples)?;
    let pad = loaded.tokenizer.eos.unwrap_or(0);
    Ok(HeldOutLoss {
        loss: dataset_loss(&loaded.model, &rows, batch_size, pad, ctx)?,
        examples: rows.len(),
    })
}
