//! Training losses of the BERT heads, as `transformers` computes them, all differentiable.
//!
//! candle's own cross-entropy has no ignore index; here labels equal to [`IGNORE_INDEX`] (-100, the
//! masked-LM and padding convention) are left out of the mean. On the CPU the cross-entropies run as
//! one op, forward and backward ([`crate::ops::cross_entropy`]).

use candle_core::{DType, Tensor, D};

use crate::error::{Error, Result};
use crate::ops::cross_entropy::CrossEntropy;
use crate::ops::fused_kernels_apply;
use crate::weights::config::ProblemType;

/// Labels with this value do not count (`transformers`' `ignore_index`).
pub const IGNORE_INDEX: i64 = -100;

/// Mean cross-entropy of `logits` (N, K) against class `labels` (N), skipping [`IGNORE_INDEX`].
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let labels = checked_labels(logits, labels)?;
    fused_or_composite(logits, labels, 0.0)
}

/// `labels` as a vector, one per row of `logits`, each a class or [`IGNORE_INDEX`].
fn checked_labels(logits: &Tensor, labels: &Tensor) -> Result<Vec<i64>> {
    let (n, k) = logits.dims2()?;
    let labels: Vec<i64> = labels.to_dtype(DType::I64)?.flatten_all()?.to_vec1()?;
    if labels.len() != n {
        return Err(Error::InvalidInput(format!(
            "{} labels for {n} rows of logits",
            labels.len()
        )));
    }
    if let Some(bad) = labels
        .iter()
        .find(|&&l| l != IGNORE_INDEX && (l < 0 || l >= k as i64))
    {
        return Err(Error::InvalidInput(format!(
            "label {bad} is outside 0..{k}"
        )));
    }
    Ok(labels)
}

/// The loss in one op ([`CrossEntropy`]) for f32 CPU logits, else candle's composite form.
fn fused_or_composite(logits: &Tensor, labels: Vec<i64>, epsilon: f64) -> Result<Tensor> {
    if fused_kernels_apply(logits) {
        let op = CrossEntropy {
            labels,
            epsilon: epsilon as f32,
        };
        return Ok(logits.contiguous()?.apply_op1(op)?);
    }
    let (n, k) = logits.dims2()?;
    let valid: Vec<f32> = labels
        .iter()
        .map(|&l| f32::from(u8::from(l != IGNORE_INDEX)))
        .collect();
    let count = valid.iter().sum::<f32>().max(1.0);
    let index: Vec<u32> = labels.iter().map(|&l| l.max(0) as u32).collect();
    let device = logits.device();
    let index = Tensor::from_vec(index, (n, 1), device)?;
    let valid = Tensor::from_vec(valid, n, device)?.to_dtype(logits.dtype())?;
    let log_probs = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let picked = log_probs.gather(&index, 1)?.squeeze(1)?; // (N)
    let nll = ((picked * &valid)?.sum_all()?.neg()? / f64::from(count))?;
    if epsilon == 0.0 {
        return Ok(nll);
    }
    let summed = log_probs.sum(D::Minus1)?.neg()?; // (N)
    let smooth = ((summed * valid)?.sum_all()? / f64::from(count * k as f32))?;
    Ok(((nll * (1.0 - epsilon))? + (smooth * epsilon)?)?)
}

/// Cross-entropy with label smoothing, as `transformers`' `LabelSmoother`: `(1 - epsilon)` times the
/// mean negative log-likelihood plus `epsilon` times the mean over tokens and classes of `-log p`, over
/// the labels that are not [`IGNORE_INDEX`]. `epsilon` 0 is [`cross_entropy`].
pub fn label_smoothed_cross_entropy(
    logits: &Tensor,
    labels: &Tensor,
    epsilon: f64,
) -> Result<Tensor> {
    let labels = checked_labels(logits, labels)?;
    fused_or_composite(logits, labels, epsilon)
}

/// Mean squared error.
pub fn mse(predictions: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let targets = targets
        .to_dtype(predictions.dtype())?
        .reshape(predictions.shape())?;
    Ok((predictions - targets)?.sqr()?.mean_all()?)
}

/// Mean binary cross-entropy on logits, in the numerically stable form
/// `max(x, 0) - x y + log(1 + exp(-|x|))`.
pub fn binary_cross_entropy_with_logits(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let y = targets.to_dtype(logits.dtype())?.reshape(logits.shape())?;
    let positive = logits.relu()?;
    let softplus = (logits.abs()?.neg()?.exp()? + 1.0)?.log()?;
    Ok(((positive - (logits * y)?)? + softplus)?.mean_all()?)
}

/// The sequence-classification loss for a problem type, as `BertForSequenceClassification` picks it.
pub fn sequence_classification_loss(
    logits: &Tensor,
    labels: &Tensor,
    problem_type: ProblemType,
) -> Result<Tensor> {
    match problem_type {
        ProblemType::Regression => mse(&logits.flatten_all()?, &labels.flatten_all()?),
        ProblemType::SingleLabelClassification => cross_entropy(logits, labels),
        ProblemType::MultiLabelClassification => binary_cross_entropy_with_logits(logits, labels),
    }
}

/// The token-classification or masked-LM loss: cross-entropy over (B, T, K) logits and (B, T) labels.
pub fn token_cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let (b, t, k) = logits.dims3()?;
    cross_entropy(&logits.reshape((b * t, k))?, &labels.reshape(b * t)?)
}

/// The QA loss: the mean of start and end cross-entropies.
pub fn span_loss(
    start_logits: &Tensor,
    end_logits: &Tensor,
    starts: &Tensor,
    ends: &Tensor,
) -> Result<Tensor> {
    let start = cross_entropy(start_logits, starts)?;
    let end = cross_entropy(end_logits, ends)?;
    Ok(((start + end)? / 2.0)?)
}

/// `BertForPreTraining`'s loss: masked-LM cross-entropy (B, T) plus next-sentence cross-entropy (B).
pub fn pretraining_loss(
    output: &crate::model::PreTrainingOutput,
    mlm_labels: &Tensor,
    next_sentence_labels: &Tensor,
) -> Result<Tensor> {
    let mlm = token_cross_entropy(&output.prediction_logits, mlm_labels)?;
    let nsp = cross_entropy(&output.seq_relationship_logits, next_sentence_labels)?;
    Ok((mlm + nsp)?)
}
