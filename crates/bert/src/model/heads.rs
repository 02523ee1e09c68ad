//! The task heads of `transformers`, each a model over [`BertModel`] with the same weight names:
//! masked LM (decoder tied to the word embeddings), next-sentence prediction, pretraining (both),
//! sequence classification, token classification and extractive question answering.
//!
//! Head weights absent from a checkpoint are newly initialised (and reported), as `transformers` does when
//! a pretrained encoder is loaded for fine-tuning.

use candle_core::{Tensor, D};

use crate::batch::Batch;
use crate::error::Result;
use crate::model::encoder::BertModel;
use crate::nn::{activation, Dropout, LayerNorm, Linear, Mode};
use crate::ops::bias_add::BiasAdd;
use crate::ops::fused_kernels_apply;
use crate::weights::config::BertConfig;
use crate::weights::params::Init;
use crate::weights::params::Params;

/// `cls.predictions`: transform (dense, activation, LayerNorm) then the tied decoder with its own bias.
pub struct BertLmPredictionHead {
    dense: Linear,
    layer_norm: LayerNorm,
    act: crate::weights::config::HiddenAct,
    decoder_weight: Tensor, // (V, C), the word embeddings unless untied
    bias: Tensor,           // (V)
}

impl BertLmPredictionHead {
    pub(crate) fn load(p: &Params, c: &BertConfig, word_embeddings: &Tensor) -> Result<Self> {
        let transform = p.pp("transform");
        let h = c.hidden_size;
        Ok(BertLmPredictionHead {
            dense: Linear::load_or_init(&transform.pp("dense"), h, h, c.initializer_range)?,
            layer_norm: LayerNorm::load_or_init(&transform.pp("LayerNorm"), h, c.layer_norm_eps)?,
            act: c.hidden_act,
            decoder_weight: if c.tie_word_embeddings {
                p.tie("decoder.weight");
                word_embeddings.clone()
            } else {
                let init = Init::Normal(c.initializer_range);
                p.pp("decoder")
                    .get_or_init(&[c.vocab_size, h], "weight", init)?
            },
            bias: p.get_or_init(&[c.vocab_size], "bias", Init::Zeros)?,
        })
    }

    /// (B, T, C) hidden states -> (N, V) logits at `positions`, (N) indices into the flattened
    /// (B*T) tokens: training needs no more, and the vocabulary projection is most of a small
    /// model's work.
    pub(crate) fn forward_at(
        &self,
        hidden: &Tensor,
        positions: &Tensor,
        mode: &Mode,
    ) -> Result<Tensor> {
        let (b, t, c) = hidden.dims3()?;
        let picked = hidden.reshape((b * t, c))?.index_select(positions, 0)?; // (N, C)
        self.forward(&picked, mode)
    }

    /// (B, T, C) -> (B, T, V), or (N, C) -> (N, V)
    pub(crate) fn forward(&self, hidden: &Tensor, mode: &Mode) -> Result<Tensor> {
        let x = activation(&self.dense.forward(hidden)?, self.act)?;
        let x = self.layer_norm.forward(&x, mode)?;
        // One (rows, C) x (C, V) product: a batched one would, backwards, build the decoder weight's
        // gradient once per sequence and then sum them.
        let dims = x.dims().to_vec();
        let c = dims[dims.len() - 1];
        let rows = x.elem_count() / c.max(1);
        let logits = x.reshape((rows, c))?.matmul(&self.decoder_weight.t()?)?;
        let logits = if fused_kernels_apply(&logits) {
            logits.apply_op2(&self.bias.contiguous()?, BiasAdd)?
        } else {
            logits.broadcast_add(&self.bias)?
        };
        let mut out = dims;
        let last = out.len() - 1;
        out[last] = logits.dim(1)?;
        Ok(logits.reshape(out)?)
    }
}

fn seq_relationship(p: &Params, c: &BertConfig) -> Result<Linear> {
    Linear::load_or_init(
        &p.pp("seq_relationship"),
        c.hidden_size,
        2,
        c.initializer_range,
    )
}

/// The `classifier` layer of the classification heads: hidden size to `num_labels`.
fn classifier(p: &Params, c: &BertConfig) -> Result<Linear> {
    Linear::load_or_init(
        &p.pp("classifier"),
        c.hidden_size,
        c.num_labels(),
        c.initializer_range,
    )
}

fn pooled(output: &crate::model::BertOutput) -> Result<&Tensor> {
    output
        .pooled
        .as_ref()
        .ok_or_else(|| crate::Error::InvalidInput("model was built without a pooler".into()))
}

/// `BertForMaskedLM`: token logits over the vocabulary.
pub struct BertForMaskedLM {
    pub bert: BertModel,
    predictions: BertLmPredictionHead,
}

impl BertForMaskedLM {
    pub fn load(p: &Params, c: &BertConfig) -> Result<Self> {
        let bert = BertModel::load(&p.pp("bert"), c, false)?;
        let predictions = BertLmPredictionHead::load(
            &p.pp("cls").pp("predictions"),
            c,
            &bert.embeddings().word_embeddings()?,
        )?;
        Ok(BertForMaskedLM { bert, predictions })
    }

    /// (B, T, V) logits.
    pub fn forward(&self, batch: &Batch, mode: &Mode) -> Result<Tensor> {
        let out = self.bert.forward(batch, mode)?;
        self.predictions.forward(&out.hidden_states, mode)
    }
}

/// `BertForNextSentencePrediction`: is sentence B the continuation of A? (index 0 = yes)
pub struct BertForNextSentencePrediction {
    pub bert: BertModel,
    seq_relationship: Linear,
}

impl BertForNextSentencePrediction {
    pub fn load(p: &Params, c: &BertConfig) -> Result<Self> {
        Ok(BertForNextSentencePrediction {
            bert: BertModel::load(&p.pp("bert"), c, true)?,
            seq_relationship: seq_relationship(&p.pp("cls"), c)?,
        })
    }

    /// (B, 2) logits.
    pub fn forward(&self, batch: &Batch, mode: &Mode) -> Result<Tensor> {
        let out = self.bert.forward(batch, mode)?;
        self.seq_relationship.forward(pooled(&out)?)
    }
}

/// Both pretraining heads' logits.
#[derive(Debug, Clone)]
pub struct PreTrainingOutput {
    /// (B, T, V)
    pub prediction_logits: Tensor,
    /// (B, 2)
    pub seq_relationship_logits: Tensor,
}

/// `BertForPreTraining`: masked LM and next-sentence prediction together.
pub struct BertForPreTraining {
    pub bert: BertModel,
    predictions: BertLmPredictionHead,
    seq_relationship: Linear,
}

impl BertForPreTraining {
    pub fn load(p: &Params, c: &BertConfig) -> Result<Self> {
        let bert = BertModel::load(&p.pp("bert"), c, true)?;
        let cls = p.pp("cls");
        let predictions = BertLmPredictionHead::load(
            &cls.pp("predictions"),
            c,
            &bert.embeddings().word_embeddings()?,
        )?;
        Ok(BertForPreTraining {
            seq_relationship: seq_relationship(&cls, c)?,
            bert,
            predictions,
        })
    }

    pub fn forward(&self, batch: &Batch, mode: &Mode) -> Result<PreTrainingOutput> {
        let out = self.bert.forward(batch, mode)?;
        Ok(PreTrainingOutput {
            prediction_logits: self.predictions.forward(&out.hidden_states, mode)?,
            seq_relationship_logits: self.seq_relationship.forward(pooled(&out)?)?,
        })
    }

    /// As [`BertForPreTraining::forward`], but the vocabulary logits only at `positions`, indices into
    /// the flattened (B*T) tokens: `prediction_logits` is (N, V). Training needs no more, and the
    /// vocabulary projection is most of a small model's work.
    pub fn forward_at(
        &self,
        batch: &Batch,
        positions: &Tensor,
        mode: &Mode,
    ) -> Result<PreTrainingOutput> {
        let out = self.bert.forward(batch, mode)?;
        Ok(PreTrainingOutput {
            prediction_logits: (self.predictions).forward_at(
                &out.hidden_states,
                positions,
                mode,
            )?,
            seq_relationship_logits: self.seq_relationship.forward(pooled(&out)?)?,
        })
    }
}

/// `BertForSequenceClassification`: one label (or value) per text or text pair.
pub struct BertForSequenceClassification {
    pub bert: BertModel,
    dropout: Dropout,
    classifier: Linear,
}

impl BertForSequenceClassification {
    pub fn load(p: &Params, c: &BertConfig) -> Result<Self> {
        Ok(BertForSequenceClassification {
            bert: BertModel::load(&p.pp("bert"), c, true)?,
            dropout: Dropout::new(c.classifier_dropout()),
            classifier: classifier(p, c)?,
        })
    }

    /// (B, num_labels) logits.
    pub fn forward(&self, batch: &Batch, mode: &Mode) -> Result<Tensor> {
        let out = self.bert.forward(batch, mode)?;
        let x = self.dropout.forward(pooled(&out)?, mode)?;
        self.classifier.forward(&x)
    }
}

/// `BertForTokenClassification`: one label per token (NER, slot filling).
pub struct BertForTokenClassification {
    pub bert: BertModel,
    dropout: Dropout,
    classifier: Linear,
}

impl BertForTokenClassification {
    pub fn load(p: &Params, c: &BertConfig) -> Result<Self> {
        Ok(BertForTokenClassification {
            bert: BertModel::load(&p.pp("bert"), c, false)?,
            dropout: Dropout::new(c.classifier_dropout()),
            classifier: classifier(p, c)?,
        })
    }

    /// (B, T, num_labels) logits.
    pub fn forward(&self, batch: &Batch, mode: &Mode) -> Result<Tensor> {
        let out = self.bert.forward(batch, mode)?;
        let x = self.dropout.forward(&out.hidden_states, mode)?;
        self.classifier.forward(&x)
    }
}

/// The joint model's logits: the utterance's intent and each token's slot tag.
#[derive(Debug, Clone)]
pub struct IntentSlotsOutput {
    /// (B, intents)
    pub intent_logits: Tensor,
    /// (B, T, tags)
    pub slot_logits: Tensor,
}

/// Joint intent detection and slot filling (Chen et al. 2019): the pooled `[CLS]` state's intent
/// (`intent_classifier`) and each token's slot tag (`slot_classifier`), both after dropout.
pub struct BertForIntentSlots {
    pub bert: BertModel,
    dropout: Dropout,
    intent_classifier: Linear,
    slot_classifier: Linear,
}

impl BertForIntentSlots {
    pub fn load(p: &Params, c: &BertConfig, intents: usize, tags: usize) -> Result<Self> {
        let head = |name: &str, n: usize| {
            Linear::load_or_init(&p.pp(name), c.hidden_size, n, c.initializer_range)
        };
        Ok(BertForIntentSlots {
            bert: BertModel::load(&p.pp("bert"), c, true)?,
            dropout: Dropout::new(c.classifier_dropout()),
            intent_classifier: head("intent_classifier", intents)?,
            slot_classifier: head("slot_classifier", tags)?,
        })
    }

    pub fn forward(&self, batch: &Batch, mode: &Mode) -> Result<IntentSlotsOutput> {
        let out = self.bert.forward(batch, mode)?;
        let pooled = self.dropout.forward(pooled(&out)?, mode)?;
        let tokens = self.dropout.forward(&out.hidden_states, mode)?;
        Ok(IntentSlotsOutput {
            intent_logits: self.intent_classifier.forward(&pooled)?,
            slot_logits: self.slot_classifier.forward(&tokens)?,
        })
    }
}

/// Answer-span logits: where the answer starts and ends.
#[derive(Debug, Clone)]
pub struct QuestionAnsweringOutput {
    /// (B, T)
    pub start_logits: Tensor,
    /// (B, T)
    pub end_logits: Tensor,
}

/// `BertForQuestionAnswering`: extractive QA over the context tokens.
pub struct BertForQuestionAnswering {
    pub bert: BertModel,
    qa_outputs: Linear,
}

impl BertForQuestionAnswering {
    pub fn load(p: &Params, c: &BertConfig) -> Result<Self> {
        Ok(BertForQuestionAnswering {
            bert: BertModel::load(&p.pp("bert"), c, false)?,
            qa_outputs: Linear::load_or_init(
                &p.pp("qa_outputs"),
                c.hidden_size,
                2,
                c.initializer_range,
            )?,
        })
    }

    pub fn forward(&self, batch: &Batch, mode: &Mode) -> Result<QuestionAnsweringOutput> {
        let out = self.bert.forward(batch, mode)?;
        let logits = self.qa_outputs.forward(&out.hidden_states)?; // (B, T, 2)
        Ok(QuestionAnsweringOutput {
            start_logits: logits.narrow(D::Minus1, 0, 1)?.squeeze(D::Minus1)?,
            end_logits: logits.narrow(D::Minus1, 1, 1)?.squeeze(D::Minus1)?,
        })
    }
}
