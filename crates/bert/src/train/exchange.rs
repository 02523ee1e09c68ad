//! The gradient exchange of data-parallel training: before every optimizer step the ranks' gradients
//! are summed in a few large flat buckets (25 MB, PyTorch DDP's default), not a call per tensor, so the
//! per-call latency is paid a handful of times per step. Each rank has already weighted its loss by its
//! share of the global batch ([`share_weight`]), so the sum is the gradient of the global batch's mean
//! loss, the same as one process computing the whole batch.
//!
//! candle's backward pass computes every gradient in one call with no per-tensor hook, so the exchange
//! cannot overlap the backward pass; it starts once the step's gradients are complete.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::train::grads::GradientSum;
use crate::train::world::World;

/// Floats per bucket: 25 MB.
pub const BUCKET_FLOATS: usize = 25 * 1024 * 1024 / 4;

/// The factor that turns a rank's mean loss over `mine` items into its part of the mean over `all`
/// items of the global batch (1 when the rank holds them all).
pub fn share_weight(mine: usize, all: usize) -> f64 {
    if mine == all {
        1.0
    } else {
        mine as f64 / all.max(1) as f64
    }
}

/// The variables in consecutive groups of at most [`BUCKET_FLOATS`] elements (a larger tensor alone).
fn buckets(vars: &[Tensor]) -> Vec<&[Tensor]> {
    let mut groups = Vec::new();
    let (mut start, mut floats) = (0, 0);
    for (i, var) in vars.iter().enumerate() {
        let n = var.elem_count();
        if i > start && floats + n > BUCKET_FLOATS {
            groups.push(&vars[start..i]);
            (start, floats) = (i, 0);
        }
        floats += n;
    }
    if start < vars.len() {
        groups.push(&vars[start..]);
    }
    groups
}

/// Sums every rank's gradients of `vars` (none, or a missing one, counts as zeros), bucket by bucket;
/// every rank ends with the same gradients.
pub fn all_reduce_gradients(
    world: &World,
    grads: &GradientSum,
    vars: &[Tensor],
) -> Result<GradientSum> {
    let mut summed = GradStore::default();
    for bucket in buckets(vars) {
        let mut flat = Vec::with_capacity(bucket.iter().map(Tensor::elem_count).sum());
        for var in bucket {
            flat.extend(grads.flat(var)?);
        }
        world.collective().all_reduce_sum(&mut flat)?;
        let mut offset = 0;
        for var in bucket {
            let n = var.elem_count();
            let total = Tensor::from_slice(&flat[offset..offset + n], var.shape(), var.device())?;
            summed.insert(var, total);
            offset += n;
        }
    }
    Ok(summed.into())
}

/// The step's gradients on every rank: as they are for one process, summed across ranks otherwise,
/// with the seconds the exchange took (`None` for one process).
pub fn exchange_gradients(
    world: &World,
    grads: GradientSum,
    vars: &[Tensor],
) -> Result<(GradientSum, Option<f64>)> {
    if !world.is_distributed() {
        if grads.is_empty() {
            return Err(Error::Training(
                "an optimizer step without gradients".into(),
            ));
        }
        return Ok((grads, None));
    }
    let started = Instant::now();
    let summed = all_reduce_gradients(world, &grads, vars)?;
    Ok((summed, Some(started.elapsed().as_secs_f64())))
}

/// A step's loss, tokens and stop requests, summed over ranks.
pub struct StepTotals {
    pub loss: f64,
    pub tokens: usize,
    /// Whether any rank was asked to stop: the ranks stop together, after the same step.
    pub stop: bool,
}

/// Sums this rank's part of the step's loss and tokens, and its stop flag, across ranks (for one
/// process they are what they are).
pub fn step_totals(
    world: &World,
    loss: f64,
    tokens: usize,
    stop: &AtomicBool,
) -> Result<StepTotals> {
    let mut sums = [
        loss,
        tokens as f64,
        f64::from(u8::from(stop.load(Ordering::SeqCst))),
    ];
    world.sum_f64(&mut sums)?;
    Ok(StepTotals {
        loss: sums[0],
        tokens: sums[1] as usize,
        stop: sums[2] > 0.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn buckets_hold_consecutive_variables_up_to_the_cap() {
        let d = Device::Cpu;
        let small = Tensor::zeros(1000, DType::F32, &d).unwrap();
        let big = Tensor::zeros(BUCKET_FLOATS + 1, DType::F32, &d).unwrap();
        let vars = vec![small.clone(), small.clone(), big, small];
        let sizes: Vec<usize> = buckets(&vars).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, vec![2, 1, 1]);
    }

    #[test]
    fn one_process_sums_and_scales_its_parts_and_fills_missing_ones_with_zeros() {
        let d = Device::Cpu;
        let a = candle_core::Var::new(&[1f32, 2.0], &d).unwrap();
        let b = candle_core::Var::new(&[[3f32]], &d).unwrap();
        let vars = vec![a.as_tensor().clone(), b.as_tensor().clone()];
        let part = |k: f64| {
            (a.as_tensor() * k)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap()
        };
        let mut grads = GradientSum::from(part(3.0));
        grads.push(part(5.0), &vars).unwrap();
        grads.scale_by(0.5);
        let out = all_reduce_gradients(&World::single(), &grads, &vars).unwrap();
        let ga: Vec<f32> = out.parts_of(a.as_tensor())[0].to_vec1().unwrap();
        let gb: Vec<Vec<f32>> = out.parts_of(b.as_tensor())[0].to_vec2().unwrap();
        assert_eq!((ga, gb), (vec![4.0, 4.0], vec![vec![0.0]]));
    }

    #[test]
    fn shares_weight_a_rank_by_its_part_of_the_batch() {
        assert_eq!(share_weight(8, 8), 1.0);
        assert_eq!(share_weight(3, 12), 0.25);
        assert_eq!(share_weight(0, 5), 0.0);
    }
}
