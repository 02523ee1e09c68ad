//! The pretraining data pipeline from files to batches: documents are tokenized sentence by sentence,
//! split into training and held-out documents, cut into NSP instances (reshuffled per epoch), masked with
//! a generator derived from (seed, epoch, example index), and padded into batches.

use candle_core::{Device, Tensor};

use crate::batch::Batch;
use crate::error::{Error, Result};
use crate::masking::{chosen_positions, mask_tokens, MaskingConfig, MaskingOptions};
use crate::pretraining::instances::{
    InstanceConfig, InstanceStream, PairIds, PairInstance, TokenizedDocument,
};
use crate::pretraining::Corpus;
use crate::rng::{Rng, Stream};
use crate::tokenizer::Tokenizer;

/// Which documents are held out for evaluation: every `stride`-th, at most `count` of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldOut {
    pub count: usize,
    pub stride: usize,
}

impl HoldOut {
    fn contains(&self, index: usize) -> bool {
        self.count > 0
            && index % self.stride.max(1) == self.stride.max(1) - 1
            && index / self.stride.max(1) < self.count
    }
}

/// A padded batch with its labels.
pub struct PretrainBatch {
    pub batch: Batch,
    /// (N) u32: the predicted positions, as indices into the flattened (B*T) tokens
    pub masked_positions: Tensor,
    /// (N) i64: the original tokens at those positions
    pub masked_labels: Tensor,
    /// (B)
    pub next_sentence_labels: Tensor,
    /// Real (unpadded) tokens in the batch.
    pub tokens: usize,
}

/// Everything needed to turn the corpus into batches.
pub struct PretrainData {
    pub corpus: Corpus,
    pub tokenizer: Tokenizer,
    pub instances: InstanceConfig,
    pub masking: MaskingConfig,
    pub hold_out: HoldOut,
    pub seed: u64,
    ids: PairIds,
    pad_id: u32,
}

impl PretrainData {
    /// Checks the vocabulary has BERT's special tokens and prepares masking over it.
    pub fn new(
        corpus: Corpus,
        tokenizer: Tokenizer,
        instances: InstanceConfig,
        masking: MaskingOptions,
        hold_out: HoldOut,
        seed: u64,
    ) -> Result<Self> {
        let special = tokenizer.special_tokens().clone();
        let id = |token: &str| {
            tokenizer.token_to_id(token).ok_or_else(|| {
                Error::InvalidInput(format!(
                    "the vocabulary has no `{token}` token, which pretraining needs"
                ))
            })
        };
        let (cls, sep, pad) = (id(&special.cls)?, id(&special.sep)?, id(&special.pad)?);
        let masking = MaskingConfig::new(&tokenizer, masking)?;
        Ok(PretrainData {
            corpus,
            tokenizer,
            instances,
            masking,
            hold_out,
            seed,
            ids: PairIds { cls, sep },
            pad_id: pad,
        })
    }

    /// Tokenized documents, training or held-out ones.
    fn documents(&self, held_out: bool) -> impl Iterator<Item = Result<TokenizedDocument>> + '_ {
        self.corpus
            .documents()
            .enumerate()
            .filter(move |(i, _)| self.hold_out.contains(*i) == held_out)
            .map(|(_, doc)| {
                doc?.iter()
                    .map(|s| self.tokenizer.encode_plain(s))
                    .collect()
            })
    }

    /// The training instances of an epoch, in that epoch's shuffled order.
    pub fn train_instances(
        &self,
        epoch: usize,
    ) -> Result<impl Iterator<Item = Result<PairInstance>> + '_> {
        let seed = Rng::stream(self.seed, Stream::Instances, epoch as u64).next_u64();
        InstanceStream::new(self.documents(false), self.instances, self.ids, seed)
    }

    /// Masks training example `index` of `epoch`: the same example masks differently each epoch.
    pub fn mask(&self, instance: &PairInstance, epoch: usize, index: usize) -> MaskedInstance {
        let epoch_seed = Rng::stream(self.seed, Stream::Masks, epoch as u64).next_u64();
        mask_instance(
            instance,
            &self.masking,
            &mut Rng::new(epoch_seed ^ splitmix(index as u64)),
        )
    }

    /// The fixed, masked evaluation instances from held-out documents (none when nothing is held
    /// out).
    pub fn eval_instances(&self) -> Result<Vec<MaskedInstance>> {
        if self.hold_out.count == 0 {
            return Ok(Vec::new());
        }
        let seed = Rng::stream(self.seed, Stream::EvalInstances, 0).next_u64();
        let stream = InstanceStream::new(self.documents(true), self.instances, self.ids, seed).map_err(|e| {
            Error::InvalidInput(format!(
                "held-out documents (every {}th, up to {}): {e}; lower --eval-stride, or --eval-documents 0 for no evaluation",
                self.hold_out.stride, self.hold_out.count
            ))
        })?;
        stream
            .enumerate()
            .map(|(i, inst)| {
                let mut rng = Rng::stream(self.seed, Stream::EvalMasks, i as u64);
                inst.map(|inst| mask_instance(&inst, &self.masking, &mut rng))
            })
            .collect()
    }

    /// Pads masked instances into a batch.
    pub fn collate(&self, examples: &[MaskedInstance], device: &Device) -> Result<PretrainBatch> {
        let rows: Vec<(&[u32], &[u32])> = examples
            .iter()
            .map(|e| (e.input_ids.as_slice(), e.segment_ids.as_slice()))
            .collect();
        let batch = Batch::from_ids(&rows, self.pad_id, device)?;
        let t = batch.input_ids.dims2()?.1;
        let (positions, targets) =
            chosen_positions(examples.iter().map(|e| e.mlm_labels.as_slice()), t);
        let nsp: Vec<i64> = examples.iter().map(|e| e.next_sentence_label).collect();
        let n = positions.len();
        Ok(PretrainBatch {
            masked_positions: Tensor::from_vec(positions, n, device)?,
            masked_labels: Tensor::from_vec(targets, n, device)?,
            next_sentence_labels: Tensor::from_vec(nsp, examples.len(), device)?,
            tokens: examples.iter().map(|e| e.input_ids.len()).sum(),
            batch,
        })
    }
}

/// Mixes an index into a seed (SplitMix64's finaliser).
fn splitmix(x: u64) -> u64 {
    Rng::new(x).next_u64()
}

/// An instance ready for the model.
#[derive(Debug, Clone, PartialEq)]
pub struct MaskedInstance {
    pub input_ids: Vec<u32>,
    pub segment_ids: Vec<u32>,
    /// The original id where a token was chosen, [`crate::loss::IGNORE_INDEX`] elsewhere.
    pub mlm_labels: Vec<i64>,
    /// 1 when B is a random segment, 0 when it is the continuation (as `transformers` labels NSP).
    pub next_sentence_label: i64,
}

/// Chooses and replaces tokens of `instance` ([`mask_tokens`]), keeping its segments and NSP label.
pub fn mask_instance(
    instance: &PairInstance,
    config: &MaskingConfig,
    rng: &mut Rng,
) -> MaskedInstance {
    let masked = mask_tokens(&instance.tokens, config, rng);
    MaskedInstance {
        input_ids: masked.input_ids,
        segment_ids: instance.segment_ids.clone(),
        mlm_labels: masked.labels,
        next_sentence_label: i64::from(instance.is_random_next),
    }
}
