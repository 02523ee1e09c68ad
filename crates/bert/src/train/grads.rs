//! Gradients across micro-batches: summed for gradient accumulation, then averaged; and the error a
//! loss or gradient that stopped being finite gives.

use std::path::PathBuf;

use candle_core::backprop::GradStore;
use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::params::ParamStore;

/// The trainable tensors of a store, in name order.
pub fn trainable_tensors(store: &ParamStore) -> Vec<Tensor> {
    store
        .vars()
        .values()
        .map(|v| v.as_tensor().clone())
        .collect()
}

/// Adds this micro-batch's gradients to those gathered so far.
pub fn accumulate(
    sum: Option<GradStore>,
    mut new: GradStore,
    vars: &[Tensor],
) -> Result<GradStore> {
    let Some(mut sum) = sum else {
        return Ok(new);
    };
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

/// Multiplies every gradient by `factor` (1 / micro-batches, to average them).
pub fn scale(grads: &mut GradStore, vars: &[Tensor], factor: f64) -> Result<()> {
    for var in vars {
        if let Some(g) = grads.remove(var) {
            grads.insert(var, (g * factor)?);
        }
    }
    Ok(())
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
