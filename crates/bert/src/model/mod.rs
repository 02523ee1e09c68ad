//! The BERT network: embeddings ([`embeddings`]), encoder blocks ([`encoder`]), task heads ([`heads`]),
//! and for generation a decoder with cross-attention ([`decoder`]) and the encoder-decoder over both
//! ([`encoder_decoder`]), built from the layers of [`crate::nn`] and the attention arithmetic of
//! [`attention`]. Written once for inference and training:
//! [`Mode`] switches dropout and differentiable ops.

pub mod attention;
pub mod decoder;
pub mod embeddings;
pub mod encoder;
pub mod encoder_decoder;
pub mod heads;

pub use crate::kernels::on_worker;
pub use crate::nn::{Mode, Precision};
pub use decoder::{BertLMHeadModel, DecoderCache, EncoderStates};
pub use embeddings::BertEmbeddings;
pub use encoder::{BertModel, BertOutput, BertPooler};
pub use encoder_decoder::EncoderDecoderModel;
pub use heads::{
    BertForIntentSlots, BertForMaskedLM, BertForNextSentencePrediction, BertForPreTraining,
    BertForQuestionAnswering, BertForSequenceClassification, BertForTokenClassification,
    IntentSlotsOutput, PreTrainingOutput, QuestionAnsweringOutput,
};
