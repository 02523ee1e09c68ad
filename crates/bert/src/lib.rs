//! BERT in Rust: load Hugging Face checkpoints, tokenize as the fast tokenizer does, and run the encoder
//! and every task head with the numbers `transformers` gives.
//!
//! The data path runs one way: text -> [`Tokenizer`] -> [`Batch`] -> [`model`] -> task output.
//!
//! The library is layered, bottom to top, each layer a folder that imports only from those below it:
//! [`kernels`] (gemm, AMX tiles, vector math; std and rayon only) -> [`files`] (safetensors read,
//! mapped and written) -> [`ops`] (candle custom ops with backward passes) -> [`cache`] (aligned copies,
//! converted layers) -> [`weights`] (config, checkpoints, Hub, parameter store, saving) -> [`nn`]
//! (Linear, LayerNorm, Dropout, Mode, Precision) -> [`model`] (embeddings, encoder, heads) -> the
//! tasks: [`pipelines`], [`train`] with [`pretraining`] and [`finetune`], [`search`].
//!
//! - [`weights::config`]: `config.json` with `transformers`' defaults; [`weights::checkpoint`] and
//!   [`weights::params`]: weights from safetensors (single or sharded) or `pytorch_model.bin`, legacy
//!   names included; [`weights::hub`]: Hub ids downloaded into the standard cache.
//! - [`tokenizer`]: `tokenizer.json` or `vocab.txt`, truncation strategies, character offsets.
//! - [`model`]: the encoder and the heads (`BertForMaskedLM`, `BertForNextSentencePrediction`,
//!   `BertForPreTraining`, `BertForSequenceClassification`, `BertForTokenClassification`,
//!   `BertForQuestionAnswering`), for inference ([`model::Mode::Eval`]) and training
//!   ([`model::Mode::Train`], dropout on, every op differentiable); [`loss`]: their losses.
//! - [`pooling`] and [`pipelines`]: sentence embeddings, fill-mask, text classification, token
//!   classification (NER), extractive question answering, with `transformers`' post-processing.
//! - Training: [`vocab`] (WordPiece) and [`pretraining`] (masked LM + next-sentence prediction from raw
//!   text); [`finetune`] (classification, NER, SQuAD-style QA) with [`metrics`] (scikit-learn, seqeval,
//!   SQuAD); both tasks of the one training loop in [`train`] (AdamW, schedule, accumulation, shards and
//!   MPI, checkpoints and exact resume, evaluation, early stopping).
//!
//! # Example: load, tokenize, run, read the output
//!
//! ```
//! use bert::model::{BertForSequenceClassification, Mode};
//! use bert::weights::pretrained::Pretrained;
//! use bert::{Batch, Tokenizer};
//! use candle_core::Device;
//!
//! # fn main() -> bert::Result<()> {
//! // A checkpoint directory; `bert::weights::hub::resolve_model("org/name", None)` gives one for a Hub id.
//! let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny-classify"));
//! let tokenizer = Tokenizer::from_dir(dir)?.with_truncation(64, bert::Truncation::LongestFirst)?;
//! let classifier = Pretrained::load(dir, &Device::Cpu, BertForSequenceClassification::load)?;
//!
//! let encodings = vec![tokenizer.encode("a good movie")?, tokenizer.encode_pair("is it good", "no")?];
//! let batch = Batch::from_encodings(&encodings, tokenizer.pad_id(), &Device::Cpu)?;
//! let logits = classifier.model.forward(&batch, &Mode::Eval)?; // (B, num_labels)
//!
//! let labels = classifier.config.labels(); // from id2label
//! for row in logits.to_vec2::<f32>()? {
//!     let best = (0..row.len()).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
//!     println!("{}", labels[best]);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! The [`pipelines`] do the same in one call each, e.g. sentence embeddings with the checkpoint's
//! sentence-transformers pooling:
//!
//! ```
//! use bert::pipelines::{EmbedOptions, Embedder};
//!
//! # fn main() -> bert::Result<()> {
//! let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny-base"));
//! let embedder = Embedder::load(dir, &EmbedOptions::default())?;
//! let vectors = embedder.embed_texts(&["the sea", "a good movie"])?;
//! assert_eq!(vectors[0].len(), 32);
//! # Ok(())
//! # }
//! ```

// The layers, bottom to top; a module imports only from its own layer or those below
// (`tests/integration/layers.rs` checks this from the `use` lines).
pub mod batch;
pub mod bitext;
pub mod cache;
pub mod error;
pub mod files;
pub mod finetune;
pub mod generation;
pub mod kernels;
pub mod loss;
pub mod masking;
pub mod metrics;
pub mod model;
pub mod nn;
pub mod ops;
pub mod pipelines;
pub mod plot;
pub mod pooling;
pub mod pretraining;
pub mod rng;
pub mod search;
pub mod tokenizer;
pub mod train;
pub mod vocab;
pub mod weights;

pub use batch::Batch;
pub use error::{Error, Result};
pub use tokenizer::{Encoding, Tokenizer, Truncation, TruncationSide};
pub use weights::config::BertConfig;
