//! Inverted dropout with masks from our own seeded generator, so that a training run can be repeated
//! and resumed exactly (candle's CPU generator cannot be seeded).

use candle_core::Tensor;

use crate::error::Result;
use crate::nn::Mode;

/// Inverted dropout: zero each element with probability `p` and scale the rest by `1 / (1 - p)`.
#[derive(Debug, Clone, Copy)]
pub struct Dropout {
    p: f64,
}

impl Dropout {
    pub fn new(p: f64) -> Self {
        Dropout { p }
    }

    pub fn forward(&self, x: &Tensor, mode: &Mode) -> Result<Tensor> {
        let Some(mask) = self.mask(x.elem_count(), mode) else {
            return Ok(x.clone());
        };
        let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
        Ok((x * mask)?)
    }

    /// The mask [`Dropout::forward`] would multiply `n` values by: 0 where dropped, `1 / (1 - p)`
    /// where kept; none when not training or `p` is 0.
    pub fn mask(&self, n: usize, mode: &Mode) -> Option<Vec<f32>> {
        let rng = mode.rng()?;
        if self.p <= 0.0 {
            return None;
        }
        let scale = (1.0 / (1.0 - self.p)) as f32;
        let mut rng = rng.lock().unwrap_or_else(|e| e.into_inner());
        Some(rng.bernoulli(n, self.p, 0.0, scale))
    }
}
