//! Loading a model from a checkpoint directory in one call: config, weights, the head you ask for, and
//! the report of newly initialised and unused weights. A BERT's `config.json` is a [`BertConfig`]; an
//! encoder-decoder's an [`EncoderDecoderConfig`].

use std::path::Path;

use candle_core::Device;

use crate::error::Result;
use crate::kernels::Precision;
use crate::weights::checkpoint::Checkpoint;
use crate::weights::config::BertConfig;
use crate::weights::encoder_decoder_config::EncoderDecoderConfig;
use crate::weights::params::{LoadReport, ParamStore, Params};

/// A `config.json` a model is built from.
pub trait ModelConfig: Sized {
    /// Reads and validates the file.
    fn from_file(path: &Path) -> Result<Self>;
}

impl ModelConfig for BertConfig {
    fn from_file(path: &Path) -> Result<Self> {
        BertConfig::from_file(path)
    }
}

impl ModelConfig for EncoderDecoderConfig {
    fn from_file(path: &Path) -> Result<Self> {
        EncoderDecoderConfig::from_file(path)
    }
}

/// A model with the config it was built from and what loading it reported.
pub struct Pretrained<M, C = BertConfig> {
    pub config: C,
    pub model: M,
    pub report: LoadReport,
}

impl<M, C: ModelConfig> Pretrained<M, C> {
    /// Loads `dir/config.json` and the weights, and builds a model with `build`, for example
    /// `BertForMaskedLM::load`. Weights are read lazily from the memory-mapped files.
    pub fn load(
        dir: &Path,
        device: &Device,
        build: impl FnOnce(&Params, &C) -> Result<M>,
    ) -> Result<Self> {
        Self::load_as(dir, device, Precision::F32, build)
    }

    /// As [`Pretrained::load`], with the Linear layers in `precision` (bf16 or int8 for inference).
    pub fn load_as(
        dir: &Path,
        device: &Device,
        precision: Precision,
        build: impl FnOnce(&Params, &C) -> Result<M>,
    ) -> Result<Self> {
        let config = C::from_file(&dir.join("config.json"))?;
        let checkpoint = if precision == Precision::F32 && device.is_cpu() {
            Checkpoint::open_for_f32_inference(dir)?
        } else {
            Checkpoint::open(dir)?
        };
        let store = ParamStore::new(checkpoint, device, false, 0).with_precision(precision);
        let model = build(&store.root(), &config)?;
        Ok(Pretrained {
            config,
            model,
            report: store.report(),
        })
    }
}
