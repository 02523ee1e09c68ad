//! Command-line flags, defined once; `--help` text comes from the doc comments here.

use bert::pipelines::ScoreFunction;
use bert::pooling::Pooling;
use bert::Truncation;
use clap::{Args, Parser, Subcommand};

/// Run BERT models from the Hugging Face world: tokenize, embed, fill masks, classify.
///
/// Inputs come as arguments, or one per line on stdin. Results go to stdout as JSON Lines, one object per
/// input, in input order; a bad input line gives `{"line": N, "error": "..."}` in its place, the rest
/// proceed, and the exit code is 1. Fatal errors exit with 2.
#[derive(Parser, Debug)]
#[command(name = "bert", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Tokenize texts: tokens, ids, token types and character offsets.
    Tokenize(TokenizeArgs),
    /// Sentence embeddings (pooling and normalisation default to the checkpoint's sentence-transformers
    /// settings, else mean pooling without normalisation).
    Embed(EmbedArgs),
    /// Predict the tokens hidden behind [MASK].
    FillMask(FillMaskArgs),
    /// Classify texts or text pairs with a sequence-classification checkpoint.
    Classify(ClassifyArgs),
}

/// Flags every command shares.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// A local checkpoint directory, or a Hugging Face Hub id (`bert-base-uncased`, `org/name`),
    /// downloaded once into the Hugging Face cache (honours HF_HOME, HF_HUB_CACHE, HF_ENDPOINT,
    /// HF_TOKEN, HF_HUB_OFFLINE).
    #[arg(long, short = 'm')]
    pub model: String,
    /// Hub revision (branch, tag or commit) when --model is a Hub id.
    #[arg(long)]
    pub revision: Option<String>,
    /// Maximum tokens per input, [CLS] and [SEP] included; longer inputs are truncated (noted once on
    /// stderr). Default: the model's maximum (and sentence-transformers' max_seq_length for `embed`).
    #[arg(long)]
    pub max_length: Option<usize>,
    /// How a text pair is truncated: longest_first, only_first or only_second.
    #[arg(long, default_value = "longest_first")]
    pub truncation: Truncation,
    /// Inputs run through the model together; larger is faster up to memory limits.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_size: u64,
}

/// Where inputs come from.
#[derive(Args, Debug, Clone)]
pub struct InputArgs {
    /// Texts to process; when none are given, one text per line is read from stdin.
    pub texts: Vec<String>,
    /// Read stdin lines as JSON objects `{"text": ..., "text_pair": ...}` (`text_pair` optional) instead
    /// of plain text, for text pairs and texts with newlines.
    #[arg(long)]
    pub jsonl: bool,
}

#[derive(Args, Debug)]
pub struct TokenizeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub input: InputArgs,
}

#[derive(Args, Debug)]
pub struct EmbedArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub input: InputArgs,
    /// Pooling of token states: mean, cls, max or mean_sqrt_len.
    #[arg(long)]
    pub pooling: Option<Pooling>,
    /// L2-normalise embeddings (default: as the checkpoint's sentence-transformers modules say).
    #[arg(long, overrides_with = "no_normalize")]
    pub normalize: bool,
    /// Do not L2-normalise, even if the checkpoint says to.
    #[arg(long)]
    pub no_normalize: bool,
}

#[derive(Args, Debug)]
pub struct FillMaskArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub input: InputArgs,
    /// Predictions per [MASK] token.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    pub top_k: u64,
}

#[derive(Args, Debug)]
pub struct ClassifyArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub input: InputArgs,
    /// Labels listed in `scores`, best first (default: all).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub top_k: Option<u64>,
    /// Turn logits into scores with softmax, sigmoid or none (default: sigmoid for multi-label or
    /// single-output heads, softmax otherwise, as transformers does).
    #[arg(long)]
    pub function_to_apply: Option<ScoreFunction>,
}
