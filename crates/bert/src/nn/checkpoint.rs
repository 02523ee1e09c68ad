//! Gradient checkpointing (transformers' `gradient_checkpointing`): a block's forward pass keeps only
//! its input, not the dozens of intermediate tensors its backward pass reads, and the backward pass
//! runs the block forward again to get them. Memory for a layer's activations is traded for one
//! more forward pass per layer.
//!
//! candle's backward pass has no hook for this, so the block becomes one custom op over its input:
//! its forward output is computed (and the graph under it dropped) before the op is built, and its
//! backward recomputes the block on a fresh variable holding the input, with the same dropout masks
//! (the generator is rewound to where the first pass started), and runs that small graph backward.
//! The input's gradient goes back through the op; the block's weights' gradients, which candle's
//! outer pass cannot see, are collected in a [`Recomputation`] that the trainer adds to the step's
//! gradients.

use std::sync::{Arc, Mutex};

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor, Var};

use crate::error::Result;
use crate::nn::Mode;
use crate::rng::Rng;

/// A block's forward pass from its input, run again in the backward pass.
pub type Block = Arc<dyn Fn(&Tensor, &Mode) -> Result<Tensor> + Send + Sync>;

/// The weights' gradients found by recomputing checkpointed blocks during a backward pass.
#[derive(Clone, Default)]
pub struct Recomputation(Arc<Mutex<GradStore>>);

impl Recomputation {
    /// The gradients collected so far; the collection starts empty again.
    pub fn take(&self) -> GradStore {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn add(&self, grads: GradStore) -> candle_core::Result<()> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(grads)
    }
}

/// `block(x)`, keeping only `x` for the backward pass when `mode` is [`Mode::Checkpointed`] (f32).
pub fn checkpointed(x: &Tensor, mode: &Mode, block: Block) -> Result<Tensor> {
    let Mode::Checkpointed(rng, recomputation) = mode else {
        return block(x, mode);
    };
    if x.dtype() != DType::F32 || !x.device().is_cpu() {
        return block(x, &Mode::Train(rng));
    }
    let start = rng.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let output = block(&x.detach(), &Mode::Train(rng))?
        .detach()
        .contiguous()?;
    let op = Checkpoint {
        block,
        start,
        output,
        recomputation: (*recomputation).clone(),
    };
    Ok(x.apply_op1_arc(Arc::new(Box::new(op)))?)
}

struct Checkpoint {
    block: Block,
    /// The dropout generator as the first pass found it.
    start: Rng,
    /// The first pass's output, which the op's forward hands out.
    output: Tensor,
    recomputation: Recomputation,
}

impl CustomOp1 for Checkpoint {
    fn name(&self) -> &'static str {
        "checkpoint"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let values = self.output.flatten_all()?.to_vec1::<f32>()?;
        Ok((CpuStorage::F32(values), self.output.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let input = Var::from_tensor(&x.detach())?;
        let rng = Mutex::new(self.start.clone());
        let output = (self.block)(input.as_tensor(), &Mode::Train(&rng)).map_err(|e| {
            candle_core::Error::Msg(format!("recomputing a checkpointed block: {e}"))
        })?;
        let weights: Vec<Tensor> = (output.sorted_nodes().into_iter())
            .filter(|node| node.is_variable() && node.id() != input.id())
            .cloned()
            .collect();
        let grads = (&output * grad.detach())?.sum_all()?.backward()?;
        let mut found = GradStore::default();
        for weight in &weights {
            if let Some(g) = grads.get(weight) {
                found.insert(weight, g.clone());
            }
        }
        self.recomputation.add(found)?;
        Ok(grads.get(input.as_tensor()).cloned())
    }
}
