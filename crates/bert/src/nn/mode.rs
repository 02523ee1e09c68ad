//! Whether a forward pass is for inference or for training: the one switch every layer reads
//! (dropout, differentiable ops, fused inference kernels).

use std::sync::Mutex;

use crate::nn::checkpoint::Recomputation;
use crate::rng::Rng;

/// Whether a forward pass is for inference or training.
pub enum Mode<'a> {
    /// Dropout off, candle's fused (non-differentiable) kernels.
    Eval,
    /// Dropout on, with masks from this generator; every op differentiable.
    Train(&'a Mutex<Rng>),
    /// Training with gradient checkpointing ([`crate::nn::checkpoint`]): each encoder layer keeps only
    /// its input and runs again in the backward pass, its weights' gradients collected here.
    Checkpointed(&'a Mutex<Rng>, &'a Recomputation),
}

impl Mode<'_> {
    pub fn is_train(&self) -> bool {
        !matches!(self, Mode::Eval)
    }

    /// The dropout generator, when training.
    pub fn rng(&self) -> Option<&Mutex<Rng>> {
        match self {
            Mode::Eval => None,
            Mode::Train(rng) | Mode::Checkpointed(rng, _) => Some(rng),
        }
    }
}
