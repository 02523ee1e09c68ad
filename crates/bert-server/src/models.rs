//! The pipelines one server runs, chosen by the checkpoint's head: a sentence encoder serves
//! embeddings, a sequence classifier predictions and reranking, and so on. Each task loads its own
//! pipeline, so asking for more tasks than the head implies costs a copy of the encoder each.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use bert::model::BertModel;
use bert::pipelines::{
    EmbedOptions, Embedder, FillMask, Generator, IntentSlotParser, PipelineOptions, QaOptions,
    QuestionAnswerer, TextClassifier, TokenClassifier,
};
use bert::pooling::{EmbeddingConfig, Pooling};
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
            Task::Embed => &[
                "/embed",
                "/embed_all",
                "/similarity",
                "/v1/embeddings",
                "/embeddings",
            ],
            Task::Classify => &["/predict", "/rerank", "/v1/rerank"],
            Task::Ner => &["/ner"],
            Task::Nlu => &["/nlu"],
            Task::Qa => &["/qa"],
            Task::FillMask => &["/fill-mask", "/embed_sparse"],
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

/// How embeddings are pooled: over the encoder's states, or SPLADE over the masked-LM head's logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServedPooling {
    Dense(Pooling),
    /// `log(1 + relu(logits))` max-pooled over tokens: a vocabulary-sized sparse vector
    /// (text-embeddings-inference's `--pooling splade`).
    Splade,
}

impl std::str::FromStr for ServedPooling {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "splade" => Ok(ServedPooling::Splade),
            other => other.parse().map(ServedPooling::Dense).map_err(|_| {
                format!(
                    "unknown pooling `{other}` (expected mean, cls, max, mean_sqrt_len or splade)"
                )
            }),
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
    pub pooling: Option<ServedPooling>,
    /// The prompt (from `config_sentence_transformers.json`) put before every embedding input a
    /// request does not give a `prompt_name` for; default: the file's `default_prompt_name`.
    pub default_prompt_name: Option<String>,
    /// A literal prompt to the same effect (not with `default_prompt_name`).
    pub default_prompt: Option<String>,
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
    /// Whether embeddings are SPLADE vectors (`--pooling splade`): `POST /` answers as
    /// `/embed_sparse`.
    pub splade: bool,
    /// Named prompts of the checkpoint (`config_sentence_transformers.json`).
    pub prompts: BTreeMap<String, String>,
    /// The prompt put before embedding inputs that name none.
    pub default_prompt: Option<String>,
    /// The shared tokenizer cutting long texts into windows (a quarter window shared), for requests
    /// with `"long_text": "chunk"`.
    pub chunker: Option<Tokenizer>,
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
                splade: false,
                prompts: BTreeMap::new(),
                default_prompt: None,
                chunker: None,
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
        let splade = options.pooling == Some(ServedPooling::Splade);
        let mut tasks = tasks;
        if splade {
            let masked_lm =
                |a: &String| a.ends_with("ForMaskedLM") || a.ends_with("ForPreTraining");
            if !config.architectures.iter().flatten().any(masked_lm) {
                return Err(bert::Error::InvalidInput(
                    "--pooling splade needs a masked-LM checkpoint (architectures: BertForMaskedLM \
                     or BertForPreTraining)"
                        .into(),
                ));
            }
            // SPLADE vectors come from the masked-LM head; /embed answers them densely.
            tasks.retain(|&t| t != Task::Embed);
            tasks.push(Task::FillMask);
        }
        let wants = |task| tasks.contains(&task);
        let dense = match options.pooling {
            Some(ServedPooling::Dense(pooling)) => Some(pooling),
            _ => None,
        };
        let embedder = wants(Task::Embed)
            .then(|| {
                let embed = EmbedOptions {
                    pipeline: pipeline.clone(),
                    pooling: dense,
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
            splade,
            prompts: BTreeMap::new(),
            default_prompt: None,
            chunker: None,
        };
        let (tokenizer, limit) = models.tokenizer_and_limit();
        let chunker = tokenizer.clone().with_windows(limit, limit / 4)?;
        models.max_input_length = limit;
        models.chunker = Some(chunker);
        models.read_prompts(dir, options)?;
        Ok(models)
    }

    /// The checkpoint's named prompts and the default one (`--default-prompt-name`,
    /// `--default-prompt`, else the file's `default_prompt_name`).
    fn read_prompts(&mut self, dir: &Path, options: &ModelOptions) -> bert::Result<()> {
        let config = EmbeddingConfig::from_dir(dir)?;
        let default_name = options
            .default_prompt_name
            .clone()
            .or(config.default_prompt_name);
        self.default_prompt = match (&options.default_prompt, default_name) {
            (Some(prompt), _) => Some(prompt.clone()),
            (None, Some(name)) => Some(
                config
                    .prompts
                    .get(&name)
                    .ok_or_else(|| {
                        bert::Error::InvalidInput(format!(
                            "--default-prompt-name {name}: {}",
                            known_prompts(&config.prompts)
                        ))
                    })?
                    .clone(),
            ),
            (None, None) => None,
        };
        self.prompts = config.prompts;
        Ok(())
    }

    /// The prompt a request asks for by name, else the default (`None`: no prompt).
    pub fn prompt(&self, name: Option<&str>) -> Result<Option<&str>, ApiError> {
        match name {
            None => Ok(self.default_prompt.as_deref()),
            Some(name) => match self.prompts.get(name) {
                Some(prompt) => Ok(Some(prompt)),
                None => Err(ApiError::validation(format!(
                    "`prompt_name`: `{name}` is not a prompt of this model; {}",
                    known_prompts(&self.prompts)
                ))),
            },
        }
    }

    /// The encoder of the first loaded pipeline with one (for the attention view; its tokenizer is
    /// the one [`Models::encode`] uses).
    pub fn encoder(&self) -> Option<&BertModel> {
        (self.embedder.as_ref().map(|e| &e.pipeline().model))
            .or_else(|| self.classifier.as_ref().map(|c| &c.pipeline().model.bert))
            .or_else(|| self.tagger.as_ref().map(|t| &t.pipeline().model.bert))
            .or_else(|| self.parser.as_ref().map(|p| &p.pipeline().model.bert))
            .or_else(|| self.answerer.as_ref().map(|a| &a.pipeline().model.bert))
            .or_else(|| self.filler.as_ref().map(|f| &f.pipeline().model.bert))
            .or_else(|| self.searcher.as_ref().map(|s| &s.embedder.pipeline().model))
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
            splade: false,
            prompts: BTreeMap::new(),
            default_prompt: None,
            chunker: None,
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

    /// The routes of the loaded tasks (and `/embed` on a SPLADE server).
    pub fn routes(&self) -> Vec<&'static str> {
        let mut routes: Vec<&str> = (self.tasks().into_iter())
            .flat_map(|t| t.routes().iter().copied())
            .collect();
        if self.splade {
            routes.push("/embed");
        }
        routes
    }

    /// The error for a route whose task is not loaded.
    pub fn missing(&self, task: Task) -> ApiError {
        let served = self.routes();
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

/// "the known prompts are `a`, `b`", or that there are none.
fn known_prompts(prompts: &BTreeMap<String, String>) -> String {
    if prompts.is_empty() {
        return "this model has no prompts (config_sentence_transformers.json)".into();
    }
    let names: Vec<String> = prompts.keys().map(|k| format!("`{k}`")).collect();
    format!("the known prompts are {}", names.join(", "))
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
