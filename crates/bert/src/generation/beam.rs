//! Beam search as `transformers` does it (`_beam_search`, version 5), step for step, so that the same
//! model gives the same tokens: per source, the `2 x num_beams` best continuations of the running beams
//! by summed log-probability; the best `num_beams` that did not end go on, the ones that ended join the
//! finished hypotheses (scored `sum / length ** length_penalty`) when among the best; a source is done
//! when its best running beam can no longer beat its finished ones (`early_stopping`). Scores are f32
//! and "impossible" is `-1e9`, as there.

use candle_core::{Device, Tensor};

use crate::error::Result;
use crate::generation::config::{EarlyStopping, GenerationConfig};
use crate::generation::scores::{log_softmax, Constraints};
use crate::generation::Generated;
use crate::model::decoder::{BertLMHeadModel, DecoderCache};
use crate::ops::with_f32_values;

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
    constraints: Constraints<'a>,
    beams: usize,
    max_length: usize,
    /// Candidates kept per source each step: enough that `num_beams` of them do not end.
    keep: usize,
    vocab: usize,
}

/// Beam search over `cache`, which holds `num_beams` copies of each of `sources` sources in a row.
/// A source leaves the batch once its outputs can no longer change, so the others run faster.
pub fn decode(
    decoder: &BertLMHeadModel,
    mut cache: DecoderCache,
    sources: usize,
    config: &GenerationConfig,
) -> Result<Vec<Vec<Generated>>> {
    let beams = config.num_beams;
    let start = config.decoder_start_token_id.unwrap_or_default();
    let mut all: Vec<Beams> = (0..sources).map(|_| Beams::new(beams, start)).collect();
    let mut search = Search {
        config,
        constraints: Constraints::new(config, 1),
        beams,
        max_length: config.total_length(),
        keep: beams * 2.max(1 + config.eos_token_id.len()),
        vocab: 0,
    };
    // The sources still in the batch, in the cache's order.
    let mut active: Vec<usize> = (0..sources).collect();
    let mut length = 1;
    let mut row = Vec::new();
    loop {
        let last: Vec<u32> = (active.iter())
            .flat_map(|&s| all[s].running.iter().map(|s| s[s.len() - 1]))
            .collect();
        let input = Tensor::from_vec(last, (active.len() * beams, 1), &Device::Cpu)?;
        let logits = decoder.step(&input, &mut cache)?;
        search.vocab = logits.dim(1)?;
        let mut reorder = Vec::with_capacity(active.len() * beams);
        let mut every_candidate_stops = true;
        with_f32_values(&[&logits], |values| {
            let per_source = values[0].chunks(beams * search.vocab);
            for (k, (&s, logits)) in active.iter().zip(per_source).enumerate() {
                let candidates = search.candidates(&all[s], logits, &mut row, length);
                every_candidate_stops &= candidates.iter().all(|c| c.stops);
                let origins = all[s].advance(&search, &candidates, length);
                reorder.extend(origins.iter().map(|&beam| (k * beams + beam) as u32));
            }
            Ok(())
        })?;
        length += 1;
        let going: Vec<bool> = (active.iter())
            .map(|&s| all[s].update_improvable(&search, length))
            .collect();
        if every_candidate_stops || !going.contains(&true) {
            break;
        }
        if going.iter().all(|&g| g) {
            cache.reorder(&reorder)?;
        } else {
            let rows: Vec<u32> = (reorder.chunks(beams).zip(&going))
                .filter(|(_, &g)| g)
                .flat_map(|(rows, _)| rows.iter().copied())
                .collect();
            cache.retain(&rows)?;
            active = (active.iter().zip(&going))
                .filter(|(_, &g)| g)
                .map(|(&s, _)| s)
                .collect();
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
    /// The `keep` best continuations of `source`'s running beams, best first, from their next-token
    /// `logits` (one row of `vocab` after another; `row` is room for one row's log-probabilities);
    /// equal scores in the order of beam, then token (as `torch.topk` leaves them).
    fn candidates(
        &self,
        source: &Beams,
        logits: &[f32],
        row: &mut Vec<f32>,
        length: usize,
    ) -> Vec<Candidate> {
        let mut best = Best::new(self.keep.min(self.beams * self.vocab));
        for (beam, logits) in logits.chunks(self.vocab).enumerate() {
            row.clear();
            row.extend_from_slice(logits);
            log_softmax(row);
            self.constraints.apply(&source.running[beam], row);
            best.scan(row, source.running_scores[beam], beam * self.vocab);
        }
        best.kept
            .into_iter()
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
    /// the current length (or, for `"never"` with a positive length penalty, at the limit). Returns
    /// whether the outputs can still change: improvable and, under `early_stopping: true`, not all
    /// `num_beams` hypotheses finished.
    fn update_improvable(&mut self, search: &Search, length: usize) -> bool {
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
        let full =
            config.early_stopping == EarlyStopping::Finished && self.is_finished.iter().all(|&f| f);
        self.improvable && !full
    }
}

/// The `keep` highest scores of a scan in index order, best first: a later score enters only when
/// strictly higher than the worst kept, so equals stay in index order.
struct Best {
    keep: usize,
    /// (score, index), best first.
    kept: Vec<(f32, usize)>,
}

/// Scores looked at together when deciding that none of them enters.
const BLOCK: usize = 32;

impl Best {
    fn new(keep: usize) -> Self {
        Best {
            keep,
            kept: Vec::with_capacity(keep + 1),
        }
    }

    /// Offers `base + value` for each of `values`, the first at index `first`.
    fn scan(&mut self, values: &[f32], base: f32, first: usize) {
        for (b, block) in values.chunks(BLOCK).enumerate() {
            // Rounding is monotonic: when the block's largest value does not enter, none does.
            if let Some(worst) = self.worst() {
                let largest = block
                    .iter()
                    .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
                // NaN never enters either: only `Greater` lets the block in.
                if (largest + base).partial_cmp(&worst) != Some(std::cmp::Ordering::Greater) {
                    continue;
                }
            }
            for (i, &value) in block.iter().enumerate() {
                self.offer(value + base, first + b * BLOCK + i);
            }
        }
    }

    fn worst(&self) -> Option<f32> {
        (self.kept.len() == self.keep).then(|| self.kept[self.keep - 1].0)
    }

    fn offer(&mut self, score: f32, index: usize) {
        // NaN never enters (`partial_cmp` gives no order), nor an equal or lower score.
        if self
            .worst()
            .is_some_and(|w| score.partial_cmp(&w) != Some(std::cmp::Ordering::Greater))
        {
            return;
        }
        let at = self.kept.partition_point(|&(s, _)| s >= score);
        self.kept.insert(at, (score, index));
        self.kept.truncate(self.keep);
    }
}

/// The indices of the `k` largest `scores`, largest first; equals in index order.
fn best(scores: &[f32], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    order.truncate(k);
    order
}
