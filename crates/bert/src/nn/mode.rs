//! Whether a forward pass is for inference or for training: the one switch every layer reads
//! (dropout, differentiable ops, fused inference kernels).

use std::sync::Mutex;

use crate::rng::Rng;

/// Whether a forward pass is for inference or training.
pub enum Mode<'a> {
    /// Dropout off, candle's fused (non-differentiable) kernels.
    Eval,
    /// Dropout on, with masks from this generator; every op differentiable.
    Train(&'a Mutex<Rng>),
}

impl Mode<'_> {
    pub fn is_train(&self) -> bool {
        matches!(self, Mode::Train(_))
    }
}
