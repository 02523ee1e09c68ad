//! Next-sentence-prediction instances `[CLS] A [SEP] B [SEP]`, built as Google's
//! `create_pretraining_data.py` builds them: segments packed up to a target length (shorter with
//! `short_seq_prob`), B the true continuation half of the time and a span of another document otherwise,
//! then `truncate_seq_pair`.
//!
//! To stream a corpus larger than memory, "another document" is drawn from a window of neighbouring
//! documents rather than the whole corpus, and instances are shuffled through a bounded buffer rather than
//! all at once.

use std::collections::VecDeque;

use crate::error::{Error, Result};
use crate::rng::Rng;

/// How instances are cut.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InstanceConfig {
    /// Tokens per instance, `[CLS]` and both `[SEP]` included.
    pub max_seq_length: usize,
    /// Probability of a shorter target length, so the model also sees short inputs.
    pub short_seq_prob: f64,
    /// Documents kept around the current one to draw random next segments from.
    pub window_documents: usize,
    /// Instances held for shuffling.
    pub shuffle_buffer: usize,
}

impl Default for InstanceConfig {
    fn default() -> Self {
        InstanceConfig {
            max_seq_length: 128,
            short_seq_prob: 0.1,
            window_documents: 1000,
            shuffle_buffer: 10_000,
        }
    }
}

/// A sentence pair before masking.
#[derive(Debug, Clone, PartialEq)]
pub struct PairInstance {
    /// `[CLS] A [SEP] B [SEP]`
    pub tokens: Vec<u32>,
    /// 0 for `[CLS] A [SEP]`, 1 for `B [SEP]`.
    pub segment_ids: Vec<u32>,
    /// The NSP label: B is not A's continuation.
    pub is_random_next: bool,
}

/// A tokenized document: one id list per sentence.
pub type TokenizedDocument = Vec<Vec<u32>>;

/// `[CLS]` and `[SEP]` ids.
#[derive(Debug, Clone, Copy)]
pub struct PairIds {
    pub cls: u32,
    pub sep: u32,
}

/// `rng.randint(low, high)`, both ends included, as in Python.
fn randint(rng: &mut Rng, low: usize, high: usize) -> usize {
    low + rng.below(high - low + 1)
}

/// The instances of document `index` of `window`; random next segments come from its other documents.
pub fn instances_from_document(
    window: &VecDeque<TokenizedDocument>,
    index: usize,
    config: &InstanceConfig,
    ids: PairIds,
    rng: &mut Rng,
) -> Vec<PairInstance> {
    let document = &window[index];
    let max_num_tokens = config.max_seq_length - 3;
    let target_seq_length = if rng.uniform() < config.short_seq_prob {
        randint(rng, 2, max_num_tokens)
    } else {
        max_num_tokens
    };
    let mut instances = Vec::new();
    let mut chunk: Vec<&Vec<u32>> = Vec::new();
    let mut chunk_length = 0;
    let mut i = 0;
    while i < document.len() {
        chunk.push(&document[i]);
        chunk_length += document[i].len();
        if i == document.len() - 1 || chunk_length >= target_seq_length {
            let a_end = if chunk.len() >= 2 {
                randint(rng, 1, chunk.len() - 1)
            } else {
                1
            };
            let mut tokens_a: Vec<u32> = chunk[..a_end]
                .iter()
                .flat_map(|s| s.iter().copied())
                .collect();
            let mut tokens_b: Vec<u32> = Vec::new();
            let is_random_next = chunk.len() == 1 || rng.uniform() < 0.5;
            if is_random_next {
                let target_b_length = target_seq_length.saturating_sub(tokens_a.len());
                let other = &window[other_document(window.len(), index, rng)];
                let start = randint(rng, 0, other.len() - 1);
                for sentence in &other[start..] {
                    tokens_b.extend_from_slice(sentence);
                    if tokens_b.len() >= target_b_length {
                        break;
                    }
                }
                // The unused segments go back to be used in the next instance.
                i -= chunk.len() - a_end;
            } else {
                tokens_b = chunk[a_end..]
                    .iter()
                    .flat_map(|s| s.iter().copied())
                    .collect();
            }
            truncate_seq_pair(&mut tokens_a, &mut tokens_b, max_num_tokens, rng);
            if !tokens_a.is_empty() && !tokens_b.is_empty() {
                instances.push(pair(&tokens_a, &tokens_b, is_random_next, ids));
            }
            chunk.clear();
            chunk_length = 0;
        }
        i += 1;
    }
    instances
}

/// A random document index other than `index` (Google's script tries ten times).
fn other_document(len: usize, index: usize, rng: &mut Rng) -> usize {
    let mut pick = index;
    for _ in 0..10 {
        pick = rng.below(len);
        if pick != index {
            break;
        }
    }
    pick
}

/// Trims the longer sequence, one token at a time, from the front or the back at random.
pub fn truncate_seq_pair(a: &mut Vec<u32>, b: &mut Vec<u32>, max_num_tokens: usize, rng: &mut Rng) {
    while a.len() + b.len() > max_num_tokens {
        let longer = if a.len() > b.len() { &mut *a } else { &mut *b };
        if rng.uniform() < 0.5 {
            longer.remove(0);
        } else {
            longer.pop();
        }
    }
}

fn pair(a: &[u32], b: &[u32], is_random_next: bool, ids: PairIds) -> PairInstance {
    let mut tokens = Vec::with_capacity(a.len() + b.len() + 3);
    tokens.push(ids.cls);
    tokens.extend_from_slice(a);
    tokens.push(ids.sep);
    let first = tokens.len();
    tokens.extend_from_slice(b);
    tokens.push(ids.sep);
    let mut segment_ids = vec![0; first];
    segment_ids.resize(tokens.len(), 1);
    PairInstance {
        tokens,
        segment_ids,
        is_random_next,
    }
}

/// Instances of a stream of tokenized documents, shuffled through a bounded buffer.
pub struct InstanceStream<D: Iterator<Item = Result<TokenizedDocument>>> {
    documents: D,
    config: InstanceConfig,
    ids: PairIds,
    rng: Rng,
    window: VecDeque<TokenizedDocument>,
    cursor: usize,
    buffer: Vec<PairInstance>,
    documents_read: usize,
}

impl<D: Iterator<Item = Result<TokenizedDocument>>> InstanceStream<D> {
    /// Starts the stream; fails if the corpus has fewer than two documents (NSP needs two).
    pub fn new(documents: D, config: InstanceConfig, ids: PairIds, seed: u64) -> Result<Self> {
        if config.max_seq_length < 5 {
            return Err(Error::InvalidInput(
                "--max-seq-length must be at least 5".into(),
            ));
        }
        let mut stream = InstanceStream {
            documents,
            config,
            ids,
            rng: Rng::new(seed),
            window: VecDeque::new(),
            cursor: 0,
            buffer: Vec::new(),
            documents_read: 0,
        };
        while stream.window.len() < config.window_documents.max(2) && stream.read_document()? {}
        match stream.documents_read {
            0 => Err(Error::InvalidInput("the corpus has no documents (no non-empty lines)".into())),
            1 => Err(Error::InvalidInput(
                "the corpus has one document; next-sentence prediction needs at least two (separate documents with a blank line)".into(),
            )),
            _ => Ok(stream),
        }
    }

    /// Reads one document into the window; false at the end of the corpus.
    fn read_document(&mut self) -> Result<bool> {
        for document in self.documents.by_ref() {
            let document: TokenizedDocument =
                document?.into_iter().filter(|s| !s.is_empty()).collect();
            if !document.is_empty() {
                self.window.push_back(document);
                self.documents_read += 1;
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Makes instances of the next document; false when every document is done.
    fn refill(&mut self) -> Result<bool> {
        if self.cursor >= self.window.len() {
            return Ok(false);
        }
        let made = instances_from_document(
            &self.window,
            self.cursor,
            &self.config,
            self.ids,
            &mut self.rng,
        );
        self.buffer.extend(made);
        self.cursor += 1;
        self.read_document()?;
        if self.cursor > self.config.window_documents / 2 {
            self.window.pop_front();
            self.cursor -= 1;
        }
        Ok(true)
    }
}

impl<D: Iterator<Item = Result<TokenizedDocument>>> Iterator for InstanceStream<D> {
    type Item = Result<PairInstance>;

    fn next(&mut self) -> Option<Result<PairInstance>> {
        while self.buffer.len() < self.config.shuffle_buffer.max(1) {
            match self.refill() {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => return Some(Err(e)),
            }
        }
        if self.buffer.is_empty() {
            return None;
        }
        let pick = self.rng.below(self.buffer.len());
        Some(Ok(self.buffer.swap_remove(pick)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDS: PairIds = PairIds { cls: 1, sep: 2 };

    /// `n` documents of `sentences` sentences, each sentence `len` tokens; token values encode
    /// (document, sentence) so tests can see where each came from.
    fn corpus(n: usize, sentences: usize, len: usize) -> Vec<Result<TokenizedDocument>> {
        (0..n)
            .map(|d| {
                Ok((0..sentences)
                    .map(|s| vec![(1000 * (d + 1) + s) as u32; len])
                    .collect())
            })
            .collect()
    }

    #[test]
    fn instances_are_well_formed_and_half_are_random() {
        let config = InstanceConfig {
            max_seq_length: 32,
            ..Default::default()
        };
        let stream = InstanceStream::new(corpus(200, 12, 5).into_iter(), config, IDS, 7).unwrap();
        let instances: Vec<PairInstance> = stream.collect::<Result<_>>().unwrap();
        assert!(instances.len() > 400, "{} instances", instances.len());
        let mut random = 0;
        for inst in &instances {
            assert!(inst.tokens.len() <= 32);
            assert_eq!(inst.tokens[0], 1);
            assert_eq!(*inst.tokens.last().unwrap(), 2);
            assert_eq!(inst.tokens.iter().filter(|&&t| t == 2).count(), 2);
            let sep = inst.tokens.iter().position(|&t| t == 2).unwrap();
            assert!(inst.segment_ids[..=sep].iter().all(|&s| s == 0));
            assert!(inst.segment_ids[sep + 1..].iter().all(|&s| s == 1));
            let doc_of = |t: u32| t / 1000;
            let a_doc = doc_of(inst.tokens[1]);
            let b_doc = doc_of(inst.tokens[sep + 1]);
            assert!(inst.tokens[1..sep].iter().all(|&t| doc_of(t) == a_doc));
            if inst.is_random_next {
                random += 1;
                assert_ne!(
                    a_doc, b_doc,
                    "a random next segment comes from another document"
                );
            } else {
                assert_eq!(a_doc, b_doc);
                assert!(inst.tokens[sep + 1] >= inst.tokens[sep - 1], "B follows A");
            }
        }
        let rate = random as f64 / instances.len() as f64;
        assert!((0.45..0.6).contains(&rate), "random-next rate {rate}");
    }

    #[test]
    fn short_targets_are_drawn_per_document_at_short_seq_prob() {
        let window: VecDeque<TokenizedDocument> =
            corpus(2, 100, 3).into_iter().map(|d| d.unwrap()).collect();
        // The share of documents whose first instance is short, with and without short targets: random
        // next segments that start near the other document's end are short either way.
        let short_rate = |short_seq_prob| {
            let config = InstanceConfig {
                max_seq_length: 64,
                short_seq_prob,
                ..Default::default()
            };
            let mut rng = Rng::new(3);
            let trials = 4000;
            let short = (0..trials)
                .filter(|_| {
                    instances_from_document(&window, 0, &config, IDS, &mut rng)[0]
                        .tokens
                        .len()
                        < 60
                })
                .count();
            short as f64 / trials as f64
        };
        // A short target is uniform in 2..=61, so about nine in ten short targets give a short instance.
        let extra = short_rate(0.1) - short_rate(0.0);
        assert!((0.06..0.12).contains(&extra), "short targets add {extra}");
    }

    #[test]
    fn the_stream_is_deterministic_for_a_seed() {
        let run = |seed| -> Vec<PairInstance> {
            InstanceStream::new(
                corpus(30, 6, 4).into_iter(),
                InstanceConfig::default(),
                IDS,
                seed,
            )
            .unwrap()
            .map(|i| i.unwrap())
            .collect()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }

    #[test]
    fn too_small_corpora_are_errors() {
        let err = InstanceStream::new(
            corpus(0, 1, 1).into_iter(),
            InstanceConfig::default(),
            IDS,
            0,
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("no documents"));
        let err = InstanceStream::new(
            corpus(1, 5, 3).into_iter(),
            InstanceConfig::default(),
            IDS,
            0,
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("needs at least two"));
    }

    #[test]
    fn truncation_trims_the_longer_side() {
        let mut rng = Rng::new(0);
        let (mut a, mut b) = (vec![1; 10], vec![2; 3]);
        truncate_seq_pair(&mut a, &mut b, 8, &mut rng);
        assert_eq!((a.len(), b.len()), (5, 3));
    }
}
