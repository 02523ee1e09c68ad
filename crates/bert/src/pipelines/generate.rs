//! Text generation with a BERT2BERT encoder-decoder (translation, dialogue replies): sources are
//! tokenized, encoded in one padded batch, decoded ([`crate::generation`]), and the tokens turned back
//! into text as `transformers`' text2text-generation pipeline does (`skip_special_tokens`).

use std::path::Path;

use candle_core::Device;

use crate::error::{Error, Result};
use crate::generation::{generate, GenerationConfig};
use crate::model::EncoderDecoderModel;
use crate::pipelines::{load_tokenizer, PipelineOptions};
use crate::tokenizer::{Encoding, Tokenizer};
use crate::weights::encoder_decoder_config::{is_encoder_decoder, EncoderDecoderConfig};
use crate::weights::params::LoadReport;
use crate::weights::pretrained::Pretrained;

/// One output for one source.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GeneratedText {
    pub generated_text: String,
    /// The generated token ids, without the start and end tokens.
    #[serde(skip)]
    pub token_ids: Vec<u32>,
    /// Beam search's length-normalised log-probability.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f32>,
}

/// Generates text from text.
pub struct Generator {
    pub tokenizer: Tokenizer,
    pub config: EncoderDecoderConfig,
    pub model: EncoderDecoderModel,
    pub report: LoadReport,
    /// Source tokens at most; longer sources are truncated.
    pub max_length: usize,
    /// The checkpoint's decoding settings (`generation_config.json`), the starting point of a call's.
    pub generation: GenerationConfig,
    device: Device,
}

impl Generator {
    /// Loads an encoder-decoder checkpoint; a BERT checkpoint without a decoder is an error saying so.
    pub fn load(dir: &Path, options: &PipelineOptions) -> Result<Self> {
        let config_path = dir.join("config.json");
        if !is_encoder_decoder(&config_path)? {
            return Err(Error::config(
                &config_path,
                "model_type",
                "not an encoder-decoder: generation needs a BERT2BERT checkpoint (`bert finetune --task seq2seq` makes one)",
            ));
        }
        let device = Device::Cpu;
        let (tokenizer, max_length) = load_tokenizer(dir, options, None)?;
        let pretrained: Pretrained<_, EncoderDecoderConfig> =
            Pretrained::load_as(dir, &device, options.precision, EncoderDecoderModel::load)?;
        let vocab = tokenizer.vocab_size();
        for (side, config) in [
            ("encoder", &pretrained.config.encoder),
            ("decoder", &pretrained.config.decoder),
        ] {
            if vocab > config.vocab_size {
                return Err(Error::Tokenizer {
                    path: dir.to_path_buf(),
                    message: format!(
                        "the tokenizer has {vocab} tokens but the {side}'s vocab_size is {}",
                        config.vocab_size
                    ),
                });
            }
        }
        let mut generation = GenerationConfig::for_model(dir, &pretrained.config)?;
        // The decoder cannot embed more positions than it has.
        let positions = pretrained.config.decoder.max_position_embeddings;
        generation.max_length = generation.max_length.min(positions);
        Ok(Generator {
            tokenizer,
            config: pretrained.config,
            model: pretrained.model,
            report: pretrained.report,
            max_length,
            generation,
            device,
        })
    }

    /// Tokenizes one source; an empty one is an error.
    pub fn encode(&self, text: &str) -> Result<Encoding> {
        if text.trim().is_empty() {
            return Err(Error::InvalidInput("the source text is empty".into()));
        }
        self.tokenizer.encode(text)
    }

    /// `config.num_return_sequences` outputs for each encoding, decoded together.
    pub fn generate(
        &self,
        encodings: &[Encoding],
        config: &GenerationConfig,
    ) -> Result<Vec<Vec<GeneratedText>>> {
        if encodings.is_empty() {
            return Ok(Vec::new());
        }
        let positions = self.config.decoder.max_position_embeddings;
        if config.total_length() > positions {
            return Err(Error::InvalidInput(format!(
                "max_new_tokens {} exceeds the decoder's {} positions",
                config.total_length() - 1,
                positions - 1
            )));
        }
        let batch = crate::Batch::from_encodings(encodings, self.tokenizer.pad_id(), &self.device)?;
        generate(&self.model, &batch, config)?
            .into_iter()
            .map(|outputs| outputs.into_iter().map(|g| self.text(g)).collect())
            .collect()
    }

    /// Generates from texts with the checkpoint's settings.
    pub fn generate_texts(&self, texts: &[&str]) -> Result<Vec<String>> {
        let encodings = texts
            .iter()
            .map(|t| self.encode(t))
            .collect::<Result<Vec<_>>>()?;
        let outputs = self.generate(&encodings, &self.generation)?;
        Ok(outputs
            .into_iter()
            .map(|mut o| o.remove(0).generated_text)
            .collect())
    }

    fn text(&self, generated: crate::generation::Generated) -> Result<GeneratedText> {
        Ok(GeneratedText {
            generated_text: self.tokenizer.decode(&generated.tokens, true)?,
            token_ids: generated.tokens,
            score: generated.score,
        })
    }
}
