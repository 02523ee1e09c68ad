//! The BERT network: encoder blocks ([`encoder`]), task heads ([`heads`]) and the ops they share
//! ([`ops`]). Written once for inference and training: [`Mode`] switches dropout and differentiable ops.

pub mod amx;
pub mod attention;
mod buffer;
mod embedding;
pub mod encoder;
pub mod gemm;
pub mod heads;
mod kernels;
pub mod mapped_linear;
pub mod number_formats;
pub mod ops;
pub mod quantized;
mod tile_attention;
pub mod tile_gemm;
pub mod vector_math;
mod worker;

pub use encoder::{BertEmbeddings, BertModel, BertOutput, BertPooler};
pub use heads::{
    BertForMaskedLM, BertForNextSentencePrediction, BertForPreTraining, BertForQuestionAnswering,
    BertForSequenceClassification, BertForTokenClassification, PreTrainingOutput,
    QuestionAnsweringOutput,
};
pub use ops::Mode;
pub use quantized::Precision;
pub use worker::on_worker;
