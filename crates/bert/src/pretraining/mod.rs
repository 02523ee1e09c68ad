//! Pretraining data, the way the BERT paper made it: a streamed corpus of documents ([`corpus`]),
//! sentence-pair instances for next-sentence prediction ([`instances`]), masked anew each epoch
//! ([`data`], with [`crate::masking`]).

pub mod corpus;
pub mod data;
pub mod instances;
pub mod trainer;

pub use corpus::Corpus;
pub use data::{mask_instance, MaskedInstance};
pub use instances::{InstanceConfig, InstanceStream, PairIds, PairInstance};
