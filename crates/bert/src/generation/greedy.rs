//! Greedy decoding and sampling (`transformers`' `_sample`): every sequence of the batch takes one
//! token a step, the most likely one or a draw, until it ends (`[SEP]`) or reaches the length limit;
//! ended sequences are padded while the others go on.

use candle_core::Tensor;

use crate::error::Result;
use crate::generation::config::GenerationConfig;
use crate::generation::scores::{argmax, sample, Constraints};
use crate::generation::Generated;
use crate::model::decoder::{BertLMHeadModel, DecoderCache};
use crate::rng::Rng;

/// Decodes every row of `cache` (one per output), each starting with the start token.
pub fn decode(
    decoder: &BertLMHeadModel,
    mut cache: DecoderCache,
    rows: usize,
    config: &GenerationConfig,
) -> Result<Vec<Generated>> {
    let start = config.decoder_start_token_id.unwrap_or_default();
    let pad = config.pad_token_id.unwrap_or_default();
    let max_length = config.total_length();
    let constraints = Constraints::new(config, 1);
    let mut rng = Rng::new(config.seed.unwrap_or(0));
    let mut sequences = vec![vec![start]; rows];
    let mut open = vec![true; rows];
    let device = candle_core::Device::Cpu;
    while sequences[0].len() < max_length && open.iter().any(|&o| o) {
        let last: Vec<u32> = sequences.iter().map(|s| s[s.len() - 1]).collect();
        let input = Tensor::from_vec(last, (rows, 1), &device)?;
        let logits: Vec<Vec<f32>> = decoder.step(&input, &mut cache)?.to_vec2()?;
        for ((sequence, open), mut scores) in sequences.iter_mut().zip(&mut open).zip(logits) {
            constraints.apply(sequence, &mut scores);
            let token = if !*open {
                pad
            } else if config.do_sample {
                sample(config, &mut scores, &mut rng)
            } else {
                argmax(&scores)
            };
            sequence.push(token);
            if *open && config.eos_token_id.contains(&token) {
                *open = false;
            }
        }
    }
    Ok(sequences
        .into_iter()
        .map(|sequence| Generated::ended_at_eos(&sequence[1..], &config.eos_token_id, None))
        .collect())
}
