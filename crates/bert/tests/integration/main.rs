//! The library's integration tests, one module per area, in one test binary: each binary links the
//! whole library and its dependencies, so one binary instead of sixteen saves most of the tests' link
//! time. `hub.rs` stays a binary of its own: it changes the process's environment (`HF_*`).

mod common;

mod bad_input;
mod distill;
mod encoder_decoder;
mod finetune;
mod gradient_parity;
mod intent_slots;
mod layers;
mod long_text;
mod mapped_weights;
mod minilm;
mod parity;
mod pretraining;
mod qdrant;
mod question_answering;
mod reduced_precision;
mod search;
mod seq2seq;
mod serving_outputs;
mod text_metrics;
mod token_classification;
mod tokenizer;
mod train_ready;
