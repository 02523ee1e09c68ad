//! One module per subcommand, each with a `run(args)` that builds what the flags ask for from the
//! library and writes the results: JSON Lines on stdout, progress and warnings on stderr.

pub mod align;
pub mod classify;
pub mod embed;
pub mod export;
pub mod fill_mask;
pub mod finetune;
pub mod generate;
pub mod index;
pub mod ner;
pub mod nlu;
pub mod pretrain;
pub mod qa;
pub mod score;
pub mod search;
pub mod serve;
pub mod tokenize;
pub mod vocab;
