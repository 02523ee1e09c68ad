//! BERTScore (Zhang et al., 2020) as the `bert-score` package computes it: each sentence's tokens as
//! the hidden states of one encoder layer, L2-normalised; every candidate token matched to its most
//! similar reference token (precision) and every reference token to its most similar candidate token
//! (recall), weighted by idf (from the references, or 1) with `[CLS]` and `[SEP]` weighted 0; F1 of the
//! two; optionally rescaled with a baseline file (`(score - b) / (1 - b)`).

use std::collections::HashMap;
use std::path::Path;

use candle_core::Device;
use serde::Serialize;

use crate::batch::Batch;
use crate::error::{read_to_string, Error, Result};
use crate::model::{BertModel, Mode};
use crate::tokenizer::{Encoding, Tokenizer};
use crate::weights::config::BertConfig;
use crate::weights::params::LoadReport;
use crate::weights::pretrained::Pretrained;

/// Sentences embedded in one forward pass.
const BATCH: usize = 64;

/// One pair's scores, or their means over a corpus.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BertScore {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

/// The encoder cut to the layer whose states are compared, and its tokenizer.
pub struct BertScorer {
    tokenizer: Tokenizer,
    model: BertModel,
    pub report: LoadReport,
    /// The layer compared (0: the embeddings).
    pub num_layers: usize,
}

/// A sentence's token ids and normalised token vectors.
struct Embedded {
    ids: Vec<u32>,
    vectors: Vec<Vec<f32>>,
}

impl BertScorer {
    /// Loads the checkpoint in `dir` with its first `num_layers` layers (default: all).
    pub fn load(dir: &Path, num_layers: Option<usize>) -> Result<Self> {
        let tokenizer = Tokenizer::from_dir(dir)?;
        let config = BertConfig::from_file(&dir.join("config.json"))?;
        let layers = num_layers.unwrap_or(config.num_hidden_layers);
        if layers > config.num_hidden_layers {
            return Err(Error::InvalidInput(format!(
                "--num-layers {layers}: the model has {} layers",
                config.num_hidden_layers
            )));
        }
        let max_length = tokenizer
            .model_max_length()
            .unwrap_or(usize::MAX)
            .min(config.max_position_embeddings);
        let tokenizer = tokenizer.with_truncation(max_length, crate::Truncation::LongestFirst)?;
        let loaded = Pretrained::load(dir, &Device::Cpu, |p, c: &BertConfig| {
            let cut = BertConfig {
                num_hidden_layers: layers,
                ..c.clone()
            };
            BertModel::load(&p.pp("bert"), &cut, false)
        })?;
        Ok(BertScorer {
            tokenizer,
            model: loaded.model,
            report: loaded.report,
            num_layers: layers,
        })
    }

    /// Per pair, the scores of `candidates[i]` against `references[i]`; with `idf`, tokens are
    /// weighted by their inverse document frequency among the references.
    pub fn score(
        &self,
        candidates: &[&str],
        references: &[&str],
        idf: bool,
    ) -> Result<Vec<BertScore>> {
        let candidates = self.embed(candidates)?;
        let references = self.embed(references)?;
        let weights = idf.then(|| idf_weights(&references));
        let special = self.special_ids();
        let weight = |id: u32| -> f64 {
            if special.contains(&id) && weights.is_none() {
                return 0.0;
            }
            weights.as_ref().map_or(1.0, |w| w.weight(id))
        };
        Ok(candidates
            .iter()
            .zip(&references)
            .map(|(c, r)| pair_score(c, r, &weight))
            .collect())
    }

    fn special_ids(&self) -> Vec<u32> {
        let special = self.tokenizer.special_tokens();
        [&special.cls, &special.sep]
            .iter()
            .filter_map(|t| self.tokenizer.token_to_id(t))
            .collect()
    }

    /// Tokenizes (`[CLS] ... [SEP]`, stripped, truncated) and embeds sentences, in batches.
    fn embed(&self, sentences: &[&str]) -> Result<Vec<Embedded>> {
        let encodings = sentences
            .iter()
            .map(|s| self.tokenizer.encode(s.trim()))
            .collect::<Result<Vec<Encoding>>>()?;
        let mut out = Vec::with_capacity(encodings.len());
        for chunk in encodings.chunks(BATCH) {
            let batch = Batch::from_encodings(chunk, self.tokenizer.pad_id(), &Device::Cpu)?;
            let hidden: Vec<Vec<Vec<f32>>> = self
                .model
                .forward(&batch, &Mode::Eval)?
                .hidden_states
                .to_vec3()?;
            for (encoding, rows) in chunk.iter().zip(hidden) {
                let vectors = rows[..encoding.ids.len()]
                    .iter()
                    .map(|v| normalised(v))
                    .collect();
                out.push(Embedded {
                    ids: encoding.ids.clone(),
                    vectors,
                });
            }
        }
        Ok(out)
    }
}

fn normalised(v: &[f32]) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / norm).collect()
}

/// `log((M + 1) / (n + 1))` for a token in `n` of the `M` references.
struct IdfWeights {
    documents: HashMap<u32, usize>,
    count: usize,
}

impl IdfWeights {
    fn weight(&self, id: u32) -> f64 {
        let n = self.documents.get(&id).copied().unwrap_or(0);
        ((self.count + 1) as f64 / (n + 1) as f64).ln()
    }
}

fn idf_weights(references: &[Embedded]) -> IdfWeights {
    let mut documents = HashMap::new();
    for reference in references {
        let mut seen = reference.ids.clone();
        seen.sort_unstable();
        seen.dedup();
        for id in seen {
            *documents.entry(id).or_insert(0) += 1;
        }
    }
    IdfWeights {
        documents,
        count: references.len(),
    }
}

/// Greedy matching of one candidate against one reference.
fn pair_score(
    candidate: &Embedded,
    reference: &Embedded,
    weight: &impl Fn(u32) -> f64,
) -> BertScore {
    // A sentence of nothing but [CLS] [SEP] scores 0, as in bert-score.
    if candidate.ids.len() <= 2 || reference.ids.len() <= 2 {
        return BertScore {
            precision: 0.0,
            recall: 0.0,
            f1: 0.0,
        };
    }
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    let similarity: Vec<Vec<f32>> = (candidate.vectors.iter())
        .map(|c| reference.vectors.iter().map(|r| dot(c, r)).collect())
        .collect();
    let best_in_rows = similarity
        .iter()
        .map(|row| row.iter().copied().fold(f32::MIN, f32::max));
    let best_in_columns = (0..reference.vectors.len())
        .map(|j| similarity.iter().map(|row| row[j]).fold(f32::MIN, f32::max));
    let weighted = |best: Vec<f32>, ids: &[u32]| {
        let weights: Vec<f64> = ids.iter().map(|&id| weight(id)).collect();
        let total: f64 = weights.iter().sum();
        best.iter()
            .zip(&weights)
            .map(|(&s, &w)| f64::from(s) * w)
            .sum::<f64>()
            / total
    };
    let precision = weighted(best_in_rows.collect(), &candidate.ids);
    let recall = weighted(best_in_columns.collect(), &reference.ids);
    let f1 = 2.0 * precision * recall / (precision + recall);
    BertScore {
        precision,
        recall,
        f1: if f1.is_nan() { 0.0 } else { f1 },
    }
}

/// A bert-score baseline file (`LAYER,P,R,F` rows): the baseline of `layer`.
pub fn read_baseline(path: &Path, layer: usize) -> Result<BertScore> {
    let text = read_to_string(path)?;
    let row = text
        .lines()
        .skip(1)
        .nth(layer)
        .ok_or_else(|| Error::data(path, 0, format!("no row for layer {layer}")))?;
    let values: Vec<f64> = row
        .split([',', '\t'])
        .skip(1)
        .map(|v| v.trim().parse::<f64>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::data(path, layer + 2, format!("not a number: {e}")))?;
    match values.as_slice() {
        &[precision, recall, f1] => Ok(BertScore {
            precision,
            recall,
            f1,
        }),
        _ => Err(Error::data(path, layer + 2, "expected LAYER,P,R,F")),
    }
}

impl BertScore {
    /// `(score - baseline) / (1 - baseline)` for each of the three.
    pub fn rescaled(self, baseline: &BertScore) -> Self {
        let r = |s: f64, b: f64| (s - b) / (1.0 - b);
        BertScore {
            precision: r(self.precision, baseline.precision),
            recall: r(self.recall, baseline.recall),
            f1: r(self.f1, baseline.f1),
        }
    }

    /// The means over `scores`.
    pub fn mean(scores: &[BertScore]) -> Self {
        let n = scores.len().max(1) as f64;
        let sum = |f: fn(&BertScore) -> f64| scores.iter().map(f).sum::<f64>() / n;
        BertScore {
            precision: sum(|s| s.precision),
            recall: sum(|s| s.recall),
            f1: sum(|s| s.f1),
        }
    }
}
