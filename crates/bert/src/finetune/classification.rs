//! Text classification (sentiment, intent, NLI, paraphrase) as a fine-tuning task: a text or a text pair
//! per row, a label (single-label), a set of labels (multi-label: a JSON list, or names separated by
//! commas) or a number (regression). Label names are mapped to ids in sorted order (numerically when
//! every label is a number) and written into `id2label`/`label2id`.

use std::collections::BTreeSet;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde_json::{Map, Value};

use crate::batch::Batch;
use crate::error::Result;
use crate::finetune::table::{Row, Table};
use crate::finetune::trainer::FinetuneTask;
use crate::loss::sequence_classification_loss;
use crate::metrics::{classification_report, multi_label_report, regression_report};
use crate::model::{BertForSequenceClassification, Mode};
use crate::tokenizer::{Encoding, Tokenizer};
use crate::train::{EvalBatch, TrainLoss};
use crate::weights::config::{BertConfig, ProblemType};

/// Which columns hold what.
#[derive(Debug, Clone)]
pub struct Columns {
    pub text: String,
    /// The second text of a pair (NLI, paraphrase).
    pub text_pair: Option<String>,
    pub label: String,
}

/// The targets of a set of examples, by problem type.
#[derive(Debug, Clone, PartialEq)]
pub enum Targets {
    Single(Vec<usize>),
    Multi(Vec<Vec<bool>>),
    Regression(Vec<f32>),
}

/// Tokenized examples with their targets.
#[derive(Debug, Clone)]
pub struct ClassificationSet {
    pub encodings: Vec<Encoding>,
    pub targets: Targets,
}

/// One label cell as label names (one for single-label, any number for multi-label).
fn label_names(
    table: &Table,
    row: &Row,
    column: &str,
    problem: ProblemType,
) -> Result<Vec<String>> {
    let names = match (row.cells.get(column), problem) {
        (Some(Value::Array(items)), ProblemType::MultiLabelClassification) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => s.trim().to_string(),
                other => other.to_string(),
            })
            .collect(),
        (_, ProblemType::MultiLabelClassification) => table
            .text(row, column)?
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        _ => vec![table.text(row, column)?.trim().to_string()],
    };
    if problem == ProblemType::SingleLabelClassification && names[0].is_empty() {
        return Err(table.error(row, format!("empty label in `{column}`")));
    }
    Ok(names)
}

/// The label names of the training table, sorted (numerically if they all are numbers).
pub fn label_set(table: &Table, columns: &Columns, problem: ProblemType) -> Result<Vec<String>> {
    table.require(&columns.label, "--label-column")?;
    if problem == ProblemType::Regression {
        return Ok(vec!["LABEL_0".into()]);
    }
    let mut names = BTreeSet::new();
    for row in &table.rows {
        names.extend(label_names(table, row, &columns.label, problem)?);
    }
    let mut names: Vec<String> = names.into_iter().collect();
    if names.iter().all(|n| n.parse::<f64>().is_ok()) {
        names.sort_by(|a, b| {
            a.parse::<f64>()
                .unwrap_or(0.0)
                .total_cmp(&b.parse().unwrap_or(0.0))
        });
    }
    Ok(names)
}

/// Sets the head's labels and problem type in `config`.
pub fn apply_labels(config: &mut BertConfig, labels: &[String], problem: ProblemType) {
    config.num_labels = Some(labels.len());
    config.id2label = Some(
        labels
            .iter()
            .enumerate()
            .map(|(i, l)| (i.to_string(), l.clone()))
            .collect(),
    );
    config.label2id = Some(
        labels
            .iter()
            .enumerate()
            .map(|(i, l)| (l.clone(), i as i64))
            .collect(),
    );
    config.problem_type = Some(problem);
}

/// Reads `table` into tokenized examples with targets over `labels`.
pub fn load_set(
    table: &Table,
    columns: &Columns,
    labels: &[String],
    problem: ProblemType,
    tokenizer: &Tokenizer,
) -> Result<ClassificationSet> {
    table.require(&columns.text, "--text-column")?;
    if let Some(pair) = &columns.text_pair {
        table.require(pair, "--text-pair-column")?;
    }
    table.require(&columns.label, "--label-column")?;
    let mut encodings = Vec::with_capacity(table.rows.len());
    let mut targets = match problem {
        ProblemType::SingleLabelClassification => Targets::Single(Vec::new()),
        ProblemType::MultiLabelClassification => Targets::Multi(Vec::new()),
        ProblemType::Regression => Targets::Regression(Vec::new()),
    };
    for row in &table.rows {
        let text = table.text(row, &columns.text)?;
        let encoding = match &columns.text_pair {
            Some(pair) => tokenizer.encode_pair(&text, &table.text(row, pair)?),
            None => tokenizer.encode(&text),
        }
        .map_err(|e| table.error(row, e.to_string()))?;
        encodings.push(encoding);
        match &mut targets {
            Targets::Regression(values) => {
                let cell = table.text(row, &columns.label)?;
                let value = cell.trim().parse::<f32>().map_err(|_| {
                    table.error(row, format!("regression label `{cell}` is not a number"))
                })?;
                values.push(value);
            }
            Targets::Single(ids) => {
                let names = label_names(table, row, &columns.label, problem)?;
                ids.push(label_id(table, row, labels, &names[0])?);
            }
            Targets::Multi(sets) => {
                let mut set = vec![false; labels.len()];
                for name in label_names(table, row, &columns.label, problem)? {
                    set[label_id(table, row, labels, &name)?] = true;
                }
                sets.push(set);
            }
        }
    }
    Ok(ClassificationSet { encodings, targets })
}

fn label_id(table: &Table, row: &Row, labels: &[String], name: &str) -> Result<usize> {
    labels.iter().position(|l| l == name).ok_or_else(|| {
        table.error(
            row,
            format!(
                "label `{name}` does not occur in the training data (its labels: {})",
                labels.join(", ")
            ),
        )
    })
}

impl ClassificationSet {
    /// The padded batch and target tensor of the examples `indices`.
    fn batch(&self, indices: &[usize], pad_id: u32) -> Result<(Batch, Tensor, usize)> {
        let device = Device::Cpu;
        let encodings: Vec<Encoding> = indices.iter().map(|&i| self.encodings[i].clone()).collect();
        let tokens = encodings.iter().map(|e| e.ids.len()).sum();
        let batch = Batch::from_encodings(&encodings, pad_id, &device)?;
        let targets = match &self.targets {
            Targets::Single(ids) => {
                let picked: Vec<i64> = indices.iter().map(|&i| ids[i] as i64).collect();
                Tensor::new(picked, &device)?
            }
            Targets::Multi(sets) => {
                let k = sets.first().map_or(0, Vec::len);
                let picked: Vec<f32> = indices
                    .iter()
                    .flat_map(|&i| sets[i].iter().map(|&b| f32::from(u8::from(b))))
                    .collect();
                Tensor::from_vec(picked, (indices.len(), k), &device)?
            }
            Targets::Regression(values) => {
                let picked: Vec<f32> = indices.iter().map(|&i| values[i]).collect();
                Tensor::new(picked, &device)?
            }
        };
        Ok((batch, targets, tokens))
    }

    fn len(&self) -> usize {
        self.encodings.len()
    }
}

/// A sequence-classification head with its training and evaluation sets.
pub struct ClassificationTask {
    pub model: BertForSequenceClassification,
    pub problem: ProblemType,
    pub labels: Vec<String>,
    pub train: ClassificationSet,
    pub eval: Option<ClassificationSet>,
    pub pad_id: u32,
}

impl FinetuneTask for ClassificationTask {
    fn architecture(&self) -> &'static str {
        "BertForSequenceClassification"
    }

    fn train_len(&self) -> usize {
        self.train.len()
    }

    fn train_loss(&self, indices: &[usize], mode: &Mode) -> Result<TrainLoss> {
        let (batch, targets, tokens) = self.train.batch(indices, self.pad_id)?;
        let logits = self.model.forward(&batch, mode)?;
        Ok(TrainLoss {
            loss: sequence_classification_loss(&logits, &targets, self.problem)?,
            tokens,
        })
    }

    fn eval_len(&self) -> usize {
        self.eval.as_ref().map_or(0, ClassificationSet::len)
    }

    fn eval_batch(&self, indices: &[usize]) -> Result<EvalBatch> {
        let Some(eval) = &self.eval else {
            return Ok(EvalBatch::default());
        };
        let (batch, targets, _) = eval.batch(indices, self.pad_id)?;
        let out = self.model.forward(&batch, &Mode::Eval)?;
        let loss = sequence_classification_loss(&out, &targets, self.problem)?;
        Ok(EvalBatch {
            rows: out.to_dtype(DType::F32)?.to_vec2::<f32>()?,
            loss_sum: f64::from(loss.to_scalar::<f32>()?) * indices.len() as f64,
            loss_terms: indices.len(),
            ..Default::default()
        })
    }

    fn eval_tokens(&self, index: usize) -> usize {
        self.eval
            .as_ref()
            .map_or(0, |eval| eval.encodings[index].ids.len())
    }

    fn score(&self, logits: Vec<Vec<f32>>, loss: f64) -> Result<Map<String, Value>> {
        let Some(eval) = &self.eval else {
            return Ok(Map::new());
        };
        let mut metrics = Map::new();
        metrics.insert("loss".into(), loss.into());
        metrics.extend(self.report(&eval.targets, &logits)?);
        Ok(metrics)
    }
}

impl ClassificationTask {
    /// The metrics of the problem type, from the evaluation logits.
    fn report(&self, targets: &Targets, logits: &[Vec<f32>]) -> Result<Map<String, Value>> {
        let value = match targets {
            Targets::Single(truth) => {
                let predicted: Vec<usize> = logits.iter().map(|row| argmax(row)).collect();
                serde_json::to_value(classification_report(&self.labels, truth, &predicted))
            }
            Targets::Multi(truth) => {
                let predicted: Vec<Vec<bool>> = logits
                    .iter()
                    .map(|row| row.iter().map(|&x| x > 0.0).collect())
                    .collect();
                serde_json::to_value(multi_label_report(&self.labels, truth, &predicted))
            }
            Targets::Regression(truth) => {
                let truth: Vec<f64> = truth.iter().map(|&v| f64::from(v)).collect();
                let predicted: Vec<f64> = logits.iter().map(|row| f64::from(row[0])).collect();
                serde_json::to_value(regression_report(&truth, &predicted))
            }
        }
        .map_err(|e| crate::Error::Training(e.to_string()))?;
        Ok(match value {
            Value::Object(map) => map,
            _ => Map::new(),
        })
    }
}

fn argmax(row: &[f32]) -> usize {
    (0..row.len())
        .max_by(|&a, &b| row[a].total_cmp(&row[b]).then(b.cmp(&a)))
        .unwrap_or(0)
}

/// Reads the training (and evaluation) files of a classification run; returns the label names too.
pub fn read_tables(
    train: &Path,
    eval: Option<&Path>,
    columns: &Columns,
    problem: ProblemType,
) -> Result<(Table, Option<Table>, Vec<String>)> {
    let train = Table::read(train)?;
    let labels = label_set(&train, columns, problem)?;
    let eval = eval.map(Table::read).transpose()?;
    Ok((train, eval, labels))
}
