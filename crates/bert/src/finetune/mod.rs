//! Fine-tuning a pretrained checkpoint on labelled data: data files as tables ([`table`]), the tasks
//! ([`classification`]), and the one training loop they share ([`trainer`]).

pub mod classification;
pub mod table;
pub mod trainer;

use std::path::{Path, PathBuf};

use candle_core::Device;

pub use classification::{ClassificationTask, Columns};
pub use table::Table;
pub use trainer::{finetune, FinetuneEvent, FinetuneOptions, FinetuneOutcome, FinetuneTask};

use crate::checkpoint::Checkpoint;
use crate::config::{BertConfig, ProblemType};
use crate::error::{Error, Result};
use crate::model::BertForSequenceClassification;
use crate::params::ParamStore;
use crate::tokenizer::{Tokenizer, Truncation};

/// What a classification fine-tune reads.
#[derive(Debug, Clone)]
pub struct ClassificationData {
    pub train: PathBuf,
    pub eval: Option<PathBuf>,
    pub columns: Columns,
    pub problem: ProblemType,
    /// Tokens per example, special tokens included (longer ones are truncated, longest first).
    pub max_length: usize,
}

/// A model ready to fine-tune: its config (with the task's labels), its trainable weights, the task.
pub struct Prepared<T> {
    pub config: BertConfig,
    pub store: ParamStore,
    pub task: T,
    /// Weights the checkpoint lacked, newly initialised (the task head, usually).
    pub newly_initialized: Vec<String>,
}

/// The model's tokenizer, truncating at `max_length` (which must fit the model).
fn task_tokenizer(model_dir: &Path, config: &BertConfig, max_length: usize) -> Result<Tokenizer> {
    if max_length > config.max_position_embeddings || max_length < 2 {
        return Err(Error::InvalidInput(format!(
            "--max-length {max_length} must be between 2 and the model's {} positions",
            config.max_position_embeddings
        )));
    }
    Tokenizer::from_dir(model_dir)?.with_truncation(max_length, Truncation::LongestFirst)
}

/// Reads the data, sets the labels in the config, and loads the model from `model_dir` with a
/// sequence-classification head (newly initialised from `seed` where the checkpoint has none).
pub fn prepare_classification(
    model_dir: &Path,
    data: &ClassificationData,
    seed: u64,
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
    classification::apply_labels(&mut config, &labels, data.problem);
    let store = ParamStore::new(Checkpoint::open(model_dir)?, &Device::Cpu, true, seed);
    let model = BertForSequenceClassification::load(&store.root(), &config)?;
    let newly_initialized = store.report().newly_initialized;
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
    })
}
