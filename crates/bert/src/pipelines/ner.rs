//! Token classification (NER, slot filling) with `transformers`' token-classification post-processing:
//! softmax per token, special tokens skipped, and the aggregation strategies `none` (a row per token),
//! `simple` (adjacent tokens of one entity grouped), and `first`, `average`, `max` (sub-tokens of a word
//! forced to agree first, by the first token, the mean scores or the most confident token). Labels in
//! `ignore_labels` (`O` by default) are dropped.

use std::path::Path;

use serde::Serialize;

use crate::error::Result;
use crate::model::{BertForTokenClassification, Mode};
use crate::pipelines::{softmax, Pipeline, PipelineOptions};
use crate::tokenizer::{Encoding, Tokenizer};

/// How token predictions become entities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Aggregation {
    /// One entity per token.
    #[default]
    None,
    /// Adjacent tokens with the same entity type (B- then I-) grouped.
    Simple,
    /// Words take their first token's label, then grouped.
    First,
    /// Words take the label of their mean token scores, then grouped.
    Average,
    /// Words take their most confident token's label, then grouped.
    Max,
}

impl std::str::FromStr for Aggregation {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "none" => Ok(Aggregation::None),
            "simple" => Ok(Aggregation::Simple),
            "first" => Ok(Aggregation::First),
            "average" => Ok(Aggregation::Average),
            "max" => Ok(Aggregation::Max),
            other => Err(format!(
                "unknown aggregation strategy `{other}` (expected none, simple, first, average or max)"
            )),
        }
    }
}

/// A token or entity found in a text; `start`/`end` are character offsets into it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entity {
    /// The label of a token (aggregation `none`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entity: Option<String>,
    /// The type of a grouped entity (the other strategies).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entity_group: Option<String>,
    pub score: f32,
    /// The token's position in the encoding (aggregation `none`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    pub word: String,
    pub start: usize,
    pub end: usize,
}

/// A scored token before aggregation.
struct Scored {
    token: String,
    scores: Vec<f32>,
    start: usize,
    end: usize,
    index: usize,
    is_subword: bool,
}

/// A token or word with its label, before grouping.
struct Labelled {
    label: String,
    score: f32,
    index: usize,
    word: String,
    start: usize,
    end: usize,
}

/// Tags the tokens of texts.
pub struct TokenClassifier {
    pipeline: Pipeline<BertForTokenClassification>,
    labels: Vec<String>,
}

impl TokenClassifier {
    pub fn load(dir: &Path, options: &PipelineOptions) -> Result<Self> {
        let pipeline = Pipeline::load(dir, options, None, BertForTokenClassification::load)?;
        let labels = pipeline.config.labels();
        Ok(TokenClassifier { pipeline, labels })
    }

    pub fn pipeline(&self) -> &Pipeline<BertForTokenClassification> {
        &self.pipeline
    }

    pub fn encode(&self, text: &str) -> Result<Encoding> {
        self.pipeline.encode(text)
    }

    /// The entities of each text (`encodings[i]` must be `texts[i]` encoded).
    pub fn tag(
        &self,
        texts: &[&str],
        encodings: &[Encoding],
        aggregation: Aggregation,
        ignore_labels: &[String],
    ) -> Result<Vec<Vec<Entity>>> {
        if encodings.is_empty() {
            return Ok(Vec::new());
        }
        let batch = self.pipeline.batch(encodings)?;
        let logits: Vec<Vec<Vec<f32>>> = self
            .pipeline
            .model
            .forward(&batch, &Mode::Eval)?
            .to_vec3()?;
        let aggregator = Aggregator {
            labels: &self.labels,
            tokenizer: &self.pipeline.tokenizer,
        };
        Ok((texts.iter().zip(encodings).zip(&logits))
            .map(|((text, encoding), rows)| {
                aggregator.entities(text, encoding, rows, aggregation, ignore_labels)
            })
            .collect())
    }
}

/// Turns per-token logits into entities as `transformers`' token-classification pipeline does.
pub(crate) struct Aggregator<'a> {
    /// Tag names by id.
    pub labels: &'a [String],
    pub tokenizer: &'a Tokenizer,
}

impl Aggregator<'_> {
    /// The entities of `text` from its `encoding`'s per-token logits `rows`, grouped by
    /// `aggregation`, without those labelled `ignore_labels`.
    pub fn entities(
        &self,
        text: &str,
        encoding: &Encoding,
        rows: &[Vec<f32>],
        aggregation: Aggregation,
        ignore_labels: &[String],
    ) -> Vec<Entity> {
        let scored = self.scored_tokens(text, encoding, rows);
        let labelled = match aggregation {
            Aggregation::None | Aggregation::Simple => {
                scored.iter().map(|s| self.label_token(s)).collect()
            }
            _ => self.label_words(&scored, aggregation),
        };
        let entities = if aggregation == Aggregation::None {
            labelled.into_iter().map(token_entity).collect()
        } else {
            self.group(&labelled)
        };
        entities
            .into_iter()
            .filter(|e: &Entity| {
                let label = e.entity.as_ref().or(e.entity_group.as_ref());
                !label.is_some_and(|l| ignore_labels.contains(l))
            })
            .collect()
    }

    /// Softmax scores of the non-special tokens, with whether each continues a word (a `##` piece).
    fn scored_tokens(&self, text: &str, encoding: &Encoding, rows: &[Vec<f32>]) -> Vec<Scored> {
        let chars: Vec<char> = text.chars().collect();
        let unk = self
            .tokenizer
            .token_to_id(&self.tokenizer.special_tokens().unk);
        (0..encoding.ids.len())
            .filter(|&i| encoding.special_tokens_mask[i] == 0)
            .map(|i| {
                let (start, end) = encoding.offsets[i];
                let reference: String = chars[start.min(chars.len())..end.min(chars.len())]
                    .iter()
                    .collect();
                let mut token = encoding.tokens[i].clone();
                let mut is_subword = token.chars().count() != reference.chars().count();
                if Some(encoding.ids[i]) == unk {
                    token = reference;
                    is_subword = false;
                }
                Scored {
                    token,
                    scores: softmax(&rows[i]),
                    start,
                    end,
                    index: i,
                    is_subword,
                }
            })
            .collect()
    }

    fn label_token(&self, s: &Scored) -> Labelled {
        let best = argmax(&s.scores);
        Labelled {
            label: self.labels[best].clone(),
            score: s.scores[best],
            index: s.index,
            word: s.token.clone(),
            start: s.start,
            end: s.end,
        }
    }

    /// Sub-tokens grouped into words, each word labelled by `aggregation`.
    fn label_words(&self, scored: &[Scored], aggregation: Aggregation) -> Vec<Labelled> {
        let mut words: Vec<Vec<&Scored>> = Vec::new();
        for s in scored {
            match words.last_mut() {
                Some(word) if s.is_subword => word.push(s),
                _ => words.push(vec![s]),
            }
        }
        words
            .iter()
            .map(|pieces| {
                let scores: Vec<f32> = match aggregation {
                    Aggregation::Max => pieces
                        .iter()
                        .max_by(|a, b| {
                            max_of(&a.scores)
                                .total_cmp(&max_of(&b.scores))
                                .then(std::cmp::Ordering::Greater)
                        })
                        .map(|p| p.scores.clone())
                        .unwrap_or_default(),
                    Aggregation::Average => (0..self.labels.len())
                        .map(|k| {
                            pieces.iter().map(|p| p.scores[k]).sum::<f32>() / pieces.len() as f32
                        })
                        .collect(),
                    _ => pieces[0].scores.clone(),
                };
                let best = argmax(&scores);
                let tokens: Vec<String> = pieces.iter().map(|p| p.token.clone()).collect();
                Labelled {
                    label: self.labels[best].clone(),
                    score: scores[best],
                    index: pieces[0].index,
                    word: self.tokenizer.tokens_to_string(&tokens),
                    start: pieces[0].start,
                    end: pieces[pieces.len() - 1].end,
                }
            })
            .collect()
    }

    /// Adjacent tokens or words of one entity type (a B- starts a new one) as one entity.
    fn group(&self, labelled: &[Labelled]) -> Vec<Entity> {
        let mut groups: Vec<Vec<&Labelled>> = Vec::new();
        for l in labelled {
            let (bi, tag) = split_tag(&l.label);
            match groups.last_mut() {
                Some(group) if bi != 'B' && split_tag(&group[group.len() - 1].label).1 == tag => {
                    group.push(l)
                }
                _ => groups.push(vec![l]),
            }
        }
        groups
            .into_iter()
            .map(|group| {
                let first = group[0];
                let kind = first
                    .label
                    .split_once('-')
                    .map_or(first.label.as_str(), |(_, k)| k);
                let words: Vec<String> = group.iter().map(|l| l.word.clone()).collect();
                Entity {
                    entity: None,
                    entity_group: Some(kind.to_string()),
                    score: group.iter().map(|l| l.score).sum::<f32>() / group.len() as f32,
                    index: None,
                    word: self.tokenizer.tokens_to_string(&words),
                    start: first.start,
                    end: group[group.len() - 1].end,
                }
            })
            .collect()
    }
}

fn token_entity(l: Labelled) -> Entity {
    Entity {
        entity: Some(l.label),
        entity_group: None,
        score: l.score,
        index: Some(l.index),
        word: l.word,
        start: l.start,
        end: l.end,
    }
}

/// `B-PER` -> (`B`, `PER`); `I-PER` -> (`I`, `PER`); anything else continues: (`I`, itself).
fn split_tag(label: &str) -> (char, &str) {
    match (label.strip_prefix("B-"), label.strip_prefix("I-")) {
        (Some(tag), _) => ('B', tag),
        (_, Some(tag)) => ('I', tag),
        _ => ('I', label),
    }
}

/// The first index of the largest value (numpy's argmax).
pub(super) fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best
}

fn max_of(values: &[f32]) -> f32 {
    values.iter().copied().fold(f32::NEG_INFINITY, f32::max)
}
