//! AdamW as BERT is trained with it: PyTorch's `torch.optim.AdamW` (bias-corrected moments, decoupled
//! weight decay), no decay on biases and LayerNorm weights, and the global gradient norm clipped first.
//! candle's own AdamW decays every parameter and cannot clip.

use std::collections::BTreeMap;

use candle_core::{Tensor, Var};

use crate::error::{Error, Result};
use crate::train::fused::{adamw_update, squared_norm, Moments, Update};
use crate::train::grads::GradientSum;

/// AdamW hyper-parameters (BERT's defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Clip the global gradient norm to this (none when `None`).
    pub max_grad_norm: Option<f64>,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-6,
            weight_decay: 0.01,
            max_grad_norm: Some(1.0),
        }
    }
}

/// One parameter and its moment estimates (plain buffers: only the optimizer writes them).
struct Slot {
    var: Var,
    decay: bool,
    exp_avg: Vec<f32>,
    exp_avg_sq: Vec<f32>,
}

/// The optimizer over named variables.
pub struct AdamW {
    config: AdamWConfig,
    slots: BTreeMap<String, Slot>,
    step: usize,
}

/// Whether `transformers`' recipe decays a parameter: not biases, not LayerNorm weights.
pub fn decays(name: &str) -> bool {
    !(name.ends_with("bias") || name.contains("LayerNorm"))
}

impl AdamW {
    pub fn new(vars: BTreeMap<String, Var>, config: AdamWConfig) -> Result<Self> {
        let slots = vars
            .into_iter()
            .map(|(name, var)| {
                let slot = Slot {
                    decay: decays(&name),
                    exp_avg: vec![0.0; var.elem_count()],
                    exp_avg_sq: vec![0.0; var.elem_count()],
                    var,
                };
                (name, slot)
            })
            .collect();
        Ok(AdamW {
            config,
            slots,
            step: 0,
        })
    }

    /// Clips (if configured) and applies one update at learning rate `lr`. Returns the gradient norm
    /// before clipping.
    pub fn step(&mut self, grads: &GradientSum, lr: f64) -> Result<f64> {
        let mut squares = 0.0;
        for slot in self.slots.values() {
            squares += squared_norm(&grads.parts_of(slot.var.as_tensor()), grads.scale())?;
        }
        let norm = squares.sqrt();
        if !norm.is_finite() {
            return Err(Error::Training(format!("the gradient norm became {norm}")));
        }
        let clip = match self.config.max_grad_norm {
            Some(max) => (max / (norm + 1e-6)).min(1.0),
            None => 1.0,
        };
        self.step += 1;
        let c = self.config;
        let bias1 = 1.0 - c.beta1.powi(self.step as i32);
        let bias2 = 1.0 - c.beta2.powi(self.step as i32);
        for slot in self.slots.values_mut() {
            let parts = grads.parts_of(slot.var.as_tensor());
            if parts.is_empty() {
                continue;
            }
            let decay = if slot.decay { c.weight_decay } else { 0.0 };
            let update = Update {
                beta1: c.beta1,
                beta2: c.beta2,
                grad_scale: grads.scale() * clip,
                decay: 1.0 - lr * decay,
                step_size: lr / bias1,
                bias2_sqrt: bias2.sqrt(),
                eps: c.eps,
            };
            let moments = Moments {
                exp_avg: &mut slot.exp_avg,
                exp_avg_sq: &mut slot.exp_avg_sq,
            };
            adamw_update(slot.var.as_tensor(), &parts, moments, &update)?;
        }
        Ok(norm)
    }

    /// The moment estimates by name (`exp_avg.NAME`, `exp_avg_sq.NAME`), for checkpoints.
    pub fn state(&self) -> Result<BTreeMap<String, Tensor>> {
        let mut state = BTreeMap::new();
        for (name, slot) in &self.slots {
            let var = slot.var.as_tensor();
            for (key, values) in [("exp_avg", &slot.exp_avg), ("exp_avg_sq", &slot.exp_avg_sq)] {
                let tensor = Tensor::from_slice(values, var.shape(), var.device())?;
                state.insert(format!("{key}.{name}"), tensor);
            }
        }
        Ok(state)
    }

    /// Restores what [`AdamW::state`] saved, after `steps` steps.
    pub fn restore(&mut self, mut state: BTreeMap<String, Tensor>, steps: usize) -> Result<()> {
        for (name, slot) in self.slots.iter_mut() {
            let dims = slot.var.as_tensor().dims().to_vec();
            for (key, target) in [
                ("exp_avg", &mut slot.exp_avg),
                ("exp_avg_sq", &mut slot.exp_avg_sq),
            ] {
                let full = format!("{key}.{name}");
                let tensor = state.remove(&full).ok_or_else(|| Error::MissingWeight {
                    name: full.clone(),
                    source_desc: "optimizer state".into(),
                })?;
                if tensor.dims() != dims {
                    return Err(Error::ShapeMismatch {
                        name: full,
                        expected: dims,
                        found: tensor.dims().to_vec(),
                    });
                }
                *target = tensor
                    .to_dtype(candle_core::DType::F32)?
                    .flatten_all()?
                    .to_vec1()?;
            }
        }
        self.step = steps;
        Ok(())
    }
}
