//! Beam search as `transformers` does it (`_beam_search`, version 5), step for step, so that the same
//! model gives the same tokens: per source, the `2 x num_beams` best continuations of the running beams
//! by summed log-probability; the best `num_beams` that did not end go on, the ones that ended join the
//! finished hypotheses (scored `sum / length ** length_penalty`) when among the best; a source is done
//! when its best running beam can no longer beat its finished ones (`early_stopping`). Scores are f32
//! and "impossible" is `-1e9`, as there.

use candle_core::Tensor;

use crate::error::Result;
use crate::generation::config::{EarlyStopping, GenerationConfig};
use crate::generation::scores::{log_softmax, Constraints};
use crate::generation::Generated;
use crate::model::decoder::{BertLMHeadModel, DecoderCache};

/// The score that rules a candidate out.
const IMPOSSIBLE: f32 = -1.0e9;

/// One source's beams.
struct Beams {
    /// `num_beams` running sequences, all of the current length, best first.
    running: Vec<Vec<u32>>,
    running_scores: Vec<f32>,
    /// The `num_beams` best finished hypotheses (empty sequences while not filled), best first.
    finished: Vec<Vec<u32>>,
    finished_scores: Vec<f32>,
    is_finished: Vec<bool>,
    /// Whether a running beam may still beat the finished ones.
    improvable: bool,
}

/// A continuation of a running beam by one token.
#[derive(Clone, Copy)]
struct Candidate {
    score: f32,
    beam: usize,
    token: u32,
    /// It ended (`[SEP]`) or reached the length limit.
    stops: bool,
}

/// The search's fixed settings.
struct Search<'a> {
    config: &'a GenerationConfig,
    beams: usize,
    max_length: usize,
    /// Candidates kept per source each step: enough that `num_beams` of them do not end.
    keep: usize,
    vocab: usize,
}

/// Beam search over `cache`, which holds `num_beams` copies of each of `sources` sources in a row.
pub fn decode(
    decoder: &BertLMHeadModel,
    mut cache: DecoderCache,
    sources: usize,
    config: &GenerationConfig,
) -> Result<Vec<Vec<Generated>>> {
    let beams = config.num_beams;
    let start = config.decoder_start_token_id.unwrap_or_default();
    let mut all: Vec<Beams> = (0..sources).map(|_| Beams::new(beams, start)).collect();
    let constraints = Constraints::new(config, 1);
    let mut search = Search {
        config,
        beams,
        max_length: config.total_length(),
        keep: beams * 2.max(1 + config.eos_token_id.len()),
        vocab: 0,
    };
    let mut length = 1;
    loop {
        let last: Vec<u32> = all
            .iter()
            .flat_map(|b| b.running.iter().map(|s| s[s.len() - 1]))
            .collect();
        let input = Tensor::from_vec(last, (sources * beams, 1), &candle_core::Device::Cpu)?;
        let mut logits: Vec<Vec<f32>> = decoder.step(&input, &mut cache)?.to_vec2()?;
        search.vocab = logits[0].len();
        let mut reorder = Vec::with_capacity(sources * beams);
        let mut every_candidate_stops = true;
        for (i, (source, log_probs)) in all.iter_mut().zip(logits.chunks_mut(beams)).enumerate() {
            for (sequence, row) in source.running.iter().zip(log_probs.iter_mut()) {
                log_softmax(row);
                constraints.apply(sequence, row);
            }
            let candidates = search.candidates(source, log_probs, length);
            every_candidate_stops &= candidates.iter().all(|c| c.stops);
            let origins = source.advance(&search, &candidates, length);
            reorder.extend(origins.iter().map(|&beam| (i * beams + beam) as u32));
        }
        cache.reorder(&reorder)?;
        length += 1;
        for source in &mut all {
            source.update_improvable(&search, length);
        }
        let all_finished = all.iter().all(|s| s.is_finished.iter().all(|&f| f));
        let improvable = all.iter().any(|s| s.improvable);
        let full = all_finished && config.early_stopping == EarlyStopping::Finished;
        if !improvable || full || every_candidate_stops {
            break;
        }
    }
    let eos = &config.eos_token_id;
    Ok(all
        .into_iter()
        .map(|source| {
            (source.finished.iter().zip(&source.finished_scores))
                .take(config.num_return_sequences)
                .map(|(sequence, &score)| {
                    let tokens = sequence.get(1..).unwrap_or_default();
                    Generated::ended_at_eos(tokens, eos, Some(score))
                })
                .collect()
        })
        .collect())
}

impl Search<'_> {
    /// The `keep` best continuations of `source`'s running beams (`log_probs`, one row per beam),
    /// best first; equal scores in the order of beam, then token (as `torch.topk` leaves them).
    fn candidates(&self, source: &Beams, log_probs: &[Vec<f32>], length: usize) -> Vec<Candidate> {
        let keep = self.keep.min(self.beams * self.vocab);
        // The best so far, best first: scanning in index order, a later candidate enters only with
        // a strictly higher score than the worst kept.
        let mut best: Vec<(f32, usize)> = Vec::with_capacity(keep + 1);
        for (beam, row) in log_probs.iter().enumerate() {
            let base = source.running_scores[beam];
            for (token, &lp) in row.iter().enumerate() {
                let score = lp + base;
                // NaN never enters (`partial_cmp` gives no order), nor an equal or lower score.
                let worst = best.get(keep - 1).map(|&(s, _)| s);
                if worst.is_some_and(|w| score.partial_cmp(&w) != Some(std::cmp::Ordering::Greater))
                {
                    continue;
                }
                let at = best.partition_point(|&(s, _)| s >= score);
                best.insert(at, (score, beam * self.vocab + token));
                best.truncate(keep);
            }
        }
        best.into_iter()
            .map(|(score, index)| {
                let token = (index % self.vocab) as u32;
                let stops =
                    self.config.eos_token_id.contains(&token) || length + 1 >= self.max_length;
                Candidate {
                    score,
                    beam: index / self.vocab,
                    token,
                    stops,
                }
            })
            .collect()
    }

    /// `length ** length_penalty`, in f32 as the division uses it.
    fn penalty(&self, length: usize) -> f32 {
        (length as f64).powf(f64::from(self.config.length_penalty)) as f32
    }
}

impl Beams {
    fn new(beams: usize, start: u32) -> Self {
        let mut running_scores = vec![IMPOSSIBLE; beams];
        // Only the first beam is live at the start, so the others do not repeat it.
        running_scores[0] = 0.0;
        Beams {
            running: vec![vec![start]; beams],
            running_scores,
            finished: vec![Vec::new(); beams],
            finished_scores: vec![IMPOSSIBLE; beams],
            is_finished: vec![false; beams],
            improvable: true,
        }
    }

    /// Takes one step with `candidates`: the running beams become the best that do not stop, the
    /// finished hypotheses take in the best that do. Returns the beam each new running beam continues.
    fn advance(&mut self, search: &Search, candidates: &[Candidate], length: usize) -> Vec<usize> {
        let sequence = |c: &Candidate| {
            let mut s = self.running[c.beam].clone();
            s.push(c.token);
            s
        };
        // The next running beams.
        let running_scores: Vec<f32> = candidates
            .iter()
            .map(|c| c.score + if c.stops { IMPOSSIBLE } else { 0.0 })
            .collect();
        let next = best(&running_scores, search.beams);
        let running = next.iter().map(|&j| sequence(&candidates[j])).collect();
        let origins = next.iter().map(|&j| candidates[j].beam).collect();
        // The finished hypotheses.
        let all_finished = self.is_finished.iter().all(|&f| f);
        let full = all_finished && search.config.early_stopping == EarlyStopping::Finished;
        // The hypothesis ends with this step's token: `length` tokens after the start token.
        let penalty = search.penalty(length);
        let mut scores = self.finished_scores.clone();
        let mut flags = self.is_finished.clone();
        for (j, c) in candidates.iter().enumerate() {
            let ended = c.stops && j < search.beams;
            let mut score = c.score / penalty;
            score += if full { IMPOSSIBLE } else { 0.0 };
            score += if self.improvable { 0.0 } else { IMPOSSIBLE };
            score += if ended { 0.0 } else { IMPOSSIBLE };
            scores.push(score);
            flags.push(ended);
        }
        let kept = best(&scores, search.beams);
        let beams = search.beams;
        let finished = kept
            .iter()
            .map(|&k| match k.checked_sub(beams) {
                None => self.finished[k].clone(),
                Some(j) => sequence(&candidates[j]),
            })
            .collect();
        self.finished_scores = kept.iter().map(|&k| scores[k]).collect();
        self.is_finished = kept.iter().map(|&k| flags[k]).collect();
        self.finished = finished;
        self.running_scores = next.iter().map(|&j| running_scores[j]).collect();
        self.running = running;
        origins
    }

    /// Whether the best running beam could still beat a finished hypothesis, its score judged at
    /// the current length (or, for `"never"` with a positive length penalty, at the limit).
    fn update_improvable(&mut self, search: &Search, length: usize) {
        let config = search.config;
        let hypothetical =
            if config.early_stopping == EarlyStopping::Never && config.length_penalty > 0.0 {
                search.max_length - 1
            } else {
                length - 1
            };
        let best_possible = self.running_scores[0] / search.penalty(hypothetical);
        let worst = self
            .finished_scores
            .iter()
            .copied()
            .fold(f32::INFINITY, f32::min);
        let beatable = self
            .is_finished
            .iter()
            .any(|&finished| best_possible > if finished { worst } else { IMPOSSIBLE });
        self.improvable &= beatable;
    }
}

/// The indices of the `k` largest `scores`, largest first; equals in index order.
fn best(scores: &[f32], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    order.truncate(k);
    order
}
