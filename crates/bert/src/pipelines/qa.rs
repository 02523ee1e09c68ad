//! Extractive question answering with `transformers`' question-answering pipeline semantics: the context
//! cut into windows (`max_seq_len`, `doc_stride`), start and end logits turned into probabilities over
//! the context tokens and `[CLS]` of each window, every span of at most `max_answer_len` tokens scored as
//! start x end probability, the best `2 top_k + 10` spans widened to whole words (spans that become the
//! same text, ignoring case, add their scores), the best `top_k` over all windows; with
//! `handle_impossible_answer`, the empty answer competes with the smallest `[CLS]` score.

use std::path::Path;

use serde::Serialize;

use crate::error::Result;
use crate::model::{BertForQuestionAnswering, Mode};
use crate::pipelines::{Pipeline, PipelineOptions};
use crate::tokenizer::{Encoding, Tokenizer};

/// One row of floats per window.
type Rows = Vec<Vec<f32>>;

/// Windows of one context run together; more are run in groups of this many.
const WINDOWS_PER_BATCH: usize = 16;

/// Decoding settings (`transformers`' defaults: 1, 15, false, 384, 128 or half a window).
#[derive(Debug, Clone, Copy)]
pub struct QaOptions {
    pub top_k: usize,
    pub max_answer_len: usize,
    pub handle_impossible_answer: bool,
    /// Tokens per window (capped by the model's positions).
    pub max_seq_len: usize,
    /// Tokens shared by neighbouring windows; `None`: 128, or half a window if that is less (as
    /// `transformers` picks it; a given stride is used as given).
    pub doc_stride: Option<usize>,
}

impl Default for QaOptions {
    fn default() -> Self {
        QaOptions {
            top_k: 1,
            max_answer_len: 15,
            handle_impossible_answer: false,
            max_seq_len: 384,
            doc_stride: None,
        }
    }
}

/// An answer: its probability, its character span in the context and its text.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Answer {
    pub score: f32,
    pub start: usize,
    pub end: usize,
    pub answer: String,
}

/// Answers questions about contexts.
pub struct QuestionAnswerer {
    pipeline: Pipeline<BertForQuestionAnswering>,
    /// The tokenizer cutting contexts into windows.
    windows: Tokenizer,
    options: QaOptions,
}

impl QuestionAnswerer {
    pub fn load(
        dir: &Path,
        pipeline_options: &PipelineOptions,
        options: QaOptions,
    ) -> Result<Self> {
        let pipeline = Pipeline::load(dir, pipeline_options, None, BertForQuestionAnswering::load)?;
        let max_seq_len = options
            .max_seq_len
            .min(pipeline.config.max_position_embeddings);
        let stride = options.doc_stride.unwrap_or(128.min(max_seq_len / 2));
        let windows = pipeline
            .tokenizer
            .clone()
            .with_windows(max_seq_len, stride)?;
        Ok(QuestionAnswerer {
            pipeline,
            windows,
            options,
        })
    }

    pub fn pipeline(&self) -> &Pipeline<BertForQuestionAnswering> {
        &self.pipeline
    }

    /// The windows of a question and its context.
    pub fn encode(&self, question: &str, context: &str) -> Result<Vec<Encoding>> {
        self.windows.encode_pair_windows(question, context)
    }

    /// The options given at load.
    pub fn options(&self) -> &QaOptions {
        &self.options
    }

    /// The best answers to one question (`windows` from [`QuestionAnswerer::encode`]), best first.
    pub fn answer(&self, context: &str, windows: &[Encoding]) -> Result<Vec<Answer>> {
        self.answer_with(context, windows, &self.options)
    }

    /// [`QuestionAnswerer::answer`] with other decoding options (`top_k`, `max_answer_len`,
    /// `handle_impossible_answer`; the windows were cut at load).
    pub fn answer_with(
        &self,
        context: &str,
        windows: &[Encoding],
        options: &QaOptions,
    ) -> Result<Vec<Answer>> {
        if windows.is_empty() {
            return Ok(Vec::new());
        }
        let (starts, ends) = self.logits(windows)?;
        let chars: Vec<char> = context.chars().collect();
        let mut min_null_score = 1_000_000f32;
        let mut answers = Vec::new();
        for (w, window) in windows.iter().enumerate() {
            let n = window.ids.len();
            // Context tokens and [CLS] may hold the answer.
            let allowed: Vec<bool> = (0..n)
                .map(|i| {
                    (window.type_ids[i] == 1 && window.special_tokens_mask[i] == 0)
                        || window.ids[i] == self.cls_id()
                })
                .collect();
            let mut start = probabilities(&starts[w][..n], &allowed);
            let mut end = probabilities(&ends[w][..n], &allowed);
            if options.handle_impossible_answer {
                min_null_score = min_null_score.min(start[0] * end[0]);
            }
            start[0] = 0.0;
            end[0] = 0.0;
            // More candidates than asked for: spans widened to the same words merge.
            let candidates = options.top_k.max(1) * 2 + 10;
            for (s, e, score) in best_spans(&start, &end, candidates, options.max_answer_len) {
                if !(allowed[s] && allowed[e]) {
                    continue;
                }
                let (from, to) = word_span(window, s, e);
                let text: String = chars[from.min(chars.len())..to.min(chars.len())]
                    .iter()
                    .collect();
                let same = answers
                    .iter_mut()
                    .find(|a: &&mut Answer| a.answer.to_lowercase() == text.to_lowercase());
                match same {
                    Some(answer) => answer.score += score,
                    None => answers.push(Answer {
                        score,
                        start: from,
                        end: to,
                        answer: text,
                    }),
                }
            }
        }
        if options.handle_impossible_answer {
            answers.push(Answer {
                score: min_null_score,
                start: 0,
                end: 0,
                answer: String::new(),
            });
        }
        answers.sort_by(|a, b| b.score.total_cmp(&a.score));
        answers.truncate(options.top_k.max(1));
        Ok(answers)
    }

    /// Start and end logits of each window, run `WINDOWS_PER_BATCH` windows at a time so that a long
    /// context's memory stays bounded.
    fn logits(&self, windows: &[Encoding]) -> Result<(Rows, Rows)> {
        let (mut starts, mut ends) = (Vec::new(), Vec::new());
        for group in windows.chunks(WINDOWS_PER_BATCH) {
            let batch = self.pipeline.batch(group)?;
            let out = self.pipeline.model.forward(&batch, &Mode::Eval)?;
            starts.extend(out.start_logits.to_vec2::<f32>()?);
            ends.extend(out.end_logits.to_vec2::<f32>()?);
        }
        Ok((starts, ends))
    }

    fn cls_id(&self) -> u32 {
        let tokenizer = &self.pipeline.tokenizer;
        tokenizer
            .token_to_id(&tokenizer.special_tokens().cls)
            .unwrap_or(u32::MAX)
    }
}

/// Softmax over the allowed tokens (the others count as logit -10000, as `transformers` masks them).
fn probabilities(logits: &[f32], allowed: &[bool]) -> Vec<f32> {
    let masked: Vec<f32> = logits
        .iter()
        .zip(allowed)
        .map(|(&x, &ok)| if ok { x } else { -10000.0 })
        .collect();
    super::softmax(&masked)
}

/// The `top_k` (start, end) pairs by start x end probability with `start <= end < start +
/// max_answer_len`, best first; ties keep the earlier pair (row-major), as numpy's argmax does.
fn best_spans(
    start: &[f32],
    end: &[f32],
    top_k: usize,
    max_answer_len: usize,
) -> Vec<(usize, usize, f32)> {
    let mut candidates: Vec<(usize, usize, f32)> = Vec::new();
    for (s, &p) in start.iter().enumerate() {
        let longest = max_answer_len.max(1);
        for (e, &q) in end.iter().enumerate().skip(s).take(longest) {
            candidates.push((s, e, p * q));
        }
    }
    candidates.sort_by(|a, b| b.2.total_cmp(&a.2));
    candidates.truncate(top_k.max(1));
    candidates
}

/// The character span of the words holding tokens `s` and `e` (the tokens' own spans when they belong
/// to no word), within this window's part of the context.
fn word_span(window: &Encoding, s: usize, e: usize) -> (usize, usize) {
    let word_chars = |t: usize| -> (usize, usize) {
        let Some(word) = window.word_ids[t] else {
            return window.offsets[t];
        };
        let same: Vec<usize> = (0..window.ids.len())
            .filter(|&i| {
                window.word_ids[i] == Some(word) && window.type_ids[i] == window.type_ids[t]
            })
            .collect();
        let from = same.iter().map(|&i| window.offsets[i].0).min().unwrap_or(0);
        let to = same.iter().map(|&i| window.offsets[i].1).max().unwrap_or(0);
        (from, to)
    };
    (word_chars(s).0, word_chars(e).1)
}
