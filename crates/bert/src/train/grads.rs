//! A step's gradients across shards and micro-batches, summed lazily and averaged; and the error a loss
//! or gradient that stopped being finite gives.

use std::path::PathBuf;

use candle_core::backprop::GradStore;
use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::weights::params::ParamStore;

/// The trainable tensors of a store, in name order.
pub fn trainable_tensors(store: &ParamStore) -> Vec<Tensor> {
    store
        .vars()
        .values()
        .map(|v| v.as_tensor().clone())
        .collect()
}

/// Parts of a step's gradients kept before they are folded into the first part: the shards of one
/// micro-batch on a machine like this one; more micro-batches (gradient accumulation) are folded in.
const MAX_PARTS: usize = 2;

/// A step's gradients as parts (one per shard or micro-batch, as their backward passes left them) and a
/// factor: the gradient of a variable is `scale` times the sum of its parts. Whoever reads them sums them
/// on the way (the optimizer in its one pass over each parameter), so adding the shards' gradients
/// allocates and writes nothing.
pub struct GradientSum {
    parts: Vec<GradStore>,
    scale: f64,
}

impl Default for GradientSum {
    fn default() -> Self {
        GradientSum {
            parts: Vec::new(),
            scale: 1.0,
        }
    }
}

impl From<GradStore> for GradientSum {
    fn from(grads: GradStore) -> Self {
        GradientSum {
            parts: vec![grads],
            scale: 1.0,
        }
    }
}

impl GradientSum {
    /// Whether no part was added.
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// Adds a part; beyond [`MAX_PARTS`] it is added into the first part (allocating a sum per tensor).
    pub fn push(&mut self, part: GradStore, vars: &[Tensor]) -> Result<()> {
        if self.parts.len() < MAX_PARTS {
            self.parts.push(part);
            return Ok(());
        }
        let first = std::mem::take(&mut self.parts[0]);
        self.parts[0] = accumulate(first, part, vars)?;
        Ok(())
    }

    /// Adds the gradients that recomputing checkpointed layers found during the backward pass of the
    /// (single) part ([`crate::nn::checkpoint`]); nothing when the pass was skipped.
    pub fn add_recomputed(&mut self, recomputed: GradStore) -> Result<()> {
        if let Some(first) = self.parts.first_mut() {
            first.extend(recomputed)?;
        }
        Ok(())
    }

    /// Adds the parts of `other`, which must have the same scale.
    pub fn append(&mut self, other: GradientSum, vars: &[Tensor]) -> Result<()> {
        if !other.parts.is_empty() && !self.parts.is_empty() && other.scale != self.scale {
            return Err(Error::Training(format!(
                "adding gradients scaled by {} to gradients scaled by {}",
                other.scale, self.scale
            )));
        }
        if self.parts.is_empty() {
            self.scale = other.scale;
        }
        for part in other.parts {
            self.push(part, vars)?;
        }
        Ok(())
    }

    /// Multiplies the whole sum by `factor`.
    pub fn scale_by(&mut self, factor: f64) {
        self.scale *= factor;
    }

    /// What every gradient is multiplied by.
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// The parts of `var`'s gradient (none when no part has one).
    pub fn parts_of(&self, var: &Tensor) -> Vec<&Tensor> {
        self.parts.iter().filter_map(|p| p.get(var)).collect()
    }

    /// `var`'s gradient, summed and scaled, as a flat vector (zeros when no part has one).
    pub fn flat(&self, var: &Tensor) -> Result<Vec<f32>> {
        let mut sum = vec![0f32; var.elem_count()];
        for part in self.parts_of(var) {
            let values = part.flatten_all()?.to_vec1::<f32>()?;
            sum.iter_mut().zip(values).for_each(|(s, v)| *s += v);
        }
        let scale = self.scale as f32;
        sum.iter_mut().for_each(|s| *s *= scale);
        Ok(sum)
    }
}

/// `new` added into `sum`, tensor by tensor.
fn accumulate(mut sum: GradStore, mut new: GradStore, vars: &[Tensor]) -> Result<GradStore> {
    for var in vars {
        if let Some(g) = new.remove(var) {
            let total = match sum.get(var) {
                Some(old) => (old + g)?,
                None => g,
            };
            sum.insert(var, total);
        }
    }
    Ok(sum)
}

/// The error for a loss or gradient that stopped being finite at optimizer step `step` (1-based),
/// naming the last good checkpoint.
pub fn non_finite(what: String, step: usize, last_checkpoint: &Option<PathBuf>) -> Error {
    Error::Training(format!(
        "{what} at step {step}; stopped without saving. The last good checkpoint is {}",
        last_checkpoint
            .as_ref()
            .map_or("none (nothing saved yet)".into(), |p| p
                .display()
                .to_string())
    ))
}
