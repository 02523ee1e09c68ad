//! The decoder of a BERT2BERT encoder-decoder: `transformers`' `BertLMHeadModel` with `is_decoder` and
//! `add_cross_attention`. Each layer is BERT's, with causal self-attention (a token sees itself and
//! those before it), then cross-attention to the encoder's states (`crossattention.*`), then the
//! feed-forward block; the masked-LM head on top predicts the next token.
//!
//! Teacher forcing runs the whole target at once ([`BertLMHeadModel::forward`]). Generation runs a token
//! at a time over a [`DecoderCache`]: each layer's self-attention keys and values grow by the new token,
//! and the cross-attention keys and values are computed once from the encoder's states.
//!
//! Dimension letters: B batch, T target tokens, S source tokens, C hidden size, V vocabulary.

use candle_core::{DType, Tensor};

use crate::batch::Batch;
use crate::error::Result;
use crate::model::attention::Heads;
use crate::model::embeddings::BertEmbeddings;
use crate::model::encoder::{BertResidualOutput, FeedForward, Projections};
use crate::model::heads::BertLmPredictionHead;
use crate::nn::{Dropout, Linear, Mode};
use crate::weights::config::BertConfig;
use crate::weights::params::Params;

/// Keys and values of one attention block, split into heads: (B, H, S, D) each.
#[derive(Debug, Clone)]
pub struct KeyValues {
    keys: Tensor,
    values: Tensor,
}

impl KeyValues {
    fn select_rows(&self, rows: &Tensor) -> Result<Self> {
        Ok(KeyValues {
            keys: self.keys.index_select(rows, 0)?,
            values: self.values.index_select(rows, 0)?,
        })
    }
}

/// The encoder's output as the decoder reads it.
#[derive(Debug, Clone)]
pub struct EncoderStates {
    /// (B, S, C)
    pub hidden: Tensor,
    /// (B, 1, 1, S): 0 for source tokens, a large negative number for padding.
    pub bias: Tensor,
}

impl EncoderStates {
    /// Each sequence repeated `times` times in a row (one copy per beam).
    pub fn repeat_each(&self, times: usize) -> Result<Self> {
        if times == 1 {
            return Ok(self.clone());
        }
        let b = self.hidden.dim(0)?;
        let rows: Vec<u32> = (0..b as u32)
            .flat_map(|r| std::iter::repeat_n(r, times))
            .collect();
        let rows = Tensor::new(rows.as_slice(), self.hidden.device())?;
        Ok(EncoderStates {
            hidden: self.hidden.index_select(&rows, 0)?,
            bias: self.bias.index_select(&rows, 0)?,
        })
    }
}

/// What generation keeps between steps: per layer, the self-attention keys and values of the tokens so
/// far and the cross-attention keys and values of the source.
pub struct DecoderCache {
    layers: Vec<LayerCache>,
    encoder_bias: Tensor,
    /// Target tokens seen so far (the position of the next one).
    length: usize,
}

struct LayerCache {
    past: Option<KeyValues>,
    cross: KeyValues,
}

impl DecoderCache {
    /// Keeps, in order, the sequences at `rows` (beam search: the beams that go on, each continuing
    /// one of the current ones of the same source; so the cross-attention part, equal for them all,
    /// stays as it is).
    pub fn reorder(&mut self, rows: &[u32]) -> Result<()> {
        self.select(rows, false)
    }

    /// Keeps, in order, only the sequences at `rows`, each with its own source's cross-attention keys
    /// and values (generation drops the sequences whose outputs can no longer change).
    pub fn retain(&mut self, rows: &[u32]) -> Result<()> {
        self.select(rows, true)
    }

    fn select(&mut self, rows: &[u32], with_source: bool) -> Result<()> {
        let rows = Tensor::new(rows, self.encoder_bias.device())?;
        for layer in &mut self.layers {
            if let Some(past) = &layer.past {
                layer.past = Some(past.select_rows(&rows)?);
            }
            if with_source {
                layer.cross = layer.cross.select_rows(&rows)?;
            }
        }
        if with_source {
            self.encoder_bias = self.encoder_bias.index_select(&rows, 0)?;
        }
        Ok(())
    }
}

/// Self-attention over the target, each token attending to itself and those before it.
struct CausalSelfAttention {
    projections: Projections,
    heads: Heads,
    dropout: Dropout,
}

impl CausalSelfAttention {
    fn load(p: &Params, c: &BertConfig) -> Result<Self> {
        Ok(CausalSelfAttention {
            projections: Projections::load(p, c)?,
            heads: Heads::of(c),
            dropout: Dropout::new(c.attention_probs_dropout_prob),
        })
    }

    /// `bias` holds the causal order (and padding) for the whole target; with a `past` the new tokens
    /// attend to the cached ones and themselves, and are added to the cache.
    fn forward(
        &self,
        x: &Tensor,
        bias: Option<&Tensor>,
        past: Option<&mut Option<KeyValues>>,
        mode: &Mode,
    ) -> Result<Tensor> {
        let [q, k, v] = self.projections.each(x)?;
        let (q, mut k, mut v) = (
            self.heads.split(&q)?,
            self.heads.split(&k)?,
            self.heads.split(&v)?,
        );
        if let Some(slot) = past {
            if let Some(cached) = slot.as_ref() {
                k = Tensor::cat(&[&cached.keys, &k], 2)?;
                v = Tensor::cat(&[&cached.values, &v], 2)?;
            }
            *slot = Some(KeyValues {
                keys: k.clone(),
                values: v.clone(),
            });
        }
        self.heads.attend(&q, &k, &v, bias, &self.dropout, mode)
    }
}

/// Attention from the target to the encoder's states (`crossattention.self`).
struct CrossAttention {
    query: Linear,
    key: Linear,
    value: Linear,
    heads: Heads,
    dropout: Dropout,
}

impl CrossAttention {
    fn load(p: &Params, c: &BertConfig, new: bool) -> Result<Self> {
        let (h, std) = (c.hidden_size, c.initializer_range);
        let load = if new {
            Linear::load_or_init
        } else {
            Linear::load
        };
        Ok(CrossAttention {
            query: load(&p.pp("query"), h, h, std)?,
            key: load(&p.pp("key"), h, h, std)?,
            value: load(&p.pp("value"), h, h, std)?,
            heads: Heads::of(c),
            dropout: Dropout::new(c.attention_probs_dropout_prob),
        })
    }

    fn keys_values(&self, encoder: &Tensor) -> Result<KeyValues> {
        Ok(KeyValues {
            keys: self.heads.split(&self.key.forward(encoder)?)?,
            values: self.heads.split(&self.value.forward(encoder)?)?,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        source: &KeyValues,
        bias: &Tensor,
        mode: &Mode,
    ) -> Result<Tensor> {
        let q = self.heads.split(&self.query.forward(x)?)?;
        let (keys, values) = (&source.keys, &source.values);
        self.heads
            .attend(&q, keys, values, Some(bias), &self.dropout, mode)
    }
}

/// One decoder layer: causal self-attention, cross-attention, feed-forward, each with its residual.
struct BertDecoderLayer {
    self_attention: CausalSelfAttention,
    attention_output: BertResidualOutput,
    cross_attention: CrossAttention,
    cross_output: BertResidualOutput,
    feed_forward: FeedForward,
}

impl BertDecoderLayer {
    /// `p` is the layer's own path; `shared` the path of its self-attention and feed-forward
    /// weights (`p` itself, or the encoder's layer when the two are tied). `new_cross` initialises
    /// absent cross-attention weights (a warm start) instead of failing.
    fn load(p: &Params, shared: &Params, c: &BertConfig, new_cross: bool) -> Result<Self> {
        let (attention, cross) = (shared.pp("attention"), p.pp("crossattention"));
        let cross_output = cross.pp("output");
        Ok(BertDecoderLayer {
            self_attention: CausalSelfAttention::load(&attention.pp("self"), c)?,
            attention_output: BertResidualOutput::load(&attention.pp("output"), c, c.hidden_size)?,
            cross_attention: CrossAttention::load(&cross.pp("self"), c, new_cross)?,
            cross_output: if new_cross {
                BertResidualOutput::load_or_init(&cross_output, c, c.hidden_size)?
            } else {
                BertResidualOutput::load(&cross_output, c, c.hidden_size)?
            },
            feed_forward: FeedForward::load(shared, c)?,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        self_bias: Option<&Tensor>,
        past: Option<&mut Option<KeyValues>>,
        source: (&KeyValues, &Tensor),
        mode: &Mode,
    ) -> Result<Tensor> {
        let attended = self.self_attention.forward(x, self_bias, past, mode)?;
        let x = self.attention_output.forward(&attended, x, mode)?;
        let attended = self.cross_attention.forward(&x, source.0, source.1, mode)?;
        let x = self.cross_output.forward(&attended, &x, mode)?;
        self.feed_forward.forward(&x, mode)
    }
}

/// The decoder's BERT (`decoder.bert`): embeddings and decoder layers, no pooler.
pub struct BertDecoder {
    embeddings: BertEmbeddings,
    layers: Vec<BertDecoderLayer>,
}

impl BertDecoder {
    fn load(p: &Params, shared: &Params, c: &BertConfig, new_cross: bool) -> Result<Self> {
        let (own, theirs) = (
            p.pp("encoder").pp("layer"),
            shared.pp("encoder").pp("layer"),
        );
        let layers = (0..c.num_hidden_layers)
            .map(|i| BertDecoderLayer::load(&own.pp(i), &theirs.pp(i), c, new_cross))
            .collect::<Result<Vec<_>>>()?;
        Ok(BertDecoder {
            embeddings: BertEmbeddings::load(&shared.pp("embeddings"), c)?,
            layers,
        })
    }

    pub fn embeddings(&self) -> &BertEmbeddings {
        &self.embeddings
    }
}

/// `BertLMHeadModel`: the decoder and the head that predicts the next token.
pub struct BertLMHeadModel {
    pub bert: BertDecoder,
    predictions: BertLmPredictionHead,
}

impl BertLMHeadModel {
    /// Loads from `p` (normally `decoder`). With `shared` (the encoder's path), the embeddings,
    /// self-attention and feed-forward weights are the encoder's; `new_cross` initialises absent
    /// cross-attention weights.
    pub fn load(
        p: &Params,
        c: &BertConfig,
        shared: Option<&Params>,
        new_cross: bool,
    ) -> Result<Self> {
        let own = p.pp("bert");
        let bert = BertDecoder::load(&own, shared.unwrap_or(&own), c, new_cross)?;
        let predictions = BertLmPredictionHead::load(
            &p.pp("cls").pp("predictions"),
            c,
            &bert.embeddings.word_embeddings()?,
        )?;
        Ok(BertLMHeadModel { bert, predictions })
    }

    /// Teacher forcing: logits (B, T, V) for every position of `input_ids` (B, T), given the source.
    /// `attention_mask` (B, T), 1 for tokens and 0 for padding, is combined with the causal order.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        source: &EncoderStates,
        mode: &Mode,
    ) -> Result<Tensor> {
        super::on_worker(|| {
            let bias = causal_bias(input_ids, attention_mask)?;
            let mut x = self.embed(input_ids, 0, mode)?;
            for layer in &self.bert.layers {
                let cross = layer.cross_attention.keys_values(&source.hidden)?;
                x = layer.forward(&x, Some(&bias), None, (&cross, &source.bias), mode)?;
            }
            self.predictions.forward(&x, mode)
        })
    }

    /// A cache for generating from `source`, with the cross-attention keys and values computed.
    pub fn start(&self, source: &EncoderStates) -> Result<DecoderCache> {
        super::on_worker(|| {
            let layers = self
                .bert
                .layers
                .iter()
                .map(|layer| {
                    Ok(LayerCache {
                        past: None,
                        cross: layer.cross_attention.keys_values(&source.hidden)?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(DecoderCache {
                layers,
                encoder_bias: source.bias.clone(),
                length: 0,
            })
        })
    }

    /// One step of generation: the next-token logits (B, V) after `input_ids` (B, T), the tokens
    /// that follow those in `cache` (which then holds them too).
    pub fn step(&self, input_ids: &Tensor, cache: &mut DecoderCache) -> Result<Tensor> {
        super::on_worker(|| {
            let mode = Mode::Eval;
            let (_, t) = input_ids.dims2()?;
            let mut x = self.embed(input_ids, cache.length, &mode)?;
            // New tokens see all cached ones; among themselves, causal order.
            let bias = if t > 1 {
                Some(causal_bias_after(input_ids.device(), t, cache.length)?)
            } else {
                None
            };
            for (layer, kept) in self.bert.layers.iter().zip(&mut cache.layers) {
                let source = (&kept.cross, &cache.encoder_bias);
                x = layer.forward(&x, bias.as_ref(), Some(&mut kept.past), source, &mode)?;
            }
            cache.length += t;
            let last = x.narrow(1, t - 1, 1)?; // (B, 1, C)
            Ok(self.predictions.forward(&last, &mode)?.squeeze(1)?)
        })
    }

    fn embed(&self, input_ids: &Tensor, first_position: usize, mode: &Mode) -> Result<Tensor> {
        let batch = Batch {
            input_ids: input_ids.clone(),
            token_type_ids: input_ids.zeros_like()?,
            attention_mask: input_ids.ones_like()?.to_dtype(DType::F32)?,
        };
        self.bert
            .embeddings
            .forward_from(&batch, first_position, mode)
    }
}

/// The additive bias of causal self-attention over `input_ids` (B, T): (B, 1, T, T), 0 where token
/// `j <= i` is a token of the mask, the f32 minimum elsewhere.
fn causal_bias(input_ids: &Tensor, attention_mask: Option<&Tensor>) -> Result<Tensor> {
    let (b, t) = input_ids.dims2()?;
    let mask: Vec<f32> = match attention_mask {
        Some(mask) => mask.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?,
        None => vec![1.0; b * t],
    };
    let mut bias = vec![f32::MIN; b * t * t];
    for (row, mask) in mask.chunks(t).enumerate() {
        for i in 0..t {
            for j in (0..=i).filter(|&j| mask[j] != 0.0) {
                bias[(row * t + i) * t + j] = 0.0;
            }
        }
    }
    Ok(Tensor::from_vec(bias, (b, 1, t, t), input_ids.device())?)
}

/// The bias of `t` new tokens after `past` cached ones: (1, 1, t, past + t), each new token seeing
/// every cached token, itself and the new tokens before it.
fn causal_bias_after(device: &candle_core::Device, t: usize, past: usize) -> Result<Tensor> {
    let s = past + t;
    let mut bias = vec![f32::MIN; t * s];
    for i in 0..t {
        bias[i * s..i * s + past + i + 1].fill(0.0);
    }
    Ok(Tensor::from_vec(bias, (1, 1, t, s), device)?)
}
