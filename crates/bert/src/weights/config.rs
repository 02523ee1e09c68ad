//! `BertConfig`: the model's `config.json`, with every BERT key and the defaults `transformers` uses.
//!
//! Settings this toolkit does not implement (relative position embeddings, another model type) are
//! rejected when the file is read, naming the key, rather than silently giving other numbers. A decoder
//! (`is_decoder`, with `add_cross_attention` in an encoder-decoder) is a BERT config too.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{read_json, Error, Result};

/// The activation of the feed-forward block and of the masked-LM head transform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HiddenAct {
    /// The exact erf form (what Hugging Face calls `"gelu"`).
    Gelu,
    /// The tanh approximation, as in the original BERT code.
    GeluNew,
    /// The tanh approximation under PyTorch's name.
    GeluPytorchTanh,
    Relu,
    Silu,
    Swish,
}

/// How the sequence-classification head turns logits into a loss and scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemType {
    Regression,
    SingleLabelClassification,
    MultiLabelClassification,
}

/// The contents of a BERT `config.json`. Field names are the file's keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: HiddenAct,
    pub hidden_dropout_prob: f64,
    pub attention_probs_dropout_prob: f64,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub initializer_range: f64,
    pub layer_norm_eps: f64,
    pub pad_token_id: Option<usize>,
    /// Whether the masked-LM decoder shares the word-embedding matrix.
    pub tie_word_embeddings: bool,
    pub position_embedding_type: String,
    pub classifier_dropout: Option<f64>,
    pub problem_type: Option<ProblemType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_labels: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id2label: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label2id: Option<BTreeMap<String, i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub architectures: Option<Vec<String>>,
    pub model_type: String,
    pub is_decoder: bool,
    pub add_cross_attention: bool,
    /// A joint intent and slot model's intents (`BertForIntentAndSlots`), by id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intent_id2label: Option<BTreeMap<String, String>>,
    /// Its slot tags, by id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slot_id2label: Option<BTreeMap<String, String>>,
}

impl Default for BertConfig {
    /// The values of `bert-base-uncased`, which are also `transformers`' defaults.
    fn default() -> Self {
        BertConfig {
            vocab_size: 30522,
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            hidden_act: HiddenAct::Gelu,
            hidden_dropout_prob: 0.1,
            attention_probs_dropout_prob: 0.1,
            max_position_embeddings: 512,
            type_vocab_size: 2,
            initializer_range: 0.02,
            layer_norm_eps: 1e-12,
            pad_token_id: Some(0),
            tie_word_embeddings: true,
            position_embedding_type: "absolute".into(),
            classifier_dropout: None,
            problem_type: None,
            num_labels: None,
            id2label: None,
            label2id: None,
            architectures: None,
            model_type: "bert".into(),
            is_decoder: false,
            add_cross_attention: false,
            intent_id2label: None,
            slot_id2label: None,
        }
    }
}

/// Google's smaller BERTs (Turc et al., 2019) and BERT-base, for pretraining from scratch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelSize {
    /// 2 layers, hidden 128
    Tiny,
    /// 4 layers, hidden 256
    Mini,
    /// 4 layers, hidden 512
    Small,
    /// 8 layers, hidden 512
    Medium,
    /// 12 layers, hidden 768
    Base,
}

impl std::str::FromStr for ModelSize {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "tiny" => Ok(ModelSize::Tiny),
            "mini" => Ok(ModelSize::Mini),
            "small" => Ok(ModelSize::Small),
            "medium" => Ok(ModelSize::Medium),
            "base" => Ok(ModelSize::Base),
            other => Err(format!(
                "unknown size `{other}` (expected tiny, mini, small, medium or base)"
            )),
        }
    }
}

impl BertConfig {
    /// The configuration of a standard size: heads = hidden / 64, feed-forward = 4 x hidden.
    pub fn for_size(size: ModelSize, vocab_size: usize) -> Self {
        let (layers, hidden) = match size {
            ModelSize::Tiny => (2, 128),
            ModelSize::Mini => (4, 256),
            ModelSize::Small => (4, 512),
            ModelSize::Medium => (8, 512),
            ModelSize::Base => (12, 768),
        };
        BertConfig {
            vocab_size,
            hidden_size: hidden,
            num_hidden_layers: layers,
            num_attention_heads: hidden / 64,
            intermediate_size: 4 * hidden,
            ..Default::default()
        }
    }

    /// Reads and validates `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let config: BertConfig = read_json(path)?;
        config.validate(path, "")?;
        Ok(config)
    }

    /// Checks the settings; errors name the key with `section` before it (`decoder.` in an
    /// encoder-decoder's config).
    pub(crate) fn validate(&self, path: &Path, section: &str) -> Result<()> {
        let unsupported = |key: &str, message: String| {
            Err(Error::config(path, &format!("{section}{key}"), message))
        };
        if self.model_type != "bert" {
            return unsupported(
                "model_type",
                format!("`{}` is not supported (only `bert`)", self.model_type),
            );
        }
        if self.position_embedding_type != "absolute" {
            return unsupported(
                "position_embedding_type",
                format!(
                    "`{}` is not supported (only `absolute`)",
                    self.position_embedding_type
                ),
            );
        }
        if self.add_cross_attention && !self.is_decoder {
            return unsupported(
                "add_cross_attention",
                "cross-attention needs a decoder (`is_decoder: true`)".into(),
            );
        }
        for (key, value) in [
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("vocab_size", self.vocab_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
        ] {
            if value == 0 {
                return unsupported(key, "must be positive".into());
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return unsupported(
                "num_attention_heads",
                format!(
                    "hidden_size {} is not a multiple of {} heads",
                    self.hidden_size, self.num_attention_heads
                ),
            );
        }
        if self.num_labels() == 0 {
            let key = if self.num_labels.is_some() {
                "num_labels"
            } else {
                "id2label"
            };
            return unsupported(key, "a task head needs at least one label".into());
        }
        if let Some(map) = &self.id2label {
            for key in map.keys() {
                if key.parse::<usize>().is_err() {
                    return unsupported("id2label", format!("key `{key}` is not a label index"));
                }
            }
        }
        Ok(())
    }

    /// The number of labels of a task head: `num_labels`, else the size of `id2label`, else 2 (as in
    /// `transformers`).
    pub fn num_labels(&self) -> usize {
        self.num_labels
            .or_else(|| self.id2label.as_ref().map(|m| m.len()))
            .unwrap_or(2)
    }

    /// Label names in index order; `LABEL_i` where `id2label` has none, as in `transformers`.
    pub fn labels(&self) -> Vec<String> {
        (0..self.num_labels())
            .map(|i| {
                self.id2label
                    .as_ref()
                    .and_then(|m| m.get(&i.to_string()).cloned())
                    .unwrap_or_else(|| format!("LABEL_{i}"))
            })
            .collect()
    }

    /// A joint intent and slot model's intents and slot tags, in id order, or which map is missing.
    pub fn intent_and_slot_labels(
        &self,
    ) -> std::result::Result<(Vec<String>, Vec<String>), String> {
        let ordered = |map: &Option<BTreeMap<String, String>>, key: &str| {
            let map = map.as_ref().ok_or(format!("no `{key}`"))?;
            (0..map.len())
                .map(|i| map.get(&i.to_string()).cloned())
                .collect::<Option<Vec<_>>>()
                .ok_or(format!(
                    "`{key}` must number its labels 0, 1, ... without gaps"
                ))
        };
        Ok((
            ordered(&self.intent_id2label, "intent_id2label")?,
            ordered(&self.slot_id2label, "slot_id2label")?,
        ))
    }

    /// Sets a joint intent and slot model's label maps.
    pub fn set_intent_and_slot_labels(&mut self, intents: &[String], tags: &[String]) {
        let by_id = |labels: &[String]| {
            let ids = labels.iter().enumerate();
            Some(ids.map(|(i, l)| (i.to_string(), l.clone())).collect())
        };
        self.intent_id2label = by_id(intents);
        self.slot_id2label = by_id(tags);
    }

    /// The problem type of a classification head, inferred as `transformers` does when absent.
    pub fn problem_type(&self) -> ProblemType {
        self.problem_type.unwrap_or(if self.num_labels() == 1 {
            ProblemType::Regression
        } else {
            ProblemType::SingleLabelClassification
        })
    }

    /// Dropout before a classifier: `classifier_dropout`, else `hidden_dropout_prob`.
    pub fn classifier_dropout(&self) -> f64 {
        self.classifier_dropout.unwrap_or(self.hidden_dropout_prob)
    }

    pub fn head_size(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<BertConfig> {
        let dir = std::env::temp_dir().join(format!("bert-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!(
            "{:x}.json",
            json.len() * 31 + json.bytes().map(usize::from).sum::<usize>()
        ));
        std::fs::write(&path, json).unwrap();
        BertConfig::from_file(&path)
    }

    #[test]
    fn defaults_are_bert_base() {
        let c = parse("{}").unwrap();
        assert_eq!(c, BertConfig::default());
        assert_eq!(c.hidden_act, HiddenAct::Gelu);
        assert_eq!(c.num_labels(), 2);
        assert_eq!(c.labels(), ["LABEL_0", "LABEL_1"]);
    }

    #[test]
    fn reads_labels_and_activation() {
        let c = parse(
            r#"{"hidden_act": "gelu_new", "id2label": {"0": "neg", "1": "pos", "2": "mid"}}"#,
        )
        .unwrap();
        assert_eq!(c.hidden_act, HiddenAct::GeluNew);
        assert_eq!(c.labels(), ["neg", "pos", "mid"]);
        assert_eq!(c.problem_type(), ProblemType::SingleLabelClassification);
    }

    #[test]
    fn unsupported_settings_name_the_key() {
        let err = parse(r#"{"position_embedding_type": "relative_key"}"#).unwrap_err();
        assert!(
            err.to_string().contains("`position_embedding_type`"),
            "{err}"
        );
        let err = parse(r#"{"hidden_act": "mish"}"#).unwrap_err();
        assert!(err.to_string().contains("hidden_act"), "{err}");
        let err = parse(r#"{"hidden_size": 100, "num_attention_heads": 12}"#).unwrap_err();
        assert!(err.to_string().contains("num_attention_heads"), "{err}");
        let err = parse(r#"{"hidden_size": "big"}"#).unwrap_err();
        assert!(err.to_string().contains("hidden_size"), "{err}");
        let err = parse(r#"{"hidden_size": 10,"#).unwrap_err();
        assert!(err.to_string().contains("invalid JSON"), "{err}");
    }
}
