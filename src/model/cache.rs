//! Key/value cache for incremental decoding: per layer, keys and values of all past positions,
//! (batch, n_kv_heads, seq, head_dim). Cloning is cheap (tensors are shared), which is how
//! MMLU reuses a subject's few-shot prefix and chat keeps earlier turns.

use crate::error::Result;
use candle_core::Tensor;

#[derive(Clone, Debug, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
}

impl KvCache {
    pub fn new(num_layers: usize) -> Self {
        KvCache {
            layers: vec![None; num_layers],
        }
    }

    /// Positions already in the cache.
    pub fn len(&self) -> usize {
        self.layers
            .first()
            .and_then(|l| l.as_ref())
            .map(|(k, _)| k.dim(2).unwrap_or(0))
            .unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Append this step's k, v for `layer` and return the full k, v.
    pub fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let (k, v) = match &self.layers[layer] {
            None => (k.clone(), v.clone()),
            Some((pk, pv)) => (Tensor::cat(&[pk, k], 2)?, Tensor::cat(&[pv, v], 2)?),
        };
        self.layers[layer] = Some((k.clone(), v.clone()));
        Ok((k, v))
    }

    /// Keep only the given batch rows, in that order (a batch whose finished rows leave).
    pub fn select_rows(&mut self, rows: &[usize]) -> Result<()> {
        let Some(first) = self.layers.iter().flatten().next() else {
            return Ok(());
        };
        let idx = Tensor::from_vec(
            rows.iter().map(|&r| r as u32).collect::<Vec<_>>(),
            rows.len(),
            first.0.device(),
        )?;
        for l in self.layers.iter_mut() {
            if let Some((k, v)) = l.take() {
                *l = Some((k.index_select(&idx, 0)?, v.index_select(&idx, 0)?));
            }
        }
        Ok(())
    }

    /// Drop everything after the first `len` positions.
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        for l in self.layers.iter_mut() {
            if let Some((k, v)) = l.take() {
                if len > 0 {
                    let n = len.min(k.dim(2)?);
                    *l = Some((k.narrow(2, 0, n)?, v.narrow(2, 0, n)?));
                }
            }
        }
        Ok(())
    }
}
