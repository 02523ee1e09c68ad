//! Weights on disk and how a model gets them: `config.json` ([`config`], and an encoder-decoder's
//! [`encoder_decoder_config`]), checkpoints in every layout
//! `transformers` writes ([`checkpoint`]), Hub downloads ([`hub`]), the store that hands weights to
//! the model by name ([`params`]), the choice of how each Linear layer is held ([`linear_weights`]),
//! loading a checkpoint directory in one call ([`pretrained`]) and saving one ([`save`]).

pub mod checkpoint;
pub mod config;
pub mod encoder_decoder_config;
pub mod hub;
pub mod linear_weights;
pub mod params;
pub mod pretrained;
pub mod save;

pub use config::BertConfig;
pub use pretrained::Pretrained;
