//! Fine-tuning a pretrained checkpoint on labelled data: data files as tables ([`table`]), the tasks
//! ([`classification`], [`ner`], [`qa`], and sequence-to-sequence generation with a warm-started
//! BERT2BERT encoder-decoder, [`seq2seq`]), each a [`FinetuneTask`] ([`trainer`]) run on the one
//! training loop ([`crate::train::train`]).

pub mod classification;
pub mod distill;
pub mod intent_slots;
pub mod masked_lm;
pub mod ner;
pub mod qa;
pub mod seq2seq;
pub mod squad;
pub mod student;
pub mod table;
pub mod trainer;

use crate::nn::Precision;
use std::path::{Path, PathBuf};

use candle_core::Device;

pub use classification::{ClassificationTask, Columns};
pub use intent_slots::IntentSlotsTask;
pub use ner::TokenClassificationTask;
pub use qa::{QuestionAnsweringTask, SpanOptions};
pub use seq2seq::{PairColumns, PairFile, Seq2SeqTask};
pub use table::Table;
pub use trainer::FinetuneTask;

use crate::error::{Error, Result};
use crate::generation::GenerationConfig;
use crate::model::{
    BertForIntentSlots, BertForQuestionAnswering, BertForSequenceClassification,
    BertForTokenClassification, EncoderDecoderModel,
};
use crate::tokenizer::{Tokenizer, Truncation};
use crate::weights::checkpoint::Checkpoint;
use crate::weights::config::{BertConfig, ProblemType};
use crate::weights::encoder_decoder_config::{is_encoder_decoder, EncoderDecoderConfig};
use crate::weights::params::ParamStore;
use crate::weights::save::SavedConfig;

/// What a classification fine-tune reads.
#[derive(Debug, Clone)]
pub struct ClassificationData {
    pub train: PathBuf,
    pub eval: Option<PathBuf>,
    pub columns: Columns,
    pub problem: ProblemType,
    /// Tokens per example, special tokens included (longer ones are truncated, longest first);
    /// default [`DEFAULT_MAX_LENGTH`] or the model's maximum if smaller.
    pub max_length: Option<usize>,
}

/// A model ready to fine-tune: its config (with the task's labels), its trainable weights, the task.
pub struct Prepared<T, C = BertConfig> {
    pub config: C,
    pub store: ParamStore,
    pub task: T,
    /// Weights the checkpoint lacked, newly initialised (the task head, usually).
    pub newly_initialized: Vec<String>,
    /// What the data needed cut or left out, one sentence each (truncated examples, skipped answers):
    /// nothing is dropped without a count.
    pub notes: Vec<String>,
}

impl<T: FinetuneTask + 'static, C: SavedConfig + 'static> Prepared<T, C> {
    /// The same, with the task and config behind pointers (to pick the task at run time).
    pub fn boxed(self) -> Prepared<Box<dyn FinetuneTask>, Box<dyn SavedConfig>> {
        Prepared {
            config: Box::new(self.config),
            store: self.store,
            task: Box::new(self.task),
            newly_initialized: self.newly_initialized,
            notes: self.notes,
        }
    }
}

/// A note on examples cut to `max_length` tokens, if any were.
fn truncation_note(
    what: &str,
    truncated: usize,
    total: usize,
    consequence: &str,
) -> Option<String> {
    (truncated > 0).then(|| {
        format!("{truncated} of {total} {what} are longer than --max-length and were truncated{consequence}")
    })
}

/// How fine-tuning sets up the weights: the seed of newly initialised head weights, and the precision
/// of the products (bf16: mixed precision, f32 weights). A seed alone means f32.
#[derive(Debug, Clone, Copy, Default)]
pub struct WeightSetup {
    pub seed: u64,
    pub precision: Precision,
}

impl From<u64> for WeightSetup {
    fn from(seed: u64) -> Self {
        WeightSetup {
            seed,
            precision: Precision::F32,
        }
    }
}

/// The trainable weights of `model_dir` built into a model with `build` (head weights the checkpoint
/// lacks newly initialised from the setup's seed), and the names of those new weights.
fn trainable<M>(
    model_dir: &Path,
    config: &BertConfig,
    setup: WeightSetup,
    build: impl FnOnce(&crate::weights::params::Params, &BertConfig) -> Result<M>,
) -> Result<(ParamStore, M, Vec<String>)> {
    let store = ParamStore::new(Checkpoint::open(model_dir)?, &Device::Cpu, true, setup.seed)
        .with_precision(setup.precision);
    let model = build(&store.root(), config)?;
    let newly_initialized = store.report().newly_initialized;
    Ok((store, model, newly_initialized))
}

/// Tokens per example when not given (`transformers`' examples use 128).
pub const DEFAULT_MAX_LENGTH: usize = 128;

/// The model's tokenizer, truncating at `max_length` (which must fit the model).
fn task_tokenizer(
    model_dir: &Path,
    config: &BertConfig,
    max_length: Option<usize>,
) -> Result<Tokenizer> {
    let max_length = checked_max_length(config, max_length, DEFAULT_MAX_LENGTH)?;
    Tokenizer::from_dir(model_dir)?.with_truncation(max_length, Truncation::LongestFirst)
}

/// `max_length`, or `default` capped by the model's positions; it must fit the model.
fn checked_max_length(
    config: &BertConfig,
    max_length: Option<usize>,
    default: usize,
) -> Result<usize> {
    let max_length = max_length.unwrap_or(default.min(config.max_position_embeddings));
    if max_length > config.max_position_embeddings || max_length < 2 {
        return Err(Error::InvalidInput(format!(
            "--max-length {max_length} must be between 2 and the model's {} positions",
            config.max_position_embeddings
        )));
    }
    Ok(max_length)
}

/// Reads the data, sets the labels in the config, and loads the model from `model_dir` with a
/// sequence-classification head (newly initialised from `seed` where the checkpoint has none).
pub fn prepare_classification(
    model_dir: &Path,
    data: &ClassificationData,
    setup: impl Into<WeightSetup>,
) -> Result<Prepared<ClassificationTask>> {
    let mut config = BertConfig::from_file(&model_dir.join("config.json"))?;
    let tokenizer = task_tokenizer(model_dir, &config, data.max_length)?;
    let (train, eval, labels) = classification::read_tables(
        &data.train,
        data.eval.as_deref(),
        &data.columns,
        data.problem,
    )?;
    if data.problem == ProblemType::SingleLabelClassification && labels.len() < 2 {
        return Err(Error::data(
            &data.train,
            0,
            format!(
                "single-label classification needs at least two labels; `{}` holds only {:?}",
                data.columns.label, labels
            ),
        ));
    }
    let load = |table: &Table| {
        classification::load_set(table, &data.columns, &labels, data.problem, &tokenizer)
    };
    let train_set = load(&train)?;
    let eval_set = eval.as_ref().map(load).transpose()?;
    let cut = |set: &classification::ClassificationSet| {
        set.encodings.iter().filter(|e| e.truncated).count()
    };
    let mut notes: Vec<String> = Vec::new();
    notes.extend(truncation_note(
        "training examples",
        cut(&train_set),
        train_set.encodings.len(),
        "",
    ));
    if let Some(set) = &eval_set {
        notes.extend(truncation_note(
            "evaluation examples",
            cut(set),
            set.encodings.len(),
            "",
        ));
    }
    classification::apply_labels(&mut config, &labels, data.problem);
    let (store, model, newly_initialized) = trainable(
        model_dir,
        &config,
        setup.into(),
        BertForSequenceClassification::load,
    )?;
    Ok(Prepared {
        config,
        store,
        task: ClassificationTask {
            model,
            problem: data.problem,
            labels,
            train: train_set,
            eval: eval_set,
            pad_id: tokenizer.pad_id(),
        },
        newly_initialized,
        notes,
    })
}

/// What a token-classification fine-tune reads.
#[derive(Debug, Clone)]
pub struct TaggingData {
    pub train: PathBuf,
    pub eval: Option<PathBuf>,
    /// As for [`ClassificationData::max_length`].
    pub max_length: Option<usize>,
}

/// Reads the tagged sentences, sets the tags as the config's labels, and loads the model from
/// `model_dir` with a token-classification head.
pub fn prepare_tagging(
    model_dir: &Path,
    data: &TaggingData,
    setup: impl Into<WeightSetup>,
) -> Result<Prepared<TokenClassificationTask>> {
    let mut config = BertConfig::from_file(&model_dir.join("config.json"))?;
    let tokenizer = task_tokenizer(model_dir, &config, data.max_length)?;
    let (train, eval) = ner::read_files(&data.train, data.eval.as_ref())?;
    let tags = ner::tag_set(&train);
    let train = ner::load_tagged(&data.train, train, &tags, &tokenizer)?;
    let eval = match (eval, &data.eval) {
        (Some(sentences), Some(path)) => {
            Some(ner::load_tagged(path, sentences, &tags, &tokenizer)?)
        }
        _ => None,
    };
    let consequence = ": their last words are neither trained on nor scored";
    let mut notes: Vec<String> = Vec::new();
    notes.extend(truncation_note(
        "training sentences",
        train.truncated,
        train.encodings.len(),
        consequence,
    ));
    if let Some(set) = &eval {
        notes.extend(truncation_note(
            "evaluation sentences",
            set.truncated,
            set.encodings.len(),
            consequence,
        ));
    }
    classification::apply_labels(&mut config, &tags, ProblemType::SingleLabelClassification);
    config.problem_type = None;
    let (store, model, newly_initialized) = trainable(
        model_dir,
        &config,
        setup.into(),
        BertForTokenClassification::load,
    )?;
    Ok(Prepared {
        config,
        store,
        task: TokenClassificationTask {
            model,
            tags,
            train,
            eval,
            pad_id: tokenizer.pad_id(),
        },
        newly_initialized,
        notes,
    })
}

/// What a joint intent and slot fine-tune reads.
#[derive(Debug, Clone)]
pub struct IntentSlotsData {
    /// JSON Lines, `word:TAG ... <=> intent` lines, or a `seq.in`/`seq.out`/`label` folder.
    pub train: PathBuf,
    pub eval: Option<PathBuf>,
    /// As for [`ClassificationData::max_length`].
    pub max_length: Option<usize>,
    /// The slot loss's weight against the intent loss's (1.0).
    pub slot_loss_coef: f64,
}

/// Reads the utterances, sets their intents and tags as the config's label maps, and loads the
/// model from `model_dir` with the joint heads.
pub fn prepare_intent_slots(
    model_dir: &Path,
    data: &IntentSlotsData,
    setup: impl Into<WeightSetup>,
) -> Result<Prepared<IntentSlotsTask>> {
    let mut config = BertConfig::from_file(&model_dir.join("config.json"))?;
    let tokenizer = task_tokenizer(model_dir, &config, data.max_length)?;
    let train = intent_slots::read_utterances(&data.train)?;
    let eval = data
        .eval
        .as_ref()
        .map(|path| intent_slots::read_utterances(path))
        .transpose()?;
    let (intents, tags) = intent_slots::label_sets(&train);
    let load = |path: &Path, utterances| {
        intent_slots::load_set(path, utterances, &intents, &tags, &tokenizer)
    };
    let train = load(&data.train, train)?;
    let eval = match (eval, &data.eval) {
        (Some(utterances), Some(path)) => Some(load(path, utterances)?),
        _ => None,
    };
    let mut notes: Vec<String> = Vec::new();
    let consequence = ": their last words are neither trained on nor scored";
    notes.extend(truncation_note(
        "training utterances",
        train.truncated,
        train.encodings.len(),
        consequence,
    ));
    if let Some(set) = &eval {
        let total = set.encodings.len();
        notes.extend(truncation_note(
            "evaluation utterances",
            set.truncated,
            total,
            consequence,
        ));
        if set.unseen_intents + set.unseen_tags > 0 {
            notes.push(format!(
                "{} evaluation utterances have an intent and {} words a slot tag that the training data \
                 lacks: they count as wrong",
                set.unseen_intents, set.unseen_tags
            ));
        }
    }
    config.set_intent_and_slot_labels(&intents, &tags);
    let (store, model, newly_initialized) = trainable(model_dir, &config, setup.into(), |p, c| {
        BertForIntentSlots::load(p, c, intents.len(), tags.len())
    })?;
    Ok(Prepared {
        config,
        store,
        task: IntentSlotsTask {
            model,
            intents,
            tags,
            train,
            eval,
            pad_id: tokenizer.pad_id(),
            slot_loss_coef: data.slot_loss_coef,
        },
        newly_initialized,
        notes,
    })
}

/// What a question-answering fine-tune reads.
#[derive(Debug, Clone)]
pub struct QaData {
    /// SQuAD v1.1 or v2.0 JSON.
    pub train: PathBuf,
    pub eval: Option<PathBuf>,
    /// Tokens per window (default 384, or the model's maximum if smaller).
    pub max_length: Option<usize>,
    /// Tokens shared by neighbouring windows of a long context.
    pub doc_stride: usize,
    pub spans: SpanOptions,
}

/// Windows per question when not given (`run_qa.py`'s defaults).
pub const DEFAULT_QA_MAX_LENGTH: usize = 384;
pub const DEFAULT_DOC_STRIDE: usize = 128;

/// What reading SQuAD files left out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QaSkipped {
    /// Answers whose text was not at their `answer_start` (training and evaluation files).
    pub misplaced_answers: usize,
    /// Training questions left without a usable answer (not trained on).
    pub training_questions: usize,
}

/// Reads SQuAD files, cuts them into labelled windows, and loads the model from `model_dir` with a
/// question-answering head; says what it had to leave out.
pub fn prepare_qa(
    model_dir: &Path,
    data: &QaData,
    setup: impl Into<WeightSetup>,
) -> Result<(Prepared<QuestionAnsweringTask>, QaSkipped)> {
    let config = BertConfig::from_file(&model_dir.join("config.json"))?;
    let max_length = checked_max_length(&config, data.max_length, DEFAULT_QA_MAX_LENGTH)?;
    if data.doc_stride + 8 >= max_length {
        return Err(Error::InvalidInput(format!(
            "--doc-stride {} leaves no room for new context in windows of {max_length} tokens",
            data.doc_stride
        )));
    }
    let tokenizer = Tokenizer::from_dir(model_dir)?.with_windows(max_length, data.doc_stride)?;
    let train = squad::read_squad(&data.train)?;
    let questions = train.examples.len();
    let answerable: Vec<squad::QaExample> = train
        .examples
        .into_iter()
        .filter(|e| e.is_impossible || !e.answers.is_empty())
        .collect();
    let mut skipped = QaSkipped {
        misplaced_answers: train.misplaced_answers,
        training_questions: questions - answerable.len(),
    };
    let train_features = qa::features(&answerable, &tokenizer)?;
    let eval = match &data.eval {
        Some(path) => {
            let set = squad::read_squad(path)?;
            skipped.misplaced_answers += set.misplaced_answers;
            let features = qa::features(&set.examples, &tokenizer)?;
            Some((set, features))
        }
        None => None,
    };
    let (store, model, newly_initialized) = trainable(
        model_dir,
        &config,
        setup.into(),
        BertForQuestionAnswering::load,
    )?;
    let mut notes = Vec::new();
    if skipped.misplaced_answers > 0 {
        notes.push(format!(
            "skipped {} answers whose text is not at their answer_start; {} training questions were \
             left without an answer and are not trained on",
            skipped.misplaced_answers, skipped.training_questions
        ));
    }
    let prepared = Prepared {
        config,
        store,
        task: QuestionAnsweringTask {
            model,
            train: train_features,
            eval,
            spans: data.spans,
            pad_id: tokenizer.pad_id(),
        },
        newly_initialized,
        notes,
    };
    Ok((prepared, skipped))
}

/// What a sequence-to-sequence fine-tune reads and how it evaluates.
#[derive(Debug, Clone)]
pub struct Seq2SeqData {
    pub train: PairFile,
    pub eval: Option<PairFile>,
    pub columns: PairColumns,
    /// Source tokens at most (default 128, or the encoder's maximum if smaller).
    pub max_source_length: Option<usize>,
    /// Target tokens at most, `[CLS]` and `[SEP]` included (default 128, or the decoder's maximum).
    pub max_target_length: Option<usize>,
    /// Label smoothing's epsilon (0: none).
    pub label_smoothing: f64,
    /// Beams of evaluation's generation (1: greedy).
    pub generation_num_beams: usize,
    /// Tokens evaluation generates at most (default: as many as the longest training target has).
    pub generation_max_new_tokens: Option<usize>,
    /// Warm start: the BERT checkpoint the decoder starts from (default: the encoder's).
    pub decoder_model: Option<PathBuf>,
    /// Warm start: the decoder shares the encoder's weights (BERTShare).
    pub tie_encoder_decoder: bool,
}

/// Reads the pairs and loads the encoder-decoder to train: an encoder-decoder checkpoint as it is, or
/// one warm-started from BERT checkpoints (`model_dir` for the encoder, `decoder_model` or the same for
/// the decoder), its cross-attention newly initialised.
pub fn prepare_seq2seq(
    model_dir: &Path,
    data: &Seq2SeqData,
    setup: impl Into<WeightSetup>,
) -> Result<Prepared<Seq2SeqTask, EncoderDecoderConfig>> {
    let setup = setup.into();
    let config_path = model_dir.join("config.json");
    let tokenizer = Tokenizer::from_dir(model_dir)?;
    let (config, checkpoint, warm) = if is_encoder_decoder(&config_path)? {
        let config = EncoderDecoderConfig::from_file(&config_path)?;
        (config, Checkpoint::open(model_dir)?, false)
    } else {
        let decoder_dir = data.decoder_model.as_deref().unwrap_or(model_dir);
        let config =
            warm_start_config(model_dir, decoder_dir, &tokenizer, data.tie_encoder_decoder)?;
        let checkpoint =
            Checkpoint::warm_start(Checkpoint::open(model_dir)?, Checkpoint::open(decoder_dir)?);
        (config, checkpoint, true)
    };
    let source_length =
        checked_max_length(&config.encoder, data.max_source_length, DEFAULT_MAX_LENGTH)?;
    let target_length =
        checked_max_length(&config.decoder, data.max_target_length, DEFAULT_MAX_LENGTH)?;
    let sources = tokenizer
        .clone()
        .with_truncation(source_length, Truncation::LongestFirst)?;
    let targets = tokenizer
        .clone()
        .with_truncation(target_length, Truncation::LongestFirst)?;
    let train = seq2seq::PairSet::new(
        &seq2seq::read_pairs(&data.train, &data.columns)?,
        &sources,
        &targets,
    )?;
    let eval = match &data.eval {
        Some(file) => Some(seq2seq::PairSet::new(
            &seq2seq::read_pairs(file, &data.columns)?,
            &sources,
            &targets,
        )?),
        None => None,
    };
    let mut notes = Vec::new();
    for (what, set) in [("training", Some(&train)), ("evaluation", eval.as_ref())] {
        let Some(set) = set else { continue };
        notes.extend(truncation_note(
            &format!("{what} sources"),
            set.truncated_sources,
            set.len(),
            "",
        ));
        notes.extend(truncation_note(
            &format!("{what} targets"),
            set.truncated_targets,
            set.len(),
            "",
        ));
    }
    let store =
        ParamStore::new(checkpoint, &Device::Cpu, true, setup.seed).with_precision(setup.precision);
    let model = if warm {
        EncoderDecoderModel::warm_start(&store.root(), &config)?
    } else {
        EncoderDecoderModel::load(&store.root(), &config)?
    };
    let newly_initialized = store.report().newly_initialized;
    let ids = seq2seq::SpecialIds {
        start: config.decoder_start_token_id.unwrap_or(tokenizer.pad_id()),
        pad: config.pad_token_id.unwrap_or(tokenizer.pad_id()),
    };
    let longest = train.labels.iter().map(Vec::len).max().unwrap_or(1);
    let generation = GenerationConfig {
        num_beams: data.generation_num_beams,
        max_new_tokens: Some(data.generation_max_new_tokens.unwrap_or(longest)),
        decoder_start_token_id: Some(ids.start),
        pad_token_id: Some(ids.pad),
        eos_token_id: config.eos_token_id.into_iter().collect(),
        ..GenerationConfig::default()
    };
    generation.validate()?;
    Ok(Prepared {
        config,
        store,
        task: Seq2SeqTask {
            model,
            tokenizer,
            train,
            eval,
            ids,
            label_smoothing: data.label_smoothing,
            generation,
        },
        newly_initialized,
        notes,
    })
}

/// The encoder-decoder config of a warm start from BERT checkpoints: `[CLS]` starts, `[PAD]` pads,
/// `[SEP]` ends (Rothe et al.); one tokenizer serves both sides, so their vocabularies must agree.
fn warm_start_config(
    encoder_dir: &Path,
    decoder_dir: &Path,
    tokenizer: &Tokenizer,
    tie: bool,
) -> Result<EncoderDecoderConfig> {
    let encoder = BertConfig::from_file(&encoder_dir.join("config.json"))?;
    let decoder = BertConfig::from_file(&decoder_dir.join("config.json"))?;
    if encoder.vocab_size != decoder.vocab_size {
        return Err(Error::config(
            decoder_dir.join("config.json"),
            "vocab_size",
            format!(
                "{} differs from the encoder's {}: one tokenizer must serve both",
                decoder.vocab_size, encoder.vocab_size
            ),
        ));
    }
    let special = tokenizer.special_tokens();
    let id = |token: &str| {
        tokenizer
            .token_to_id(token)
            .ok_or_else(|| Error::Tokenizer {
                path: encoder_dir.to_path_buf(),
                message: format!("no `{token}` token, which a warm-started decoder needs"),
            })
    };
    let ids = [id(&special.cls)?, id(&special.pad)?, id(&special.sep)?];
    let config = EncoderDecoderConfig::warm_start(encoder, decoder, ids, tie);
    config.validate(&encoder_dir.join("config.json"))?;
    Ok(config)
}
