//! Pretraining data, the way the BERT paper made it: a streamed corpus of documents ([`corpus`]),
//! sentence-pair instances for next-sentence prediction ([`instances`]), and masked-LM masking drawn
//! anew each epoch ([`masking`]).

pub mod corpus;
pub mod data;
pub mod instances;
pub mod masking;
pub mod trainer;

pub use corpus::Corpus;
pub use instances::{InstanceConfig, InstanceStream, PairIds, PairInstance};
pub use masking::{mask_instance, MaskedInstance, MaskingConfig};
