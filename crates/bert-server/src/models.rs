//! The pipelines one server runs, chosen by the checkpoint's head: a sentence encoder serves
//! embeddings, a sequence classifier predictions and reranking, and so on. Each task loads its own
//! pipeline, so asking for more tasks than the head implies costs a copy of the encoder each.

use std::fmt;
use std::path::{Path, PathBuf};

use bert::pipelines::{
    EmbedOptions, Embedder, FillMask, Generator, IntentSlotParser, PipelineOptions, QaOptions,
    QuestionAnswerer, TextClassifier, TokenClassifier,
};
use bert::pooling::Pooling;
use bert::search::Searcher;
use bert::weights::config::BertConfig;
use bert::weights::encoder_decoder_config::is_encoder_decoder;
use bert::{Encoding, Tokenizer};

use crate::error::ApiError;

/// A family of routes backed by one pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Task {
    /// `/embed`, `/v1/embeddings`.
    Embed,
    /// `/predict`, `/rerank`.
    Classify,
    /// `/ner`.
    Ner,
    /// `/nlu`, with a joint intent and slot model.
    Nlu,
    /// `/qa`.
    Qa,
    /// `/fill-mask`.
    FillMask,
    /// `/generate`, with an encoder-decoder.
    Generate,
    /// `/search`, over an index.
    Search,
}

impl Task {
    pub const ALL: [Task; 8] = [
        Task::Embed,
        Task::Classify,
        Task::Ner,
        Task::Nlu,
        Task::Qa,
        Task::FillMask,
        Task::Generate,
        Task::Search,
    ];

    /// The tasks a checkpoint's `architectures` imply: its head's task, and embeddings for a bare
    /// encoder or a pretraining checkpoint.
    pub fn for_config(config: &BertConfig) -> Vec<Task> {
        let architecture = config
            .architectures
            .as_ref()
            .and_then(|a| a.first())
            .map_or("BertModel", String::as_str);
        match architecture {
            a if a.ends_with("ForSequenceClassification") => vec![Task::Classify],
            a if a.ends_with("ForTokenClassification") => vec![Task::Ner],
            a if a.ends_with("ForIntentAndSlots") => vec![Task::Nlu],
            a if a.ends_with("ForQuestionAnswering") => vec![Task::Qa],
            a if a.ends_with("ForMaskedLM") || a.ends_with("ForPreTraining") => {
                vec![Task::Embed, Task::FillMask]
            }
            _ => vec![Task::Embed],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Task::Embed => "embed",
            Task::Classify => "classify",
            Task::Ner => "ner",
            Task::Nlu => "nlu",
            Task::Qa => "qa",
            Task::FillMask => "fill-mask",
            Task::Generate => "generate",
            Task::Search => "search",
        }
    }

    /// The routes this task serves.
    pub fn routes(self) -> &'static [&'static str] {
        match self {
            Task::Embed => &["/embed", "/v1/embeddings"],
            Task::Classify => &["/predict", "/rerank"],
            Task::Ner => &["/ner"],
            Task::Nlu => &["/nlu"],
            Task::Qa => &["/qa"],
            Task::FillMask => &["/fill-mask"],
            Task::Generate => &["/generate"],
            Task::Search => &["/search"],
        }
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Task {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match Task::ALL.into_iter().find(|t| t.name() == s) {
            Some(Task::Search) => Err("search is served with --index INDEX".into()),
            Some(task) => Ok(task),
            None => Err(format!(
                "unknown task `{s}` (expected embed, classify, ner, nlu, qa, fill-mask or generate)"
            )),
        }
    }
}

/// How to load the pipelines.
#[derive(Debug, Clone, Default)]
pub struct ModelOptions {
    /// Tasks to serve; empty: those the checkpoint's head implies.
    pub tasks: Vec<Task>,
    /// Longest input in tokens; default: the model's maximum.
    pub max_input_length: Option<usize>,
    /// Embedding pooling; default: the checkpoint's sentence-transformers setting, else mean.
    pub pooling: Option<Pooling>,
    /// An index to serve at `/search` (with the model it was built with).
    pub index: Option<PathBuf>,
    /// The number format of the models' Linear layers.
    pub precision: bert::model::Precision,
}

/// The loaded pipelines; shared read-only by the request handlers (tokenization) and the worker
/// (forward passes).
pub struct Models {
    pub config: BertConfig,
    pub embedder: Option<Embedder>,
    pub classifier: Option<TextClassifier>,
    pub tagger: Option<TokenClassifier>,
    pub parser: Option<IntentSlotParser>,
    pub answerer: Option<QuestionAnswerer>,
    pub filler: Option<FillMask>,
    pub generator: Option<Generator>,
    pub searcher: Option<Searcher>,
    /// Tokens per input, special tokens included.
    pub max_input_length: usize,
}

impl Models {
    /// Loads the pipelines of the checkpoint in `dir` (none without one) and the index, if any.
    pub fn load(dir: Option<&Path>, options: &ModelOptions) -> bert::Result<Models> {
        let searcher = options
            .index
            .as_deref()
            .map(|index| Searcher::open(index, None))
            .transpose()?;
        let Some(dir) = dir else {
            let searcher = searcher.ok_or_else(|| {
                bert::Error::InvalidInput("give a model or an index to serve".into())
            })?;
            let config = searcher.embedder.pipeline().config.clone();
            let max_input_length = searcher.embedder.pipeline().max_length;
            return Ok(Models {
                config,
                embedder: None,
                classifier: None,
                tagger: None,
                parser: None,
                answerer: None,
                filler: None,
                generator: None,
                searcher: Some(searcher),
                max_input_length,
            });
        };
        let pipeline = PipelineOptions {
            max_length: options.max_input_length,
            precision: options.precision,
            ..Default::default()
        };
        if is_encoder_decoder(&dir.join("config.json"))? {
            return Self::encoder_decoder(dir, options, &pipeline, searcher);
        }
        let config = BertConfig::from_file(&dir.join("config.json"))?;
        let tasks = if options.tasks.is_empty() {
            Task::for_config(&config)
        } else {
            options.tasks.clone()
        };
        if tasks.contains(&Task::Generate) {
            return Err(bert::Error::InvalidInput(
                "--task generate needs an encoder-decoder checkpoint (`bert finetune --task seq2seq`)"
                    .into(),
            ));
        }
        let wants = |task| tasks.contains(&task);
        let embedder = wants(Task::Embed)
            .then(|| {
                let embed = EmbedOptions {
                    pipeline: pipeline.clone(),
                    pooling: options.pooling,
                    normalize: None,
                };
                Embedder::load(dir, &embed)
            })
            .transpose()?;
        let classifier = wants(Task::Classify)
            .then(|| TextClassifier::load(dir, &pipeline, None))
            .transpose()?;
        let tagger = wants(Task::Ner)
            .then(|| TokenClassifier::load(dir, &pipeline))
            .transpose()?;
        let parser = wants(Task::Nlu)
            .then(|| IntentSlotParser::load(dir, &pipeline))
            .transpose()?;
        let answerer = wants(Task::Qa)
            .then(|| QuestionAnswerer::load(dir, &pipeline, QaOptions::default()))
            .transpose()?;
        let filler = wants(Task::FillMask)
            .then(|| FillMask::load(dir, &pipeline))
            .transpose()?;
        let mut models = Models {
            config,
            embedder,
            classifier,
            tagger,
            parser,
            answerer,
            filler,
            generator: None,
            searcher,
            max_input_length: 0,
        };
        models.max_input_length = models.tokenizer_and_limit().1;
        Ok(models)
    }

    /// An encoder-decoder serves generation (and nothing else).
    fn encoder_decoder(
        dir: &Path,
        options: &ModelOptions,
        pipeline: &PipelineOptions,
        searcher: Option<Searcher>,
    ) -> bert::Result<Models> {
        if let Some(task) = options.tasks.iter().find(|&&t| t != Task::Generate) {
            return Err(bert::Error::InvalidInput(format!(
                "--task {task}: this checkpoint is an encoder-decoder, which serves generate"
            )));
        }
        let generator = Generator::load(dir, pipeline)?;
        Ok(Models {
            config: generator.config.encoder.clone(),
            embedder: None,
            classifier: None,
            tagger: None,
            parser: None,
            answerer: None,
            filler: None,
            max_input_length: generator.max_length,
            generator: Some(generator),
            searcher,
        })
    }

    /// The tasks loaded, in a fixed order.
    pub fn tasks(&self) -> Vec<Task> {
        Task::ALL
            .into_iter()
            .filter(|&t| match t {
                Task::Embed => self.embedder.is_some(),
                Task::Classify => self.classifier.is_some(),
                Task::Ner => self.tagger.is_some(),
                Task::Nlu => self.parser.is_some(),
                Task::Qa => self.answerer.is_some(),
                Task::FillMask => self.filler.is_some(),
                Task::Generate => self.generator.is_some(),
                Task::Search => self.searcher.is_some(),
            })
            .collect()
    }

    /// The tokenizer every pipeline shares (the first loaded one's) and its length limit.
    pub fn tokenizer_and_limit(&self) -> (&Tokenizer, usize) {
        let pipelines = [
            self.embedder.as_ref().map(|p| p.pipeline().into()),
            self.classifier.as_ref().map(|p| p.pipeline().into()),
            self.tagger.as_ref().map(|p| p.pipeline().into()),
            self.parser.as_ref().map(|p| p.pipeline().into()),
            self.answerer.as_ref().map(|p| p.pipeline().into()),
            self.filler.as_ref().map(|p| p.pipeline().into()),
            self.generator.as_ref().map(|g| TokenizerRef {
                tokenizer: &g.tokenizer,
                max_length: g.max_length,
            }),
            self.searcher.as_ref().map(|s| s.embedder.pipeline().into()),
        ];
        let first: TokenizerRef = pipelines
            .into_iter()
            .flatten()
            .next()
            .expect("Models::load loads a pipeline or an index");
        (first.tokenizer, first.max_length)
    }

    /// Tokenizes one text as the model takes it.
    pub fn encode(&self, text: &str) -> bert::Result<Encoding> {
        self.tokenizer_and_limit().0.encode(text)
    }

    /// The error for a route whose task is not loaded.
    pub fn missing(&self, task: Task) -> ApiError {
        let served: Vec<&str> = self
            .tasks()
            .into_iter()
            .flat_map(|t| t.routes().iter().copied())
            .collect();
        let how = match task {
            Task::Search => "start it with --index INDEX".to_string(),
            _ => format!("start it with --task {task} on a checkpoint with that head"),
        };
        ApiError::unsupported(format!(
            "this server does not do `{task}` ({how}); it serves {}",
            served.join(", ")
        ))
    }
}

/// A pipeline's tokenizer and limit, whatever its head.
struct TokenizerRef<'a> {
    tokenizer: &'a Tokenizer,
    max_length: usize,
}

impl<'a, M> From<&'a bert::pipelines::Pipeline<M>> for TokenizerRef<'a> {
    fn from(p: &'a bert::pipelines::Pipeline<M>) -> Self {
        TokenizerRef {
            tokenizer: &p.tokenizer,
            max_length: p.max_length,
        }
    }
}

impl Models {
    /// Warnings about head weights the checkpoint lacked (an untrained head gives noise).
    pub fn load_warnings(&self) -> Vec<String> {
        let reports = [
            (
                Task::Embed,
                self.embedder.as_ref().map(|p| &p.pipeline().report),
            ),
            (
                Task::Classify,
                self.classifier.as_ref().map(|p| &p.pipeline().report),
            ),
            (
                Task::Ner,
                self.tagger.as_ref().map(|p| &p.pipeline().report),
            ),
            (
                Task::Nlu,
                self.parser.as_ref().map(|p| &p.pipeline().report),
            ),
            (
                Task::Qa,
                self.answerer.as_ref().map(|p| &p.pipeline().report),
            ),
            (
                Task::FillMask,
                self.filler.as_ref().map(|p| &p.pipeline().report),
            ),
            (Task::Generate, self.generator.as_ref().map(|g| &g.report)),
        ];
        reports
            .into_iter()
            .filter_map(|(task, report)| Some((task, report?)))
            .filter(|(_, report)| !report.newly_initialized.is_empty())
            .map(|(task, report)| {
                format!(
                    "task {task}: weights not in the checkpoint were newly initialized ({}); its \
                     outputs are untrained",
                    report.newly_initialized.join(", ")
                )
            })
            .collect()
    }
}
