//! Greedy decoding and sampling (`transformers`' `_sample`): every sequence of the batch takes one
//! token a step, the most likely one or a draw, until it ends (`[SEP]`) or reaches the length limit;
//! an ended sequence leaves the batch while the others go on.

use candle_core::{Device, Tensor};

use crate::error::Result;
use crate::generation::config::GenerationConfig;
use crate::generation::scores::{argmax, sample, Constraints};
use crate::generation::Generated;
use crate::model::decoder::{BertLMHeadModel, DecoderCache};
use crate::ops::with_f32_values;
use crate::rng::Rng;

/// Decodes every row of `cache` (one per output), each starting with the start token.
pub fn decode(
    decoder: &BertLMHeadModel,
    mut cache: DecoderCache,
    rows: usize,
    config: &GenerationConfig,
) -> Result<Vec<Generated>> {
    let start = config.decoder_start_token_id.unwrap_or_default();
    let max_length = config.total_length();
    let constraints = Constraints::new(config, 1);
    let mut rng = Rng::new(config.seed.unwrap_or(0));
    let mut sequences = vec![vec![start]; rows];
    // The rows still in the batch, in the cache's order: an ended sequence leaves it.
    let mut open: Vec<usize> = (0..rows).collect();
    let mut length = 1;
    while length < max_length && !open.is_empty() {
        let last: Vec<u32> = open
            .iter()
            .map(|&r| *sequences[r].last().unwrap_or(&start))
            .collect();
        let input = Tensor::from_vec(last, (open.len(), 1), &Device::Cpu)?;
        let logits = decoder.step(&input, &mut cache)?;
        let vocab = logits.dim(1)?;
        let mut scores = Vec::with_capacity(vocab);
        let ended: Vec<bool> = with_f32_values(&[&logits], |values| {
            let per_row = open.iter().zip(values[0].chunks(vocab));
            Ok(per_row
                .map(|(&r, logits)| {
                    scores.clear();
                    scores.extend_from_slice(logits);
                    constraints.apply(&sequences[r], &mut scores);
                    let token = if config.do_sample {
                        sample(config, &mut scores, &mut rng)
                    } else {
                        argmax(&scores)
                    };
                    sequences[r].push(token);
                    config.eos_token_id.contains(&token)
                })
                .collect())
        })?;
        length += 1;
        if ended.contains(&true) {
            let kept: Vec<u32> = (0..open.len() as u32)
                .filter(|&k| !ended[k as usize])
                .collect();
            open = kept.iter().map(|&k| open[k as usize]).collect();
            if !open.is_empty() {
                cache.retain(&kept)?;
            }
        }
    }
    Ok(sequences
        .into_iter()
        .map(|sequence| Generated::ended_at_eos(&sequence[1..], &config.eos_token_id, None))
        .collect())
}
