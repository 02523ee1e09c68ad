//! Command-line flags, defined once; `--help` text comes from the doc comments here.

use std::path::PathBuf;

use bert::generation::{EarlyStopping, GenerationOverrides};
use bert::model::Precision;
use bert::pipelines::{Aggregation, ScoreFunction};
use bert::pooling::Pooling;
use bert::train::{AdamWConfig, EvalStrategy, TrainingOptions};
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
    /// Generate text from text with a BERT2BERT encoder-decoder (translation, dialogue replies):
    /// greedy decoding, beam search or sampling, as transformers' generate().
    Generate(GenerateArgs),
    /// Find entities (NER, slot filling) with a token-classification checkpoint.
    Ner(NerArgs),
    /// Understand user turns with a joint intent and slot model (`--task intent-slots`): JSON Lines
    /// {"text", "intent", "intent_score", "intents", "slots": [{"slot", "word", "start", "end",
    /// "score"}]}, offsets in characters.
    Nlu(NluArgs),
    /// Score generated text against references, one sentence a line: BLEU and chrF as sacreBLEU
    /// computes them, BERTScore as the bert-score package; prints one JSON object.
    Score(ScoreArgs),
    /// Answer questions from a context with an extractive question-answering checkpoint.
    Qa(QaArgs),
    /// Train a WordPiece vocabulary on text files; writes vocab.txt, tokenizer.json and
    /// tokenizer_config.json.
    Vocab(VocabArgs),
    /// Pretrain BERT with masked LM and next-sentence prediction on plain text (one sentence per
    /// line, a blank line between documents); writes a Hugging Face checkpoint directory.
    Pretrain(PretrainArgs),
    /// Fine-tune a checkpoint on labelled data (text classification: sentiment, intent, NLI; token
    /// classification: NER, slot filling; extractive question answering: SQuAD); writes the best
    /// model as a Hugging Face checkpoint directory with eval_results.json.
    Finetune(Box<FinetuneArgs>),
    /// Serve the model over HTTP: text-embeddings-inference's routes (/embed, /predict, /rerank,
    /// /tokenize, /info, /health, /metrics), OpenAI's /v1/embeddings, and /fill-mask, /ner, /qa,
    /// /generate.
    /// Stops on Ctrl-C or SIGTERM after answering the requests in flight.
    Serve(ServeArgs),
    /// Embed text and Markdown files into an on-disk index for `bert search`: files cut into
    /// passages of --chunk-tokens tokens overlapping by --overlap; --update adds, changes and removes
    /// files by content hash. An interrupted run leaves the previous index as it was.
    Index(IndexArgs),
    /// Search an index: for each query (arguments, or one per line on stdin), the passages closest in
    /// meaning, best first, as JSON Lines {"query", "rank", "score", "file", "start", "end", "text"}
    /// (start and end are byte offsets into the file).
    Search(SearchArgs),
    /// Distil a sentence encoder (`bert finetune --task distill`): the student (--model) learns the
    /// --teacher's sentence vectors by mean-squared error, from plain sentences or, with
    /// --train-target, from sentence pairs (a cross-lingual student). Writes a sentence-transformers
    /// directory.
    Distill(Box<DistillArgs>),
    /// Find the lines of two files that translate each other (bitext mining): both files embedded,
    /// nearest neighbours both ways scored by ratio margin; pairs above --threshold as JSON Lines
    /// {"source", "target", "source_line", "target_line", "score"}. --mode parallel aligns two
    /// documents known to be translations, keeping their order.
    Align(AlignArgs),
    /// Copy an index into a Qdrant collection (vectors, with the passages as payloads), for search
    /// past one machine: `bert search --qdrant URL --collection NAME --model M` then queries it.
    Export(ExportArgs),
}

impl Command {
    /// How many shards a command runs its batches in (0: one per thread; see `threads`): training and
    /// the line-by-line model commands shard, the others run each op on every thread.
    pub fn shards(&self) -> usize {
        match self {
            Command::Pretrain(args) => args.training.shards,
            Command::Finetune(args) => args.training.shards,
            Command::Distill(args) => args.training.shards,
            Command::Embed(_)
            | Command::FillMask(_)
            | Command::Classify(_)
            | Command::Ner(_)
            | Command::Nlu(_)
            | Command::Serve(_) => 0,
            _ => 1,
        }
    }
}

#[derive(Args, Debug)]
pub struct AlignArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Sentences in one language, one per line (blank lines are skipped; line numbers count them).
    pub source: PathBuf,
    /// Sentences in the other language, one per line.
    pub target: PathBuf,
    /// mine: pairs from two collections in any order (each sentence's best match both ways, kept
    /// one-to-one, best first); parallel: two documents known to be translations, aligned in order
    /// with gaps allowed.
    #[arg(long, value_enum, default_value = "mine")]
    pub mode: AlignMode,
    /// Keep pairs whose margin is above this: the pair's cosine over the mean cosine of each side to
    /// its --neighbours nearest sentences on the other side (1: no closer than the neighbourhood).
    #[arg(long, default_value_t = 1.06)]
    pub threshold: f32,
    /// Nearest neighbours that make up each sentence's neighbourhood in the margin (LASER's 4).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..))]
    pub neighbours: u64,
}

/// How `bert align` pairs sentences.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlignMode {
    /// Two collections in any order.
    Mine,
    /// Two documents that translate each other, in order.
    Parallel,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The index directory (from `bert index`).
    #[arg(long)]
    pub index: PathBuf,
    /// The Qdrant server, e.g. http://localhost:6333.
    #[arg(long)]
    pub qdrant: String,
    /// The collection (created with cosine distance if missing). Default: the index directory's name.
    #[arg(long)]
    pub collection: Option<String>,
    /// Qdrant's API key, sent as the `api-key` header.
    #[arg(long, env = "QDRANT_API_KEY", hide_env_values = true)]
    pub qdrant_api_key: Option<String>,
    /// Points per upsert request.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_size: u64,
}

#[derive(Args, Debug)]
pub struct IndexArgs {
    /// The embedding model: a local directory or a Hugging Face Hub id; default: the bundled model
    /// (or $BERT_DEFAULT_MODEL).
    #[arg(long, short = 'm')]
    pub model: Option<String>,
    /// Hub revision when --model is a Hub id.
    #[arg(long)]
    pub revision: Option<String>,
    /// The index directory to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Files (any name) and directories (walked for .txt, .text, .md, .markdown and .rst files,
    /// hidden entries skipped).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Tokens per passage, [CLS] and [SEP] included. Default: 256, or the model's maximum if less.
    #[arg(long)]
    pub chunk_tokens: Option<usize>,
    /// Tokens shared by neighbouring passages.
    #[arg(long, default_value_t = 32)]
    pub overlap: usize,
    /// Update the index in --out: unchanged files keep their passages, changed and new ones are
    /// embedded, files no longer among the inputs are removed.
    #[arg(long)]
    pub update: bool,
    /// Replace the index in --out with a new one.
    #[arg(long, conflicts_with = "update")]
    pub overwrite: bool,
    /// Passages embedded together.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_size: u64,
    /// Pooling: mean, cls, max or mean_sqrt_len (default: the checkpoint's setting, else mean).
    #[arg(long)]
    pub pooling: Option<Pooling>,
    /// Number format of the model's Linear layers: f32, bf16 or int8 (see `bert embed --help`).
    #[arg(long, default_value = "f32", value_parser = parse_dtype)]
    pub dtype: Precision,
}

#[derive(Args, Debug)]
pub struct SearchArgs {
    /// The index directory (from `bert index`).
    #[arg(long, required_unless_present = "qdrant")]
    pub index: Option<PathBuf>,
    /// Search a Qdrant collection (from `bert export`) instead of a local index; needs --model
    /// (the index's model) and --collection. Dense mode only.
    #[arg(long, requires_all = ["collection", "model"], conflicts_with = "index")]
    pub qdrant: Option<String>,
    /// The Qdrant collection.
    #[arg(long)]
    pub collection: Option<String>,
    /// Qdrant's API key, sent as the `api-key` header.
    #[arg(long, env = "QDRANT_API_KEY", hide_env_values = true)]
    pub qdrant_api_key: Option<String>,
    /// Queries; when none are given, one per line is read from stdin.
    pub queries: Vec<String>,
    /// Passages per query.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub top_k: u64,
    /// Ranking: dense (cosine of embeddings), bm25 (words, tantivy's BM25) or hybrid (both, fused by
    /// reciprocal rank; the score is then the fused score).
    #[arg(long, default_value = "dense")]
    pub mode: bert::search::Mode,
    /// The embedding model; default: the one the index was built with (a different model is refused).
    #[arg(long, short = 'm')]
    pub model: Option<String>,
    /// A cross-encoder (a sequence-classification checkpoint with one output, scoring query/passage
    /// pairs) that re-ranks the closest passages.
    #[arg(long)]
    pub rerank_model: Option<String>,
    /// Passages handed to the re-ranker (default: 4 x --top-k).
    #[arg(long)]
    pub rerank_candidates: Option<usize>,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// A local checkpoint directory or a Hugging Face Hub id; default: the bundled model (or
    /// $BERT_DEFAULT_MODEL).
    #[arg(long, short = 'm')]
    pub model: Option<String>,
    /// Hub revision when --model is a Hub id.
    #[arg(long)]
    pub revision: Option<String>,
    /// Address to listen on (0.0.0.0 for every interface).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Tasks to serve: embed, classify (/predict, /rerank), ner, qa, fill-mask, generate. Default:
    /// what the checkpoint's head does (a bare encoder: embed; a masked-LM checkpoint: embed and
    /// fill-mask; an encoder-decoder: generate).
    /// Each task loads its own copy of the weights.
    #[arg(long = "task", value_delimiter = ',')]
    pub tasks: Vec<bert_server::Task>,
    /// Longest input in tokens, [CLS] and [SEP] included. Default: the model's maximum (and
    /// sentence-transformers' max_seq_length for embeddings).
    #[arg(long)]
    pub max_input_length: Option<usize>,
    /// Embedding pooling: mean, cls, max or mean_sqrt_len (default: the checkpoint's setting), or
    /// splade on a masked-LM checkpoint: vocabulary-sized sparse vectors at /embed_sparse, and
    /// POST / answers as /embed_sparse.
    #[arg(long)]
    pub pooling: Option<bert_server::models::ServedPooling>,
    /// The prompt of config_sentence_transformers.json put before every embedding input whose
    /// request names no `prompt_name` (default: that file's default_prompt_name).
    #[arg(long, conflicts_with = "default_prompt")]
    pub default_prompt_name: Option<String>,
    /// A literal prompt put before every embedding input whose request names no `prompt_name`.
    #[arg(long)]
    pub default_prompt: Option<String>,
    /// Number format of the model's Linear layers: f32, bf16 or int8 (see `bert embed --help`).
    #[arg(long, default_value = "f32", value_parser = parse_dtype)]
    pub dtype: Precision,
    /// Requests handled at once; more are refused with 429.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_concurrent_requests: u64,
    /// Tokens in one forward pass, padding included: concurrent requests are batched up to this.
    #[arg(long, default_value_t = 16384, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_batch_tokens: u64,
    /// Inputs in one request (and QA windows of one context); more are refused with 413.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_client_batch_size: u64,
    /// Bytes in one request body; more are refused with 413.
    #[arg(long, default_value_t = 2_000_000)]
    pub payload_limit: usize,
    /// Seconds one request may take, waiting included; past it, 504.
    #[arg(long, default_value_t = 60.0)]
    pub request_timeout: f64,
    /// An index (from `bert index`) to serve at POST /search, with its own embedding model.
    #[arg(long)]
    pub index: Option<PathBuf>,
    /// Require `Authorization: Bearer <KEY>` on every route but /health.
    #[arg(long, env = "BERT_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Truncate over-long inputs when a request does not say `"truncate"` (default: refuse them
    /// with 413).
    #[arg(long)]
    pub auto_truncate: bool,
}

/// Fine-tuning tasks.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskKind {
    /// Sequence classification: a label (or labels, or a number) per text or text pair.
    Classify,
    /// Token classification (NER, slot filling): a tag per word, from CoNLL or JSON Lines.
    Ner,
    /// Extractive question answering, from SQuAD v1.1 or v2.0 JSON.
    Qa,
    /// Sequence to sequence (translation, dialogue replies) with a BERT2BERT encoder-decoder,
    /// warm-started from --model when it is a BERT checkpoint.
    Seq2seq,
    /// Joint intent detection and slot filling: an intent per utterance and a slot tag per word,
    /// from JSON Lines {"tokens", "tags", "intent"}, `word:TAG ... <=> intent` lines, or a folder
    /// with seq.in, seq.out and label.
    IntentSlots,
    /// Sentence-embedding distillation: the student (--model) learns the --teacher's vectors of
    /// --train's sentences (one a line) by mean-squared error; with --train-target, of their
    /// translations too (line for line), which makes the student cross-lingual. Writes a
    /// sentence-transformers directory.
    Distill,
}

/// `--problem-type` values.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemTypeArg {
    /// One label per example (softmax, cross-entropy).
    SingleLabel,
    /// Any number of labels per example (sigmoid, binary cross-entropy): a JSON list, or names
    /// separated by commas.
    MultiLabel,
    /// A number per example (mean squared error).
    Regression,
}

impl From<ProblemTypeArg> for bert::weights::config::ProblemType {
    fn from(p: ProblemTypeArg) -> Self {
        match p {
            ProblemTypeArg::SingleLabel => Self::SingleLabelClassification,
            ProblemTypeArg::MultiLabel => Self::MultiLabelClassification,
            ProblemTypeArg::Regression => Self::Regression,
        }
    }
}

#[derive(Args, Debug)]
pub struct FinetuneArgs {
    /// The task.
    #[arg(long, value_enum, default_value = "classify")]
    pub task: TaskKind,
    /// The checkpoint to start from: a local directory or a Hugging Face Hub id.
    #[arg(long, short = 'm')]
    pub model: String,
    /// Hub revision when --model is a Hub id.
    #[arg(long)]
    pub revision: Option<String>,
    /// Training data. classify: CSV or TSV with a header row, or JSON Lines (by extension: .csv,
    /// .tsv, .jsonl). ner: CoNLL (a token per line, the tag in the last column, a blank line between
    /// sentences) or JSON Lines {"tokens": [...], "tags": [...]}. qa: SQuAD v1.1 or v2.0 JSON.
    /// seq2seq: a table with --source-column and --target-column, or with --train-target a text file
    /// of sources, one a line. intent-slots: JSON Lines {"tokens": [...], "tags": [...], "intent":
    /// "..."}, a file of `word:TAG word:TAG ... <=> intent` lines (ATIS, SNIPS), or a folder holding
    /// seq.in, seq.out and label.
    #[arg(long)]
    pub train: PathBuf,
    /// Evaluation data, same format; scored each epoch (or every --eval-steps) and used to pick the
    /// best model. Without it, the last model is kept.
    #[arg(long)]
    pub eval: Option<PathBuf>,
    #[command(flatten)]
    pub distill: StudentArgs,
    /// seq2seq: the targets of --train, a text file line for line with it.
    #[arg(long)]
    pub train_target: Option<PathBuf>,
    /// seq2seq: the targets of --eval, a text file line for line with it.
    #[arg(long, requires = "eval")]
    pub eval_target: Option<PathBuf>,
    /// Test data, same format: once training ends, the kept model is scored on it and the metrics
    /// printed and written to OUT/test_results.json (transformers' `do_predict`).
    #[arg(long)]
    pub test: Option<PathBuf>,
    /// seq2seq: the targets of --test, a text file line for line with it.
    #[arg(long, requires = "test")]
    pub test_target: Option<PathBuf>,
    /// seq2seq: the column holding the source text.
    #[arg(long, default_value = "source")]
    pub source_column: String,
    /// seq2seq: the column holding the target text.
    #[arg(long, default_value = "target")]
    pub target_column: String,
    /// seq2seq: target tokens at most, [CLS] and [SEP] included (default 128, or the decoder's
    /// maximum); --max-length bounds the sources.
    #[arg(long)]
    pub max_target_length: Option<usize>,
    /// intent-slots: the slot loss's weight; the loss is intent cross-entropy + this x slot
    /// cross-entropy.
    #[arg(long, default_value_t = 1.0)]
    pub slot_loss_coef: f64,
    /// seq2seq: label smoothing epsilon (transformers' label_smoothing_factor).
    #[arg(long, default_value_t = 0.0)]
    pub label_smoothing_factor: f64,
    /// seq2seq: beams when evaluation generates (1: greedy).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub generation_num_beams: u64,
    /// seq2seq: tokens evaluation generates at most (default: as many as the longest training
    /// target).
    #[arg(long)]
    pub generation_max_new_tokens: Option<usize>,
    /// seq2seq warm start: the BERT checkpoint the decoder starts from (default: --model).
    #[arg(long)]
    pub decoder_model: Option<PathBuf>,
    /// seq2seq warm start: the decoder shares the encoder's weights (Rothe et al.'s BERTShare).
    #[arg(long)]
    pub tie_encoder_decoder: bool,
    /// The column holding the text.
    #[arg(long, default_value = "text")]
    pub text_column: String,
    /// The column holding the second text of a pair (NLI, paraphrase).
    #[arg(long)]
    pub text_pair_column: Option<String>,
    /// The column holding the label.
    #[arg(long, default_value = "label")]
    pub label_column: String,
    /// What the labels are.
    #[arg(long, value_enum, default_value = "single-label")]
    pub problem_type: ProblemTypeArg,
    /// Tokens per example, [CLS] and [SEP] included; longer ones are truncated (qa: cut into
    /// windows). Default: 128 (qa: 384), or the model's maximum if smaller.
    #[arg(long)]
    pub max_length: Option<usize>,
    /// qa: tokens shared by neighbouring windows of a long context.
    #[arg(long, default_value_t = 128)]
    pub doc_stride: usize,
    /// qa: the longest answer predicted, in tokens.
    #[arg(long, default_value_t = 30)]
    pub max_answer_length: usize,
    /// qa: start and end candidates per window when decoding answers.
    #[arg(long, default_value_t = 20)]
    pub n_best_size: usize,
    /// qa (SQuAD v2): predict no answer when the [CLS] score beats the best answer by more than this.
    #[arg(long, default_value_t = 0.0)]
    pub null_score_diff_threshold: f64,
    /// The evaluation metric that picks the best model: loss (lower is better), accuracy, macro_f1,
    /// micro_f1, pearson, mse (classify); f1, precision, recall, accuracy (ner); exact_match, f1
    /// (qa); bleu, chrf (seq2seq); sentence_accuracy, intent_accuracy, slot_f1 (intent-slots).
    #[arg(long, default_value = "loss")]
    pub metric_for_best: String,
    /// Stop after this many evaluations without a better --metric-for-best.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub early_stopping_patience: Option<u64>,
    #[command(flatten)]
    pub training: TrainingArgs,
}

/// The flags of `bert distill` that make and train the student (also `bert finetune --task distill`).
#[derive(Args, Debug, Clone, Default)]
pub struct StudentArgs {
    /// distill: the teacher, a sentence-embedding checkpoint (a directory or a Hub id) whose vectors
    /// the student learns.
    #[arg(long)]
    pub teacher: Option<String>,
    /// distill: start the student from every K-th encoder layer of --model (layers 0, K, 2K, ...;
    /// DistilBERT's initialisation): with --model the teacher and K 2, a student of half its depth.
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u64).range(1..))]
    pub keep_layers_every: Option<u64>,
    /// distill: cut the student's vocabulary to at most N pieces: the special tokens, every character
    /// the training sentences are made of, and the pieces they use most (their embedding rows kept).
    /// The token embeddings are most of a small model's size.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub vocab_size: Option<u64>,
    /// distill: when the student's width differs from the teacher's vectors, learn a projection to
    /// them (a sentence-transformers Dense module after pooling, saved in 2_Dense).
    #[arg(long)]
    pub projection: bool,
    /// distill: also train masked LM on this text (one sequence a line; 15% of the tokens masked as
    /// BERT pretraining masks them), so that the student is a fill-mask model too (saved as
    /// BertForMaskedLM, its head tied to the word embeddings). Each step reads as many lines, drawn
    /// at random, as examples.
    #[arg(long, value_name = "FILE")]
    pub mlm_text: Option<PathBuf>,
    /// distill: the masked-LM loss's weight: the loss is the distillation MSE + this x the masked-LM
    /// cross-entropy. Small by default, as the MSE between unit vectors is about 1e-3 and the
    /// cross-entropy 2 to 9: much larger weights let masked LM rewrite the sentence vectors.
    #[arg(long, default_value_t = 0.01, requires = "mlm_text")]
    pub mlm_weight: f64,
    /// distill: held-out lines, same format as --mlm-text, scored at each evaluation (masked once):
    /// mlm_accuracy and mlm_loss over their masked tokens.
    #[arg(long, value_name = "FILE", requires = "mlm_text")]
    pub mlm_eval: Option<PathBuf>,
}

/// `bert distill`: `bert finetune --task distill` with only the flags that apply.
#[derive(Args, Debug)]
pub struct DistillArgs {
    /// The student to start from: a checkpoint directory or a Hugging Face Hub id (with
    /// --keep-layers-every, the checkpoint whose layers it keeps, which may be the teacher).
    #[arg(long, short = 'm')]
    pub model: String,
    /// Hub revision when --model is a Hub id.
    #[arg(long)]
    pub revision: Option<String>,
    /// Sentences, one a line: the student learns the teacher's vector of each.
    #[arg(long)]
    pub train: PathBuf,
    /// Translations of --train, line for line (a cross-lingual student): the student maps a
    /// sentence and its translation to the teacher's vector of the sentence. A line that is its
    /// sentence itself (monolingual data mixed in) is read once.
    #[arg(long)]
    pub train_target: Option<PathBuf>,
    /// Held-out sentences, scored each epoch (or every --eval-steps): loss and mse_x100, and with
    /// --eval-target translation retrieval accuracy both ways; the best model is kept.
    #[arg(long)]
    pub eval: Option<PathBuf>,
    /// Translations of --eval, line for line.
    #[arg(long, requires = "eval")]
    pub eval_target: Option<PathBuf>,
    #[command(flatten)]
    pub student: StudentArgs,
    /// Tokens per sentence, [CLS] and [SEP] included; longer ones are cut. Default: 128, or the
    /// student's maximum if smaller.
    #[arg(long)]
    pub max_length: Option<usize>,
    /// The evaluation metric that picks the best model: loss or mse_x100 (lower is better),
    /// src2trg_accuracy or trg2src_accuracy (with --eval-target), mlm_accuracy (with --mlm-eval).
    #[arg(long, default_value = "loss")]
    pub metric_for_best: String,
    /// Stop after this many evaluations without a better --metric-for-best.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub early_stopping_patience: Option<u64>,
    #[command(flatten)]
    pub training: TrainingArgs,
}

/// `bert finetune`'s flags alone, to read its defaults.
#[derive(Parser)]
struct FinetuneDefaults {
    #[command(flatten)]
    args: FinetuneArgs,
}

impl From<DistillArgs> for FinetuneArgs {
    /// `bert finetune --task distill` with these flags, every other flag at its default.
    fn from(d: DistillArgs) -> Self {
        let required = ["finetune", "--model", "-", "--train", "-", "--out", "-"];
        let mut args = FinetuneDefaults::try_parse_from(required)
            .expect("finetune's defaults parse")
            .args;
        args.task = TaskKind::Distill;
        args.model = d.model;
        args.revision = d.revision;
        args.train = d.train;
        args.train_target = d.train_target;
        args.eval = d.eval;
        args.eval_target = d.eval_target;
        args.distill = d.student;
        args.max_length = d.max_length;
        args.metric_for_best = d.metric_for_best;
        args.early_stopping_patience = d.early_stopping_patience;
        args.training = d.training;
        args
    }
}

#[derive(Args, Debug)]
pub struct VocabArgs {
    /// Text files, directories or glob patterns.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Where to write the tokenizer files.
    #[arg(long)]
    pub out: PathBuf,
    /// Vocabulary size, special tokens included.
    #[arg(long, default_value_t = 30522)]
    pub vocab_size: usize,
    /// Lower-case and strip accents (an uncased model).
    #[arg(long)]
    pub lowercase: bool,
    /// Leave out pieces seen fewer times than this.
    #[arg(long, default_value_t = 2)]
    pub min_frequency: u64,
    /// Replace the tokenizer files already in --out.
    #[arg(long)]
    pub overwrite: bool,
}

#[derive(Args, Debug)]
pub struct PretrainArgs {
    /// Corpus files, directories or glob patterns: one sentence per line, a blank line between documents.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Tokenizer directory (from `bert vocab`); default: the --model directory.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Model size to train from scratch: tiny (2 layers/128 hidden), mini (4/256), small (4/512),
    /// medium (8/512) or base (12/768).
    #[arg(long, conflicts_with_all = ["config", "model"], default_value = "mini")]
    pub size: ConfigSize,
    /// A config.json to train from scratch instead of --size.
    #[arg(long, conflicts_with = "model")]
    pub config: Option<PathBuf>,
    /// A checkpoint directory to continue pretraining from.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Tokens per instance, [CLS] and [SEP] included.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(5..))]
    pub max_seq_length: u64,
    /// Probability of a shorter instance.
    #[arg(long, default_value_t = 0.1)]
    pub short_seq_prob: f64,
    /// Share of tokens to predict.
    #[arg(long, default_value_t = 0.15)]
    pub masked_lm_prob: f64,
    /// At most this many predictions per instance.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_predictions_per_seq: u64,
    /// Mask every piece of a word together.
    #[arg(long)]
    pub whole_word_masking: bool,
    /// Documents held out for evaluation (0: none).
    #[arg(long, default_value_t = 100)]
    pub eval_documents: usize,
    /// Hold out every N-th document (until --eval-documents are held out).
    #[arg(long, default_value_t = 20)]
    pub eval_stride: usize,
    /// Documents kept around the current one for random next sentences (bounds memory).
    #[arg(long, default_value_t = 1000)]
    pub window_documents: usize,
    /// Instances held for shuffling (bounds memory).
    #[arg(long, default_value_t = 10_000)]
    pub shuffle_buffer: usize,
    #[command(flatten)]
    pub training: TrainingArgs,
}

/// `--size` values.
pub type ConfigSize = bert::weights::config::ModelSize;

/// Flags every command shares.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// A local checkpoint directory, or a Hugging Face Hub id (`bert-base-uncased`, `org/name`),
    /// downloaded once into the Hugging Face cache (honours HF_HOME, HF_HUB_CACHE, HF_ENDPOINT,
    /// HF_TOKEN, HF_HUB_OFFLINE). Default for tokenize, embed, fill-mask, index, align and serve: the
    /// model bundled in the repository (models/minilm-l3-en-fr, English and French), or
    /// $BERT_DEFAULT_MODEL.
    #[arg(long, short = 'm')]
    pub model: Option<String>,
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
    /// Tokens in one forward pass, padding included: inputs are sorted by length and a batch of long
    /// ones holds fewer than --batch-size (an input longer than this runs alone).
    #[arg(long, default_value_t = 16384, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_batch_tokens: u64,
    /// Number format of the model's Linear layers: f32 (exact), bf16 (weights and activations rounded
    /// to bfloat16, f32 sums) or int8 (weights quantized per output channel, activations per token).
    /// bf16 and int8 run on the CPU's AMX tile units where it has them (Intel Xeon 4th generation and
    /// later), several times faster than f32; elsewhere they compute the same numbers at f32 speed.
    #[arg(long, default_value = "f32", value_parser = parse_dtype)]
    pub dtype: Precision,
}

/// `--dtype` values.
pub fn parse_dtype(s: &str) -> Result<Precision, String> {
    s.parse()
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
    #[command(flatten)]
    pub long_text: LongTextArgs,
}

/// What to do with texts longer than --max-length.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LongTextMode {
    /// Keep the first --max-length tokens (noted on stderr).
    Truncate,
    /// Cut the text into windows of --max-length tokens (--stride shared) and average the results.
    Chunk,
}

#[derive(Args, Debug, Clone)]
pub struct LongTextArgs {
    /// Texts longer than --max-length: truncate, or chunk into overlapping windows whose results
    /// (embeddings before normalisation, label scores) are averaged. Single texts only.
    #[arg(long, value_enum, default_value = "truncate")]
    pub long_text: LongTextMode,
    /// Tokens shared by neighbouring windows with --long-text chunk (default: a quarter window).
    #[arg(long)]
    pub stride: Option<usize>,
}

impl LongTextArgs {
    /// The library's setting for windows of `max_length` tokens.
    pub fn resolve(&self, max_length: usize) -> bert::pipelines::LongText {
        match self.long_text {
            LongTextMode::Truncate => bert::pipelines::LongText::Truncate,
            LongTextMode::Chunk => bert::pipelines::LongText::Chunk {
                stride: self.stride.unwrap_or(max_length / 4),
            },
        }
    }
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
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub input: InputArgs,
    #[command(flatten)]
    pub decoding: DecodingArgs,
}

/// How to decode; each flag left out keeps the checkpoint's generation_config.json (or
/// transformers' default).
#[derive(Args, Debug, Clone, Default)]
pub struct DecodingArgs {
    /// Beams of beam search; 1 decodes greedily (or samples with --do-sample). Default 1.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub num_beams: Option<u64>,
    /// Tokens to generate at most, the end token included. Default: up to 20 tokens in all.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_new_tokens: Option<u64>,
    /// The end token is forbidden before this many tokens.
    #[arg(long)]
    pub min_new_tokens: Option<u64>,
    /// Beam scores are divided by length ** this: above 0 favours longer outputs, below 0 shorter.
    /// Default 1.0.
    #[arg(long, allow_hyphen_values = true)]
    pub length_penalty: Option<f32>,
    /// When beam search stops: false (when the best running beam can no longer win, judged at its
    /// length), true (once --num-beams outputs are finished) or never. Default false.
    #[arg(long)]
    pub early_stopping: Option<EarlyStopping>,
    /// No n-gram of this many tokens appears twice in an output (0: no constraint).
    #[arg(long)]
    pub no_repeat_ngram_size: Option<u64>,
    /// Sample each token from the model's distribution (with --top-k, --top-p, --temperature)
    /// instead of taking the likeliest.
    #[arg(long)]
    pub do_sample: bool,
    /// Sampling: only among the K likeliest tokens (0: all). Default 50.
    #[arg(long)]
    pub top_k: Option<u64>,
    /// Sampling: only among the likeliest tokens whose probabilities add up to P. Default 1.0.
    #[arg(long)]
    pub top_p: Option<f32>,
    /// Sampling: logits are divided by T (below 1 more predictable, above 1 more varied). Default 1.0.
    #[arg(long)]
    pub temperature: Option<f32>,
    /// Seed of sampling: the same seed gives the same outputs. Default 0.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Outputs per input (at most --num-beams with beam search), listed under "sequences".
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub num_return_sequences: Option<u64>,
}

impl DecodingArgs {
    /// The flags given, as overrides of the checkpoint's settings.
    pub fn overrides(&self) -> GenerationOverrides {
        let size = |v: Option<u64>| v.map(|v| v as usize);
        GenerationOverrides {
            max_new_tokens: size(self.max_new_tokens),
            min_new_tokens: size(self.min_new_tokens),
            num_beams: size(self.num_beams),
            length_penalty: self.length_penalty,
            early_stopping: self.early_stopping,
            no_repeat_ngram_size: size(self.no_repeat_ngram_size),
            do_sample: self.do_sample.then_some(true),
            top_k: size(self.top_k),
            top_p: self.top_p,
            temperature: self.temperature,
            num_return_sequences: size(self.num_return_sequences),
            seed: self.seed,
        }
    }
}

/// `bert score --metric` values.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextMetric {
    /// Corpus BLEU: 13a tokenization, n-grams up to 4, exp smoothing (sacreBLEU's defaults).
    Bleu,
    /// Corpus chrF: character 6-grams, beta 2 (sacreBLEU's defaults).
    Chrf,
    /// BERTScore: greedy cosine matching of one layer's token states (needs --model).
    Bertscore,
}

#[derive(Args, Debug)]
pub struct ScoreArgs {
    #[arg(long, value_enum)]
    pub metric: TextMetric,
    /// Reference sentences, one a line.
    #[arg(long)]
    pub references: PathBuf,
    /// Generated sentences, one a line, line for line with --references.
    #[arg(long)]
    pub predictions: PathBuf,
    /// Add each line's score (sentence BLEU, sentence chrF, or BERTScore per pair) under "lines".
    #[arg(long)]
    pub per_line: bool,
    /// BERTScore: the BERT checkpoint whose states are compared (a directory or a Hub id).
    #[arg(long)]
    pub model: Option<String>,
    /// Hub revision of --model.
    #[arg(long)]
    pub revision: Option<String>,
    /// BERTScore: the layer whose states are compared (default: the last).
    #[arg(long)]
    pub num_layers: Option<usize>,
    /// BERTScore: weight tokens by inverse document frequency over the references.
    #[arg(long)]
    pub idf: bool,
    /// BERTScore: rescale with this baseline file (bert-score's `LAYER,P,R,F` rows).
    #[arg(long)]
    pub baseline: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct NerArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub input: InputArgs,
    /// How tokens become entities: none (one per token), simple (adjacent tokens of an entity
    /// grouped), first, average or max (the sub-tokens of a word agree by their first token, their
    /// mean scores or their most confident token, then grouped).
    #[arg(long, default_value = "none")]
    pub aggregation_strategy: Aggregation,
    /// Labels left out of the output.
    #[arg(long, value_delimiter = ',', default_value = "O")]
    pub ignore_labels: Vec<String>,
}

#[derive(Args, Debug)]
pub struct NluArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub input: InputArgs,
}

#[derive(Args, Debug)]
pub struct QaArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Questions; when none are given, one per line is read from stdin (or, with --jsonl, objects
    /// `{"question": ..., "context": ...}`).
    pub questions: Vec<String>,
    /// The context the questions are about (required unless --jsonl gives one per question).
    #[arg(long)]
    pub context: Option<String>,
    /// Read stdin lines as JSON objects `{"question": ..., "context": ...}`.
    #[arg(long)]
    pub jsonl: bool,
    /// Answers per question, best first (more than one: an `answers` list too).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub top_k: u64,
    /// The longest answer, in tokens.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_answer_len: u64,
    /// Let "no answer" (an empty answer) compete, scored by the [CLS] token.
    #[arg(long)]
    pub handle_impossible_answer: bool,
    /// Tokens per window of a long context (default 384, or the model's maximum if smaller).
    #[arg(long, default_value_t = 384)]
    pub max_seq_len: usize,
    /// Tokens shared by neighbouring windows (default: 128, or half a window if that is less).
    #[arg(long)]
    pub doc_stride: Option<usize>,
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
    #[command(flatten)]
    pub long_text: LongTextArgs,
}

/// The training loop's flags, shared by `pretrain` and `finetune`, named as transformers'
/// `TrainingArguments` (the older names still work as aliases). Where the commands' defaults differ,
/// the help says both.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Training")]
pub struct TrainingArgs {
    /// Output directory: checkpoints, metrics.jsonl, loss.png and the model.
    #[arg(long, visible_alias = "output-dir")]
    pub out: PathBuf,
    /// Replace an earlier run in --out.
    #[arg(long, visible_alias = "overwrite-output-dir")]
    pub overwrite: bool,
    /// Continue the run in --out from its newest checkpoint (same data and settings).
    #[arg(long)]
    pub resume: bool,
    /// Passes over the training data (finetune: default 3; pretrain: none, --max-steps ends the run).
    /// With --max-steps too, whichever comes first.
    #[arg(long, visible_alias = "num-train-epochs", value_parser = clap::value_parser!(u64).range(1..))]
    pub epochs: Option<u64>,
    /// Optimizer steps; the learning rate decays to zero here (pretrain: default 10000; finetune:
    /// default --epochs over the data, and --max-steps alone overrides --epochs).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_steps: Option<u64>,
    /// Examples per batch on each process (pretrain: default 32 instances; finetune: 16).
    #[arg(long, visible_alias = "per-device-train-batch-size", value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_size: Option<u64>,
    /// Batches whose gradients are summed before each optimizer step.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub gradient_accumulation_steps: u64,
    /// Peak learning rate (pretrain: default 1e-4; finetune: 5e-5).
    #[arg(long)]
    pub learning_rate: Option<f64>,
    /// Linear warm-up over this share of the steps.
    #[arg(long, default_value_t = 0.0)]
    pub warmup_ratio: f64,
    /// Linear warm-up steps; overrides --warmup-ratio (pretrain: default 1% of --max-steps).
    #[arg(long)]
    pub warmup_steps: Option<usize>,
    /// AdamW weight decay, not applied to biases and LayerNorm weights (pretrain: default 0.01;
    /// finetune: 0).
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Clip the global gradient norm to this.
    #[arg(long, default_value_t = 1.0)]
    pub max_grad_norm: f64,
    /// Evaluate every N steps, 0: at the end only (pretrain: default 500 on the held-out documents;
    /// finetune: default at the end of each epoch).
    #[arg(long, visible_alias = "eval-every")]
    pub eval_steps: Option<usize>,
    /// Write a resumable checkpoint (model, optimizer state, position) every N steps, 0: only at the
    /// end or when interrupted (pretrain: default 1000; finetune: 500).
    #[arg(long, visible_alias = "save-every")]
    pub save_steps: Option<usize>,
    /// Keep this many newest checkpoints.
    #[arg(long, default_value_t = 2)]
    pub save_total_limit: usize,
    /// Write a metrics.jsonl line every N steps.
    #[arg(long, visible_alias = "log-every", default_value_t = 10)]
    pub logging_steps: usize,
    /// Seed of everything random: initial and new head weights, example order, masks, dropout.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Cut each batch into this many shards trained at once, each on one thread (0: one per thread, at
    /// most the batch size; 1: one shard whose ops use every thread). Whole steps per thread scale
    /// better than threads inside each op. Dropout masks depend on the number of shards in all.
    #[arg(long, default_value_t = 0)]
    pub shards: usize,
    /// Mixed precision, as transformers' `--bf16`: Linear layers multiply in bf16 with f32 sums (on the
    /// CPU's AMX tile units where it has them; elsewhere the same rounding at f32 speed); weights,
    /// gradients, optimizer state, LayerNorm, softmax and losses stay f32.
    #[arg(long)]
    pub bf16: bool,
    /// Keep only each encoder layer's input during the forward pass and run the layer again in the
    /// backward pass (transformers' `gradient_checkpointing`): much less memory for activations,
    /// about one more forward pass of time per step. The gradients are the same.
    #[arg(long)]
    pub gradient_checkpointing: bool,
    /// Batch examples of similar length together, as transformers' `--group_by_length`: the
    /// shuffled examples cut into groups of 50 batches, each sorted by length. Less padding is
    /// computed; batches are less random. For distill (pretraining instances are all of one
    /// length; other tasks keep their shuffled order).
    #[arg(long)]
    pub group_by_length: bool,
}

/// What a command's training defaults to where the flags are not given.
pub struct TrainingDefaults {
    pub epochs: Option<usize>,
    pub max_steps: Option<usize>,
    pub batch_size: usize,
    pub learning_rate: f64,
    /// Warm-up as a share of the steps, when neither --warmup-steps nor --warmup-ratio is given.
    pub warmup_share: f64,
    pub weight_decay: f64,
    pub eval_strategy: EvalStrategy,
    pub save_steps: usize,
}

impl TrainingArgs {
    /// The loop's settings from the flags, `defaults` where a flag is not given.
    pub fn options(&self, defaults: TrainingDefaults, tokenizer_dir: PathBuf) -> TrainingOptions {
        let mut options = TrainingOptions::new(self.out.clone(), tokenizer_dir);
        options.max_steps = self.max_steps.map(|n| n as usize).or(defaults.max_steps);
        // --max-steps alone overrides the default epochs.
        options.epochs = match (self.epochs, self.max_steps) {
            (Some(epochs), _) => Some(epochs as usize),
            (None, Some(_)) => None,
            (None, None) => defaults.epochs,
        };
        options.batch_size = self.batch_size.map_or(defaults.batch_size, |n| n as usize);
        options.gradient_accumulation_steps = self.gradient_accumulation_steps as usize;
        options.learning_rate = self.learning_rate.unwrap_or(defaults.learning_rate);
        options.warmup_ratio = self.warmup_ratio;
        options.warmup_steps = self.warmup_steps.or_else(|| {
            let steps = options.max_steps?;
            (self.warmup_ratio == 0.0 && defaults.warmup_share > 0.0)
                .then_some((steps as f64 * defaults.warmup_share) as usize)
        });
        options.optimizer = AdamWConfig {
            weight_decay: self.weight_decay.unwrap_or(defaults.weight_decay),
            max_grad_norm: Some(self.max_grad_norm),
            ..options.optimizer
        };
        options.eval_strategy = match self.eval_steps {
            Some(0) => EvalStrategy::No,
            Some(n) => EvalStrategy::Steps(n),
            None => defaults.eval_strategy,
        };
        options.logging_steps = self.logging_steps;
        options.save_steps = self.save_steps.unwrap_or(defaults.save_steps);
        options.save_total_limit = self.save_total_limit;
        options.resume = self.resume;
        options.overwrite = self.overwrite;
        options.seed = self.seed;
        options.shards = self.shards;
        options.gradient_checkpointing = self.gradient_checkpointing;
        options.group_by_length = self.group_by_length;
        options.precision = if self.bf16 {
            Precision::Bf16
        } else {
            Precision::F32
        };
        options
    }
}
