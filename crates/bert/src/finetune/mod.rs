//! Fine-tuning a pretrained checkpoint on labelled data: data files as tables ([`table`]), the tasks
//! ([`classification`], [`ner`], [`qa`]), each a [`FinetuneTask`] ([`trainer`]) run on the one
//! training loop ([`crate::train::train`]).

pub mod classification;
pub mod ner;
pub mod qa;
pub mod squad;
pub mod table;
pub mod trainer;

use crate::nn::Precision;
use std::path::{Path, PathBuf};

use candle_core::Device;

pub use classification::{ClassificationTask, Columns};
pub use ner::TokenClassificationTask;
pub use qa::{QuestionAnsweringTask, SpanOptions};
pub use table::Table;
pub use trainer::FinetuneTask;

use crate::error::{Error, Result};
use crate::model::{
    BertForQuestionAnswering, BertForSequenceClassification, BertForTokenClassification,
};
use crate::tokenizer::{Tokenizer, Truncation};
use crate::weights::checkpoint::Checkpoint;
use crate::weights::config::{BertConfig, ProblemType};
use crate::weights::params::ParamStore;

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
pub struct Prepared<T> {
    pub config: BertConfig,
    pub store: ParamStore,
    pub task: T,
    /// Weights the checkpoint lacked, newly initialised (the task head, usually).
    pub newly_initialized: Vec<String>,
    /// What the data needed cut or left out, one sentence each (truncated examples, skipped answers):
    /// nothing is dropped without a count.
    pub notes: Vec<String>,
}

impl<T: FinetuneTask + 'static> Prepared<T> {
    /// The same, with the task behind a pointer (to pick the task at run time).
    pub fn boxed(self) -> Prepared<Box<dyn FinetuneTask>> {
        Prepared {
            config: self.config,
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
