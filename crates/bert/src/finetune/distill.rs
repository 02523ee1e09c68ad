//! Sentence-embedding distillation as a task on the one loop (Reimers and Gurevych, "Making
//! Monolingual Sentence Embeddings Multilingual using Knowledge Distillation", 2020): a student
//! learns the teacher's sentence vectors by mean-squared error. From plain sentences the student
//! learns to embed as the teacher does (a smaller or faster encoder); from sentence pairs it learns
//! to map a sentence and its translation to the teacher's vector of the source (a cross-lingual
//! encoder). The teacher's vectors are computed once, before training.
//!
//! Evaluation: the mean-squared error on held-out sentences (times 100, as sentence-transformers'
//! `MSEEvaluator` reports it) and, for pairs, translation retrieval accuracy both ways (the share of
//! sources whose nearest target by cosine is their own translation, and back: its
//! `TranslationEvaluator`).
//!
//! With masked-LM text ([`MaskedLmText`]) the student also learns to fill in masked words, so that
//! one checkpoint serves both jobs (saved as `BertForMaskedLM`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde_json::{Map, Value};

use crate::batch::Batch;
use crate::bitext::neighbours::nearest;
use crate::bitext::sentences;
use crate::error::{Error, Result};
use crate::files::safetensors_write::save_safetensors;
use crate::finetune::masked_lm::{masked_lm_metrics, MaskedLm, MaskedLmText};
use crate::finetune::seq2seq::{read_pairs, PairColumns, PairFile};
use crate::finetune::trainer::FinetuneTask;
use crate::finetune::{
    checked_max_length, task_tokenizer, trainable, Prepared, WeightSetup, DEFAULT_MAX_LENGTH,
};
use crate::model::{BertModel, Mode};
use crate::nn::linear::Linear;
use crate::pipelines::{EmbedOptions, Embedder};
use crate::pooling::dense::write_projection;
use crate::pooling::{normalize, normalize_rows, pool, EmbeddingConfig, Pooling, PROJECTION_DIR};
use crate::tokenizer::{Encoding, Tokenizer};
use crate::train::{EvalBatch, TrainLoss};
use crate::weights::checkpoint::Checkpoint;
use crate::weights::config::BertConfig;

/// Sentences to distil on: one a line, or with `target` a second file of their translations, line
/// for line.
#[derive(Debug, Clone)]
pub struct SentenceFile {
    pub sentences: PathBuf,
    pub target: Option<PathBuf>,
}

/// What a distillation run reads.
#[derive(Debug, Clone)]
pub struct DistillData {
    /// The teacher: a sentence-embedding checkpoint (its pooling and normalisation apply).
    pub teacher: PathBuf,
    pub train: SentenceFile,
    pub eval: Option<SentenceFile>,
    /// Tokens per sentence for the student (default 128, or the model's maximum if less).
    pub max_length: Option<usize>,
    /// Sentences the teacher embeds together.
    pub batch_size: usize,
    /// Whether a student whose width differs from the teacher's vectors may learn a projection to
    /// them (a `Dense` module after pooling).
    pub projection: bool,
    /// Text the student also learns masked-LM on, and that loss's weight.
    pub masked_lm: Option<MaskedLmText>,
}

/// Sentences read and tokenized, each with the teacher's vector of its source.
#[derive(Debug, Clone)]
pub struct DistillSet {
    /// The sentences the student reads: a source's, then (for pairs) its translation's; `None` where
    /// the translation is the source itself (English sentences mixed into English -> French pairs
    /// to keep the student's English), which is read once.
    sources: Vec<Encoding>,
    targets: Option<Vec<Option<Encoding>>>,
    /// The teacher's vector of each source, `dim` wide.
    teacher: Vec<Vec<f32>>,
}

impl DistillSet {
    fn len(&self) -> usize {
        self.sources.len()
    }
}

/// Reads a sentence file into (sources, translations).
fn read_sentences(file: &SentenceFile) -> Result<(Vec<String>, Option<Vec<String>>)> {
    match &file.target {
        Some(target) => {
            let aligned = PairFile::Aligned {
                source: file.sentences.clone(),
                target: target.clone(),
            };
            let columns = PairColumns {
                source: String::new(),
                target: String::new(),
            };
            let pairs = read_pairs(&aligned, &columns)?;
            let (sources, targets) = pairs.into_iter().map(|p| (p.source, p.target)).unzip();
            Ok((sources, Some(targets)))
        }
        None => {
            let read = sentences::read(&file.sentences)?;
            Ok((read.into_iter().map(|s| s.text).collect(), None))
        }
    }
}

fn load_set(
    file: &SentenceFile,
    teacher: &Embedder,
    tokenizer: &Tokenizer,
    batch: usize,
) -> Result<DistillSet> {
    let (sources, targets) = read_sentences(file)?;
    let encode = |texts: &[String]| {
        (texts.iter())
            .map(|t| tokenizer.encode(t))
            .collect::<Result<Vec<_>>>()
    };
    let texts: Vec<&str> = sources.iter().map(String::as_str).collect();
    let targets = match targets {
        Some(targets) => Some(
            (sources.iter().zip(&targets))
                .map(|(s, t)| (s != t).then(|| tokenizer.encode(t)).transpose())
                .collect::<Result<Vec<_>>>()?,
        ),
        None => None,
    };
    Ok(DistillSet {
        teacher: teacher.embed_sorted(&texts, batch, &mut |_| {})?,
        targets,
        sources: encode(&sources)?,
    })
}

/// Reads the sentences, embeds them with the teacher, and loads the student from `student_dir`.
pub fn prepare_distill(
    student_dir: &Path,
    data: &DistillData,
    setup: impl Into<WeightSetup>,
) -> Result<Prepared<DistillTask>> {
    let config = BertConfig::from_file(&student_dir.join("config.json"))?;
    let tokenizer = task_tokenizer(student_dir, &config, data.max_length)?;
    // Before any sentence is embedded: the teacher's vectors are its hidden states pooled (and
    // projected, when it has `Dense` modules).
    let teacher_modules = EmbeddingConfig::from_dir(&data.teacher)?;
    let teacher_width = match teacher_modules.dense.last() {
        Some(dense) => dense.out_features,
        None => BertConfig::from_file(&data.teacher.join("config.json"))?.hidden_size,
    };
    let projected = teacher_width != config.hidden_size;
    if projected && !data.projection {
        return Err(Error::InvalidInput(format!(
            "the teacher {} gives {teacher_width}-value vectors and the student {} {}: \
             distilling across sizes needs a projection; allow one with --projection (a Dense \
             module after pooling) or pick a student of the teacher's width",
            data.teacher.display(),
            student_dir.display(),
            config.hidden_size
        )));
    }
    let teacher = Embedder::load(&data.teacher, &EmbedOptions::default())?;
    let train = load_set(&data.train, &teacher, &tokenizer, data.batch_size)?;
    let eval = (data.eval.as_ref())
        .map(|file| load_set(file, &teacher, &tokenizer, data.batch_size))
        .transpose()?;
    let pooling = EmbeddingConfig::from_dir(student_dir)?.pooling;
    // With its pooler, which sentence vectors do not use, so that the saved model is a whole
    // `BertModel` for transformers (the checkpoint's pooler is kept as it was).
    let setup = setup.into();
    let (store, (model, projection, masked_lm), newly_initialized) =
        trainable(student_dir, &config, setup, |p, c| {
            let model = BertModel::load(&p.pp("bert"), c, true)?;
            let (width, std) = (c.hidden_size, c.initializer_range);
            let projection = projected
                .then(|| Linear::load_or_init(&p.pp(PROJECTION), width, teacher_width, std))
                .transpose()?;
            let embeddings = model.embeddings().word_embeddings()?;
            let predictions = p.pp("cls").pp("predictions");
            let masked_lm = (data.masked_lm.as_ref())
                .map(|text| {
                    MaskedLm::load(&predictions, c, &embeddings, text, &tokenizer, setup.seed)
                })
                .transpose()?;
            Ok((model, projection, masked_lm))
        })?;
    Ok(Prepared {
        config,
        store,
        task: DistillTask {
            model,
            projection,
            masked_lm,
            pooling,
            normalize: teacher.normalize(),
            train,
            eval,
            pad_id: tokenizer.pad_id(),
        },
        newly_initialized,
        notes: Vec::new(),
    })
}

/// A student encoder learning a teacher's sentence vectors.
pub struct DistillTask {
    pub model: BertModel,
    /// Student width to teacher width, when they differ.
    pub projection: Option<Linear>,
    /// The second objective, when the student also learns to fill in masked words.
    pub masked_lm: Option<MaskedLm>,
    pub pooling: Pooling,
    /// Whether the student's vectors are scaled to unit length before the loss: when the teacher's
    /// are, as the saved student's then are too (its `Normalize` module).
    pub normalize: bool,
    pub train: DistillSet,
    pub eval: Option<DistillSet>,
    pub pad_id: u32,
}

impl DistillTask {
    /// The student's sentence vectors of `encodings`, `(N, C)`, as the saved model will give them.
    fn embed(&self, encodings: &[Encoding], mode: &Mode) -> Result<Tensor> {
        let batch = Batch::from_encodings(encodings, self.pad_id, &Device::Cpu)?;
        let out = self.model.forward(&batch, mode)?;
        let pooled = pool(
            &out.hidden_states,
            &batch.attention_mask,
            self.pooling,
            false,
        )?;
        let vectors = match &self.projection {
            Some(projection) => projection.forward(&pooled)?,
            None => pooled,
        };
        if self.normalize {
            normalize_rows(&vectors)
        } else {
            Ok(vectors)
        }
    }

    /// The student's vectors of the examples' sentences (sources, then the translations that are
    /// not the source itself) and the teacher's vectors each should match, `(N, C)` both; and the
    /// tokens read.
    fn pass(
        &self,
        set: &DistillSet,
        indices: &[usize],
        mode: &Mode,
    ) -> Result<(Tensor, Tensor, usize)> {
        let mut encodings: Vec<Encoding> =
            indices.iter().map(|&i| set.sources[i].clone()).collect();
        let mut wanted: Vec<f32> = indices
            .iter()
            .flat_map(|&i| set.teacher[i].clone())
            .collect();
        if let Some(targets) = &set.targets {
            for &i in indices.iter().filter(|&&i| targets[i].is_some()) {
                encodings.extend(targets[i].clone());
                wanted.extend_from_slice(&set.teacher[i]);
            }
        }
        let tokens = encodings.iter().map(|e| e.ids.len()).sum();
        let student = self.embed(&encodings, mode)?;
        let wanted = Tensor::from_vec(wanted, student.shape(), &Device::Cpu)?;
        Ok((student, wanted, tokens))
    }
}

/// Makes the distilled model in `out` a sentence-transformers directory: the student's pooling
/// (from its own modules, else mean), the learnt projection as a `Dense` module (moved out of
/// `model.safetensors`), normalisation when the teacher normalises, and `max_length` (as
/// [`prepare_distill`] took it) as `max_seq_length`.
pub fn save_modules(out: &Path, student_dir: &Path, data: &DistillData) -> Result<()> {
    let config = BertConfig::from_file(&out.join("config.json"))?;
    let max_length = checked_max_length(&config, data.max_length, DEFAULT_MAX_LENGTH)?;
    let pooling = EmbeddingConfig::from_dir(student_dir)?.pooling;
    let normalize = EmbeddingConfig::from_dir(&data.teacher)?.normalize;
    let projection = move_projection(out)?;
    crate::pooling::write_sentence_transformers(
        out,
        pooling,
        normalize,
        max_length,
        config.hidden_size,
        projection,
    )
}

/// The weights of the projection, if `out/model.safetensors` holds one: written as a `Dense`
/// module and left out of the encoder's weights, which `transformers` then loads as a whole.
fn move_projection(out: &Path) -> Result<bool> {
    let checkpoint = Checkpoint::open(out)?;
    let weight = format!("{PROJECTION}.weight");
    if !checkpoint.names().any(|n| n == weight) {
        return Ok(false);
    }
    let mut tensors = BTreeMap::new();
    for name in checkpoint.names() {
        if let Some(tensor) = checkpoint.load(name, &Device::Cpu)? {
            tensors.insert(name.to_string(), tensor);
        }
    }
    drop(checkpoint);
    let weight = tensors.remove(&weight);
    let bias = tensors.remove(&format!("{PROJECTION}.bias"));
    let (Some(weight), Some(bias)) = (weight, bias) else {
        return Ok(false);
    };
    write_projection(&out.join(PROJECTION_DIR), &weight, &bias)?;
    save_safetensors(&out.join("model.safetensors"), &tensors)?;
    Ok(true)
}

/// The projection's name among the student's weights while it trains.
const PROJECTION: &str = "projection";

fn mse(student: &Tensor, wanted: &Tensor) -> Result<Tensor> {
    Ok((student - wanted)?.sqr()?.mean_all()?)
}

impl FinetuneTask for DistillTask {
    fn architecture(&self) -> &'static str {
        match self.masked_lm {
            Some(_) => "BertForMaskedLM",
            None => "BertModel",
        }
    }

    fn train_len(&self) -> usize {
        self.train.len()
    }

    /// The source's tokens, and its translation's when that is read too.
    fn train_tokens(&self, index: usize) -> Option<usize> {
        let target = (self.train.targets.as_ref()).and_then(|t| t[index].as_ref());
        Some(self.train.sources[index].ids.len() + target.map_or(0, |t| t.ids.len()))
    }

    fn train_loss(&self, indices: &[usize], mode: &Mode) -> Result<TrainLoss> {
        let (student, wanted, tokens) = self.pass(&self.train, indices, mode)?;
        let loss = mse(&student, &wanted)?;
        match &self.masked_lm {
            Some(masked_lm) => {
                let (mlm, mlm_tokens) = masked_lm.loss(&self.model, indices.len(), mode)?;
                Ok(TrainLoss {
                    loss: (loss + mlm)?,
                    tokens: tokens + mlm_tokens,
                })
            }
            None => Ok(TrainLoss { loss, tokens }),
        }
    }

    /// The held-out sentences, then the held-out masked-LM lines.
    fn eval_len(&self) -> usize {
        self.sentences_len() + self.masked_lm.as_ref().map_or(0, MaskedLm::eval_len)
    }

    /// A row per held-out sentence ([`DistillTask::sentence_rows`]) or masked-LM line (its masked
    /// tokens, right predictions and summed cross-entropy), in the order of `indices`; the loss is
    /// the sentences' alone.
    fn eval_batch(&self, indices: &[usize]) -> Result<EvalBatch> {
        let n = self.sentences_len();
        let (sentences, lines): (Vec<usize>, Vec<usize>) = indices.iter().partition(|&&i| i < n);
        let mut batch = self.sentence_rows(&sentences)?;
        let line_rows = match &self.masked_lm {
            Some(masked_lm) => {
                let lines: Vec<usize> = lines.iter().map(|i| i - n).collect();
                masked_lm.eval_rows(&self.model, &lines)?
            }
            None => Vec::new(),
        };
        // Both kinds back in the order of `indices` (the partition kept each kind's order).
        let (mut sentence_rows, mut line_rows) = (batch.rows.into_iter(), line_rows.into_iter());
        batch.rows = (indices.iter())
            .filter_map(|&i| match i < n {
                true => sentence_rows.next(),
                false => line_rows.next(),
            })
            .collect();
        Ok(batch)
    }

    fn eval_tokens(&self, index: usize) -> usize {
        let n = self.sentences_len();
        match (&self.eval, &self.masked_lm) {
            (Some(eval), _) if index < n => eval.sources[index].ids.len(),
            (_, Some(masked_lm)) => masked_lm.eval_tokens(index - n),
            _ => 0,
        }
    }

    fn score(&self, rows: Vec<Vec<f32>>, loss: f64) -> Result<Map<String, Value>> {
        let mut metrics = Map::new();
        let n = self.sentences_len();
        if let Some(eval) = &self.eval {
            metrics.insert("loss".into(), loss.into());
            metrics.insert("mse_x100".into(), (loss * 100.0).into());
            if eval.targets.is_some() {
                let (forward, backward) = retrieval_accuracy(&rows[..n]);
                metrics.insert("src2trg_accuracy".into(), forward.into());
                metrics.insert("trg2src_accuracy".into(), backward.into());
            }
        }
        if self.masked_lm.as_ref().is_some_and(|m| m.eval_len() > 0) {
            let (accuracy, mlm_loss) = masked_lm_metrics(&rows[n..]);
            metrics.insert("mlm_accuracy".into(), accuracy.into());
            metrics.insert("mlm_loss".into(), mlm_loss.into());
            if self.eval.is_none() {
                metrics.insert("loss".into(), mlm_loss.into());
            }
        }
        Ok(metrics)
    }
}

impl DistillTask {
    /// How many held-out sentences there are.
    fn sentences_len(&self) -> usize {
        self.eval.as_ref().map_or(0, DistillSet::len)
    }

    /// A row per held-out sentence of `indices`: the student's vector of the source, then of the
    /// translation if any; and their MSE.
    fn sentence_rows(&self, indices: &[usize]) -> Result<EvalBatch> {
        let Some(eval) = self.eval.as_ref().filter(|_| !indices.is_empty()) else {
            return Ok(EvalBatch::default());
        };
        let (student, wanted, _) = self.pass(eval, indices, &Mode::Eval)?;
        let loss = mse(&student, &wanted)?.to_scalar::<f32>()?;
        let vectors = student.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        let n = indices.len();
        let mut translations = vectors[n..].iter();
        let rows = (indices.iter().enumerate())
            .map(|(i, &index)| match &eval.targets {
                Some(targets) => {
                    let translation = match targets[index] {
                        Some(_) => translations.next().unwrap_or(&vectors[i]),
                        None => &vectors[i],
                    };
                    [vectors[i].as_slice(), translation].concat()
                }
                None => vectors[i].clone(),
            })
            .collect();
        Ok(EvalBatch {
            rows,
            loss_sum: f64::from(loss) * n as f64,
            loss_terms: n,
            ..Default::default()
        })
    }
}

/// Translation retrieval accuracy both ways from rows holding a source's vector then its
/// translation's: the share of sources whose most similar translation (by cosine) is their own,
/// and the same from the translations' side.
pub fn retrieval_accuracy(rows: &[Vec<f32>]) -> (f64, f64) {
    let n = rows.len();
    if n == 0 {
        return (0.0, 0.0);
    }
    let dim = rows[0].len() / 2;
    let unit = |part: usize| -> Vec<f32> {
        (rows.iter())
            .flat_map(|row| {
                let mut v = row[part * dim..(part + 1) * dim].to_vec();
                normalize(&mut v);
                v
            })
            .collect()
    };
    let (sources, targets) = (unit(0), unit(1));
    let right = |found: Vec<Vec<crate::bitext::neighbours::Neighbour>>| {
        let hits = (found.iter().enumerate())
            .filter(|(i, n)| n.first().is_some_and(|n| n.row == *i))
            .count();
        hits as f64 / n as f64
    };
    (
        right(nearest(&sources, &targets, dim, 1)),
        right(nearest(&targets, &sources, dim, 1)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retrieval_accuracy_counts_own_translations_both_ways() {
        // Three sources and their translations in 2-d; the third translation is poor. By hand:
        // sources -> translations 0, 1, 1 (2 of 3 right); translations -> sources 0, 2, 0 (1 of 3).
        let rows = vec![
            vec![1.0, 0.0, 1.0, 0.1],
            vec![0.0, 1.0, 0.6, 1.0],
            vec![0.7, 0.7, 1.0, 0.3],
        ];
        let (forward, backward) = retrieval_accuracy(&rows);
        assert!((forward - 2.0 / 3.0).abs() < 1e-9, "{forward}");
        assert!((backward - 1.0 / 3.0).abs() < 1e-9, "{backward}");
    }
}
