//! BERT in Rust: load Hugging Face checkpoints, tokenize as the fast tokenizer does, and run the encoder
//! and every task head with the numbers `transformers` gives.
//!
//! The data path is one way: text -> [`Tokenizer`] -> [`Batch`] -> [`model`] -> task output.
pub mod batch;
pub mod checkpoint;
pub mod config;
pub mod error;
pub mod hub;
pub mod loss;
pub mod model;
pub mod params;
pub mod pipelines;
pub mod pooling;
pub mod pretrained;
pub mod rng;
pub mod tokenizer;

pub use batch::Batch;
pub use config::BertConfig;
pub use error::{Error, Result};
pub use tokenizer::{Encoding, Tokenizer, Truncation};
