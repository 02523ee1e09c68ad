//! Tokenization as the Hugging Face fast tokenizer does it, from `tokenizer.json`, or built from
//! `vocab.txt` + `tokenizer_config.json` when there is none.
//!
//! Padding is always ours (per batch, in [`crate::Batch`]); truncation is always the caller's: a
//! `tokenizer.json` that carries its own padding or truncation (all-MiniLM-L6-v2's pads to 128) has both
//! switched off on load, so the command's `--max-length` is what applies.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, EncodeInput, TruncationDirection, TruncationParams};

use crate::error::{read_json, Error, Result};

/// Which sequence of a pair loses tokens when the pair is too long (as in `transformers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Truncation {
    /// Remove from the longer of the two, one token at a time.
    #[default]
    LongestFirst,
    OnlyFirst,
    OnlySecond,
}

impl std::str::FromStr for Truncation {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "longest_first" => Ok(Truncation::LongestFirst),
            "only_first" => Ok(Truncation::OnlyFirst),
            "only_second" => Ok(Truncation::OnlySecond),
            other => Err(format!(
                "unknown truncation `{other}` (expected longest_first, only_first or only_second)"
            )),
        }
    }
}

/// Which end of a too-long input loses tokens (text-embeddings-inference's `truncation_direction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TruncationSide {
    /// Keep the beginning: drop tokens from the end.
    #[default]
    Right,
    /// Keep the end: drop tokens from the beginning.
    Left,
}

/// One tokenized text (or text pair).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Encoding {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
    pub tokens: Vec<String>,
    /// Character (not byte) offsets into the input, `(0, 0)` for special tokens.
    pub offsets: Vec<(usize, usize)>,
    /// 1 for `[CLS]`, `[SEP]` and other added special tokens.
    pub special_tokens_mask: Vec<u32>,
    /// The index of the word each token comes from.
    pub word_ids: Vec<Option<u32>>,
    /// Whether tokens were dropped to fit the maximum length.
    pub truncated: bool,
}

/// Special tokens by role.
#[derive(Debug, Clone)]
pub struct SpecialTokens {
    pub pad: String,
    pub unk: String,
    pub cls: String,
    pub sep: String,
    pub mask: String,
}

impl Default for SpecialTokens {
    fn default() -> Self {
        SpecialTokens {
            pad: "[PAD]".into(),
            unk: "[UNK]".into(),
            cls: "[CLS]".into(),
            sep: "[SEP]".into(),
            mask: "[MASK]".into(),
        }
    }
}

/// A BERT tokenizer with fixed truncation settings.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    special: SpecialTokens,
    model_max_length: Option<usize>,
    /// Window length and stride for [`Tokenizer::encode_pair_windows`], and the tokenizer without
    /// truncation that encodes each text whole for it.
    windows: Option<(usize, usize, Box<tokenizers::Tokenizer>)>,
    /// The same truncation from the left ([`TruncationSide::Left`]), once truncation is set.
    from_left: Option<Box<tokenizers::Tokenizer>>,
}

/// `tokenizer_config.json`: the settings a vocabulary-only tokenizer needs.
#[derive(Debug, Deserialize)]
#[serde(default)]
struct TokenizerConfig {
    do_lower_case: bool,
    strip_accents: Option<bool>,
    tokenize_chinese_chars: bool,
    model_max_length: Option<f64>,
    pad_token: Option<TokenSpec>,
    unk_token: Option<TokenSpec>,
    cls_token: Option<TokenSpec>,
    sep_token: Option<TokenSpec>,
    mask_token: Option<TokenSpec>,
}

impl Default for TokenizerConfig {
    fn default() -> Self {
        TokenizerConfig {
            do_lower_case: true,
            strip_accents: None,
            tokenize_chinese_chars: true,
            model_max_length: None,
            pad_token: None,
            unk_token: None,
            cls_token: None,
            sep_token: None,
            mask_token: None,
        }
    }
}

/// A special token written as a string or as an `AddedToken` object.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum TokenSpec {
    Plain(String),
    Added { content: String },
}

impl TokenSpec {
    fn content(&self) -> &str {
        match self {
            TokenSpec::Plain(s) | TokenSpec::Added { content: s } => s,
        }
    }
}

impl Tokenizer {
    /// Loads the tokenizer of a model directory: `tokenizer.json` if present, else `vocab.txt` with the
    /// settings of `tokenizer_config.json`. Texts are not truncated until [`Tokenizer::with_truncation`].
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let config_path = dir.join("tokenizer_config.json");
        let config: TokenizerConfig = if config_path.exists() {
            read_json(&config_path)?
        } else {
            TokenizerConfig::default()
        };
        let json = dir.join("tokenizer.json");
        let vocab = dir.join("vocab.txt");
        let (mut inner, source) = if json.exists() {
            let t =
                tokenizers::Tokenizer::from_file(&json).map_err(|e| tokenizer_error(&json, e))?;
            (t, json)
        } else if vocab.exists() {
            (from_vocab(&vocab, &config)?, vocab)
        } else {
            return Err(Error::Tokenizer {
                path: dir.to_path_buf(),
                message: "no tokenizer.json or vocab.txt".into(),
            });
        };
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| tokenizer_error(&source, e))?;
        let special = special_tokens(&config);
        for token in [&special.pad, &special.cls, &special.sep] {
            if inner.token_to_id(token).is_none() {
                return Err(Error::Tokenizer {
                    path: source.clone(),
                    message: format!("special token `{token}` is not in the vocabulary"),
                });
            }
        }
        let model_max_length = config
            .model_max_length
            .filter(|&n| n > 0.0 && n < 1e9)
            .map(|n| n as usize);
        Ok(Tokenizer {
            inner,
            special,
            model_max_length,
            windows: None,
            from_left: None,
        })
    }

    /// Truncates every encoding to `max_length` tokens (special tokens included) with `strategy`.
    pub fn with_truncation(mut self, max_length: usize, strategy: Truncation) -> Result<Self> {
        let strategy = match strategy {
            Truncation::LongestFirst => tokenizers::TruncationStrategy::LongestFirst,
            Truncation::OnlyFirst => tokenizers::TruncationStrategy::OnlyFirst,
            Truncation::OnlySecond => tokenizers::TruncationStrategy::OnlySecond,
        };
        let params = |direction| TruncationParams {
            direction,
            max_length,
            strategy,
            stride: 0,
        };
        let mut from_left = self.inner.clone();
        from_left
            .with_truncation(Some(params(TruncationDirection::Left)))
            .map_err(|e| Error::Tokenize(e.to_string()))?;
        self.inner
            .with_truncation(Some(params(TruncationDirection::Right)))
            .map_err(|e| Error::Tokenize(e.to_string()))?;
        self.from_left = Some(Box::new(from_left));
        Ok(self)
    }

    /// Cuts long texts into overlapping windows of at most `max_length` tokens, `stride` tokens shared by
    /// neighbouring windows: a single text ([`Tokenizer::encode_windows`], for `--long-text chunk`) or
    /// the second text of a pair, the first whole in each window ([`Tokenizer::encode_pair_windows`],
    /// for question answering over long contexts). (Built here rather than with
    /// the `tokenizers` crate's overflowing encodings, which in 0.23.2 lose every window after the
    /// second for pairs.)
    pub fn with_windows(mut self, max_length: usize, stride: usize) -> Result<Self> {
        if stride >= max_length {
            return Err(Error::InvalidInput(format!(
                "a window stride of {stride} tokens needs windows longer than {max_length}"
            )));
        }
        let mut whole = self.inner.clone();
        whole
            .with_truncation(None)
            .map_err(|e| Error::Tokenize(e.to_string()))?;
        self.windows = Some((max_length, stride, Box::new(whole)));
        Ok(self)
    }

    /// Every window of a pair (see [`Tokenizer::with_windows`]): `[CLS] first [SEP] window [SEP]`, with
    /// character offsets into each text, as `transformers` makes them with `truncation="only_second"`
    /// and `return_overflowing_tokens`.
    pub fn encode_pair_windows(&self, first: &str, second: &str) -> Result<Vec<Encoding>> {
        let Some((max_length, stride, whole)) = &self.windows else {
            return Ok(vec![self.encode_pair(first, second)?]);
        };
        let (max_length, stride) = (*max_length, *stride);
        let encode = |text: &str| {
            whole
                .encode_char_offsets(text, false)
                .map_err(|e| Error::Tokenize(e.to_string()))
        };
        let (question, context) = (encode(first)?, encode(second)?);
        let room = max_length.saturating_sub(question.get_ids().len() + 3);
        let n = context.get_ids().len();
        if n > room && room <= stride {
            return Err(Error::InvalidInput(format!(
                "the question takes {} tokens: no room for context in windows of {max_length} \
                 tokens sharing {stride}",
                question.get_ids().len()
            )));
        }
        let n = context.get_ids().len();
        let mut windows = Vec::new();
        let mut from = 0;
        loop {
            let to = (from + room).min(n);
            windows.push(self.window(Some(&question), &context, from, to, n > room));
            if to == n {
                return Ok(windows);
            }
            from += room - stride;
        }
    }

    /// A long text as overlapping windows `[CLS] piece [SEP]` of at most the window length (see
    /// [`Tokenizer::with_windows`]), `stride` tokens shared by neighbours; a short text is one window.
    pub fn encode_windows(&self, text: &str) -> Result<Vec<Encoding>> {
        let Some((max_length, stride, whole)) = &self.windows else {
            return Ok(vec![self.encode(text)?]);
        };
        let e = whole
            .encode_char_offsets(text, false)
            .map_err(|e| Error::Tokenize(e.to_string()))?;
        let room = max_length.saturating_sub(2);
        let n = e.get_ids().len();
        if n > room && room <= *stride {
            return Err(Error::InvalidInput(format!(
                "windows of {max_length} tokens cannot share {stride}"
            )));
        }
        let mut windows = Vec::new();
        let mut from = 0;
        loop {
            let to = (from + room).min(n);
            windows.push(self.window(None, &e, from, to, n > room));
            if to == n {
                return Ok(windows);
            }
            from += room - stride;
        }
    }

    /// `[CLS] first [SEP] text[from..to] [SEP]` (token types 0 then 1), or `[CLS] text[from..to] [SEP]`.
    fn window(
        &self,
        first: Option<&tokenizers::Encoding>,
        text: &tokenizers::Encoding,
        from: usize,
        to: usize,
        truncated: bool,
    ) -> Encoding {
        let mut w = Encoding {
            truncated,
            ..Default::default()
        };
        let (cls, sep) = (&self.special.cls, &self.special.sep);
        let special = |w: &mut Encoding, token: &str, type_id: u32| {
            w.ids.push(self.token_to_id(token).unwrap_or(0));
            w.type_ids.push(type_id);
            w.tokens.push(token.to_string());
            w.offsets.push((0, 0));
            w.special_tokens_mask.push(1);
            w.word_ids.push(None);
        };
        let part = |w: &mut Encoding,
                    e: &tokenizers::Encoding,
                    range: std::ops::Range<usize>,
                    type_id: u32| {
            for i in range {
                w.ids.push(e.get_ids()[i]);
                w.type_ids.push(type_id);
                w.tokens.push(e.get_tokens()[i].clone());
                w.offsets.push(e.get_offsets()[i]);
                w.special_tokens_mask.push(0);
                w.word_ids.push(e.get_word_ids()[i]);
            }
        };
        special(&mut w, cls, 0);
        let type_id = match first {
            Some(first) => {
                part(&mut w, first, 0..first.get_ids().len(), 0);
                special(&mut w, sep, 0);
                1
            }
            None => 0,
        };
        part(&mut w, text, from..to, type_id);
        special(&mut w, sep, type_id);
        w
    }

    /// `model_max_length` of `tokenizer_config.json`, when it is a real limit.
    pub fn model_max_length(&self) -> Option<usize> {
        self.model_max_length
    }

    pub fn special_tokens(&self) -> &SpecialTokens {
        &self.special
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id used to pad batches.
    pub fn pad_id(&self) -> u32 {
        self.token_to_id(&self.special.pad).unwrap_or(0)
    }

    /// Tokenizes one text, with `[CLS]` and `[SEP]`.
    pub fn encode(&self, text: &str) -> Result<Encoding> {
        self.encode_input(text.into())
    }

    /// Tokenizes a text pair: `[CLS] a [SEP] b [SEP]`, with token types 0 then 1.
    pub fn encode_pair(&self, first: &str, second: &str) -> Result<Encoding> {
        self.encode_input((first, second).into())
    }

    /// [`Tokenizer::encode`], cutting a too-long text at `side`.
    pub fn encode_from(&self, text: &str, side: TruncationSide) -> Result<Encoding> {
        self.encode_with(self.side(side), text.into())
    }

    /// [`Tokenizer::encode_pair`], cutting a too-long pair at `side`.
    pub fn encode_pair_from(
        &self,
        first: &str,
        second: &str,
        side: TruncationSide,
    ) -> Result<Encoding> {
        self.encode_with(self.side(side), (first, second).into())
    }

    fn side(&self, side: TruncationSide) -> &tokenizers::Tokenizer {
        match (side, &self.from_left) {
            (TruncationSide::Left, Some(from_left)) => from_left,
            _ => &self.inner,
        }
    }

    /// Tokenizes text already split into words (NER data), with `[CLS]` and `[SEP]`; `word_ids` index
    /// `words`, and offsets are within each word.
    pub fn encode_words(&self, words: &[&str]) -> Result<Encoding> {
        let words: Vec<String> = words.iter().map(|w| w.to_string()).collect();
        self.encode_input(tokenizers::InputSequence::from(words).into())
    }

    fn encode_input(&self, input: EncodeInput) -> Result<Encoding> {
        self.encode_with(&self.inner, input)
    }

    fn encode_with(
        &self,
        tokenizer: &tokenizers::Tokenizer,
        input: EncodeInput,
    ) -> Result<Encoding> {
        let e = tokenizer
            .encode_char_offsets(input, true)
            .map_err(|e| Error::Tokenize(e.to_string()))?;
        Ok(convert(&e, !e.get_overflowing().is_empty()))
    }

    /// Token ids of a text without `[CLS]`/`[SEP]` and without truncation (for building pretraining
    /// instances).
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>> {
        let mut e = self
            .inner
            .encode(text, false)
            .map_err(|e| Error::Tokenize(e.to_string()))?;
        let mut ids = e.get_ids().to_vec();
        for overflow in e.take_overflowing() {
            ids.extend_from_slice(overflow.get_ids());
        }
        Ok(ids)
    }

    /// Joins tokens into text as the tokenizer's decoder does (`##` pieces glued to the previous
    /// token, spaces before punctuation cleaned up): `convert_tokens_to_string` in `transformers`.
    pub fn tokens_to_string(&self, tokens: &[String]) -> String {
        use tokenizers::Decoder;
        match self.inner.get_decoder() {
            Some(decoder) => decoder
                .decode(tokens.to_vec())
                .unwrap_or_else(|_| tokens.join(" ")),
            None => tokens.join(" ").replace(" ##", ""),
        }
    }

    /// Turns ids back into text, joining word pieces; `skip_special_tokens` drops `[CLS]`, `[MASK]`...
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| Error::Tokenize(e.to_string()))
    }
}

fn convert(e: &tokenizers::Encoding, truncated: bool) -> Encoding {
    Encoding {
        ids: e.get_ids().to_vec(),
        type_ids: e.get_type_ids().to_vec(),
        tokens: e.get_tokens().to_vec(),
        offsets: e.get_offsets().to_vec(),
        special_tokens_mask: e.get_special_tokens_mask().to_vec(),
        word_ids: e.get_word_ids().to_vec(),
        truncated,
    }
}

fn tokenizer_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Tokenizer {
        path: PathBuf::from(path),
        message: e.to_string(),
    }
}

fn special_tokens(config: &TokenizerConfig) -> SpecialTokens {
    let pick = |spec: &Option<TokenSpec>, default: String| {
        spec.as_ref().map_or(default, |s| s.content().to_string())
    };
    let d = SpecialTokens::default();
    SpecialTokens {
        pad: pick(&config.pad_token, d.pad),
        unk: pick(&config.unk_token, d.unk),
        cls: pick(&config.cls_token, d.cls),
        sep: pick(&config.sep_token, d.sep),
        mask: pick(&config.mask_token, d.mask),
    }
}

/// The fast BERT tokenizer `transformers` builds from a vocabulary: BERT normalizer, BERT pre-tokenizer,
/// WordPiece (`##` continuation, `[UNK]` for words over 100 characters), `[CLS] A [SEP] B [SEP]`.
fn from_vocab(vocab: &Path, config: &TokenizerConfig) -> Result<tokenizers::Tokenizer> {
    let special = special_tokens(config);
    let model = WordPiece::from_file(&vocab.to_string_lossy())
        .unk_token(special.unk.clone())
        .continuing_subword_prefix("##".into())
        .max_input_chars_per_word(100)
        .build()
        .map_err(|e| tokenizer_error(vocab, e))?;
    let id = |token: &str| {
        tokenizers::Model::token_to_id(&model, token).ok_or_else(|| {
            tokenizer_error(
                vocab,
                format!("special token `{token}` is not in the vocabulary"),
            )
        })
    };
    let (cls, sep) = (special.cls.clone(), special.sep.clone());
    let template = TemplateProcessing::builder()
        .try_single(format!("{cls} $A {sep}"))
        .and_then(|b| b.try_pair(format!("{cls} $A {sep} $B:1 {sep}:1")))
        .map_err(|e| tokenizer_error(vocab, e))?
        .special_tokens(vec![(cls.clone(), id(&cls)?), (sep.clone(), id(&sep)?)])
        .build()
        .map_err(|e| tokenizer_error(vocab, e))?;
    let normalizer = BertNormalizer::new(
        true,
        config.tokenize_chinese_chars,
        config.strip_accents,
        config.do_lower_case,
    );
    let mut tokenizer = tokenizers::Tokenizer::new(model);
    tokenizer
        .with_normalizer(Some(normalizer))
        .map_err(|e| tokenizer_error(vocab, e))?;
    tokenizer
        .with_pre_tokenizer(Some(BertPreTokenizer))
        .with_post_processor(Some(template))
        .with_decoder(Some(WordPieceDecoder::default()));
    let specials: Vec<AddedToken> = [
        &special.pad,
        &special.unk,
        &special.cls,
        &special.sep,
        &special.mask,
    ]
    .into_iter()
    .filter(|t| tokenizer.token_to_id(t).is_some())
    .map(|t| AddedToken::from(t.clone(), true))
    .collect();
    tokenizer
        .add_special_tokens(specials)
        .map_err(|e| tokenizer_error(vocab, e))?;
    Ok(tokenizer)
}
