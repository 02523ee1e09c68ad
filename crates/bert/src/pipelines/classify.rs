//! Text classification (sentiment, intent, NLI): labels and scores for a text or a text pair, with the
//! score function `transformers`' text-classification pipeline picks for the head's problem type.

use std::path::Path;

use crate::error::Result;
use crate::model::{BertForSequenceClassification, Mode};
use crate::pipelines::{mean, softmax, LongText, Pipeline, PipelineOptions};
use crate::tokenizer::{Encoding, Tokenizer};
use crate::weights::config::ProblemType;

/// How logits become scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScoreFunction {
    /// Probabilities over mutually exclusive labels.
    Softmax,
    /// Independent probabilities (multi-label, or a single output).
    Sigmoid,
    /// Raw logits.
    None,
}

impl ScoreFunction {
    /// `transformers`' rule: sigmoid for multi-label or a single output, softmax otherwise.
    pub fn for_head(problem_type: Option<ProblemType>, num_labels: usize) -> Self {
        if problem_type == Some(ProblemType::MultiLabelClassification) || num_labels == 1 {
            ScoreFunction::Sigmoid
        } else {
            ScoreFunction::Softmax
        }
    }

    /// Scores from one row of logits.
    pub fn apply(self, logits: &[f32]) -> Vec<f32> {
        match self {
            ScoreFunction::Softmax => softmax(logits),
            ScoreFunction::Sigmoid => logits.iter().map(|&x| 1.0 / (1.0 + (-x).exp())).collect(),
            ScoreFunction::None => logits.to_vec(),
        }
    }
}

impl std::str::FromStr for ScoreFunction {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "softmax" => Ok(ScoreFunction::Softmax),
            "sigmoid" => Ok(ScoreFunction::Sigmoid),
            "none" => Ok(ScoreFunction::None),
            other => Err(format!(
                "unknown score function `{other}` (expected softmax, sigmoid or none)"
            )),
        }
    }
}

/// One label's score.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ClassificationScore {
    pub label: String,
    pub score: f32,
}

/// The labels of one text, best first.
#[derive(Debug, Clone, PartialEq)]
pub struct Classification {
    pub scores: Vec<ClassificationScore>,
}

impl Classification {
    /// The best label.
    pub fn top(&self) -> &ClassificationScore {
        &self.scores[0]
    }
}

/// Classifies texts and text pairs.
pub struct TextClassifier {
    pipeline: Pipeline<BertForSequenceClassification>,
    labels: Vec<String>,
    function: ScoreFunction,
    /// Cuts long texts into windows, when asked to.
    chunker: Option<Tokenizer>,
}

impl TextClassifier {
    /// Loads a classifier; `function` overrides the score function the head implies.
    pub fn load(
        dir: &Path,
        options: &PipelineOptions,
        function: Option<ScoreFunction>,
    ) -> Result<Self> {
        let pipeline = Pipeline::load(dir, options, None, BertForSequenceClassification::load)?;
        let labels = pipeline.config.labels();
        let function = function.unwrap_or_else(|| {
            ScoreFunction::for_head(pipeline.config.problem_type, pipeline.config.num_labels())
        });
        Ok(TextClassifier {
            pipeline,
            labels,
            function,
            chunker: None,
        })
    }

    /// Makes [`TextClassifier::classify_long`] cut long texts into windows as `long_text` says.
    pub fn with_long_text(mut self, long_text: LongText) -> Result<Self> {
        self.chunker = long_text.chunker(&self.pipeline.tokenizer, self.pipeline.max_length)?;
        Ok(self)
    }

    /// Classifies single texts; one longer than the model takes is classified window by window and
    /// each label's score averaged over the windows.
    pub fn classify_long(&self, texts: &[&str]) -> Result<Vec<Classification>> {
        let Some(chunker) = &self.chunker else {
            let encodings = texts
                .iter()
                .map(|t| self.encode(t))
                .collect::<Result<Vec<_>>>()?;
            return self.classify(&encodings);
        };
        texts
            .iter()
            .map(|text| {
                let per_window = self.scores(&chunker.encode_windows(text)?)?;
                Ok(self.ranked(mean(&per_window)))
            })
            .collect()
    }

    pub fn pipeline(&self) -> &Pipeline<BertForSequenceClassification> {
        &self.pipeline
    }

    pub fn encode(&self, text: &str) -> Result<Encoding> {
        self.pipeline.encode(text)
    }

    pub fn encode_pair(&self, text: &str, pair: &str) -> Result<Encoding> {
        self.pipeline.encode_pair(text, pair)
    }

    /// Scores every label of each encoding, best first.
    pub fn classify(&self, encodings: &[Encoding]) -> Result<Vec<Classification>> {
        if encodings.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self
            .scores(encodings)?
            .into_iter()
            .map(|row| self.ranked(row))
            .collect())
    }

    /// Each encoding's label scores, in label order.
    fn scores(&self, encodings: &[Encoding]) -> Result<Vec<Vec<f32>>> {
        let logits = self.logits(encodings)?;
        Ok(logits.iter().map(|row| self.function.apply(row)).collect())
    }

    /// Each encoding's raw logits, in label order, computed as one padded batch.
    pub fn logits(&self, encodings: &[Encoding]) -> Result<Vec<Vec<f32>>> {
        if encodings.is_empty() {
            return Ok(Vec::new());
        }
        let batch = self.pipeline.batch(encodings)?;
        Ok(self
            .pipeline
            .model
            .forward(&batch, &Mode::Eval)?
            .to_vec2()?)
    }

    /// The function turning logits into scores.
    pub fn score_function(&self) -> ScoreFunction {
        self.function
    }

    /// The label names, in label order.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// Label scores (in label order) as labels, best first.
    pub fn ranked(&self, scores: Vec<f32>) -> Classification {
        let mut scores: Vec<ClassificationScore> = scores
            .into_iter()
            .zip(&self.labels)
            .map(|(score, label)| ClassificationScore {
                label: label.clone(),
                score,
            })
            .collect();
        scores.sort_by(|a, b| b.score.total_cmp(&a.score));
        Classification { scores }
    }
}
