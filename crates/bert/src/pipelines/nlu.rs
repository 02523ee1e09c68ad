//! Understanding a user's turn with a joint intent and slot model (`BertForIntentAndSlots`): the
//! intent with its probability (and every intent's), and the slots as character spans of the text,
//! grouped from the word tags as the NER pipeline groups entities.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::{BertForIntentSlots, Mode};
use crate::pipelines::ner::{argmax, Aggregator};
use crate::pipelines::{softmax, Aggregation, Pipeline, PipelineOptions};
use crate::tokenizer::Encoding;

/// One text understood.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Understanding {
    /// The most likely intent and its probability.
    pub intent: String,
    pub intent_score: f32,
    /// Every intent's probability.
    pub intents: BTreeMap<String, f32>,
    pub slots: Vec<Slot>,
}

/// A slot value: its type, its words and where they are in the text (character offsets).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Slot {
    pub slot: String,
    pub word: String,
    pub start: usize,
    pub end: usize,
    /// The mean probability of its words' tags.
    pub score: f32,
}

/// Finds intents and slots in texts.
pub struct IntentSlotParser {
    pipeline: Pipeline<BertForIntentSlots>,
    intents: Vec<String>,
    tags: Vec<String>,
}

impl IntentSlotParser {
    pub fn load(dir: &Path, options: &PipelineOptions) -> Result<Self> {
        let config_path = dir.join("config.json");
        let labels = |c: &crate::weights::config::BertConfig| {
            (c.intent_and_slot_labels()).map_err(|e| {
                Error::checkpoint(
                    &config_path,
                    format!("{e}: not a joint intent and slot model"),
                )
            })
        };
        let pipeline = Pipeline::load(dir, options, None, |p, c| {
            let (intents, tags) = labels(c)?;
            BertForIntentSlots::load(p, c, intents.len(), tags.len())
        })?;
        let (intents, tags) = labels(&pipeline.config)?;
        Ok(IntentSlotParser {
            pipeline,
            intents,
            tags,
        })
    }

    pub fn pipeline(&self) -> &Pipeline<BertForIntentSlots> {
        &self.pipeline
    }

    pub fn encode(&self, text: &str) -> Result<Encoding> {
        self.pipeline.encode(text)
    }

    /// The intent and slots of each text (`encodings[i]` must be `texts[i]` encoded); a word's tag is
    /// its first sub-token's, as in training.
    pub fn understand(&self, texts: &[&str], encodings: &[Encoding]) -> Result<Vec<Understanding>> {
        if encodings.is_empty() {
            return Ok(Vec::new());
        }
        let batch = self.pipeline.batch(encodings)?;
        let output = self.pipeline.model.forward(&batch, &Mode::Eval)?;
        let intent_logits: Vec<Vec<f32>> = output.intent_logits.to_vec2()?;
        let slot_logits: Vec<Vec<Vec<f32>>> = output.slot_logits.to_vec3()?;
        let aggregator = Aggregator {
            labels: &self.tags,
            tokenizer: &self.pipeline.tokenizer,
        };
        let outside = ["O".to_string()];
        let per_text = texts
            .iter()
            .zip(encodings)
            .zip(intent_logits.iter().zip(&slot_logits));
        Ok(per_text
            .map(|((text, encoding), (intent_logits, slot_rows))| {
                let entities =
                    aggregator.entities(text, encoding, slot_rows, Aggregation::First, &outside);
                let slots = entities
                    .into_iter()
                    .map(|e| Slot {
                        slot: e.entity_group.unwrap_or_default(),
                        word: e.word,
                        start: e.start,
                        end: e.end,
                        score: e.score,
                    })
                    .collect();
                self.understanding(intent_logits, slots)
            })
            .collect())
    }

    fn understanding(&self, intent_logits: &[f32], slots: Vec<Slot>) -> Understanding {
        let probabilities = softmax(intent_logits);
        let best = argmax(&probabilities);
        Understanding {
            intent: self.intents[best].clone(),
            intent_score: probabilities[best],
            intents: self.intents.iter().cloned().zip(probabilities).collect(),
            slots,
        }
    }
}
