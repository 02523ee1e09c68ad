//! The BERT network: embeddings ([`embeddings`]), encoder blocks ([`encoder`]) and task heads
//! ([`heads`]), built from the layers of [`crate::nn`]. Written once for inference and training:
//! [`Mode`] switches dropout and differentiable ops.

pub mod embeddings;
pub mod encoder;
pub mod heads;

pub use crate::kernels::on_worker;
pub use crate::nn::{Mode, Precision};
pub use embeddings::BertEmbeddings;
pub use encoder::{BertModel, BertOutput, BertPooler};
pub use heads::{
    BertForMaskedLM, BertForNextSentencePrediction, BertForPreTraining, BertForQuestionAnswering,
    BertForSequenceClassification, BertForTokenClassification, PreTrainingOutput,
    QuestionAnsweringOutput,
};
