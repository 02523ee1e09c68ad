//! Training a WordPiece vocabulary from a corpus (the `tokenizers` trainer), written as a BERT tokenizer
//! `transformers` loads: `vocab.txt`, `tokenizer.json` and `tokenizer_config.json`.

use std::path::Path;

use tokenizers::models::wordpiece::{WordPiece, WordPieceTrainer};
use tokenizers::models::{ModelWrapper, TrainerWrapper};
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Model};

use crate::error::{Error, Result};
use crate::files::write::write_file;
use crate::pretraining::Corpus;

/// BERT's special tokens, in the order they take the first ids.
pub const SPECIAL_TOKENS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

/// What vocabulary to train.
#[derive(Debug, Clone)]
pub struct VocabOptions {
    pub vocab_size: usize,
    pub lowercase: bool,
    /// Pieces seen fewer times than this are left out.
    pub min_frequency: u64,
    /// Replace tokenizer files already in the output directory.
    pub overwrite: bool,
}

/// The files a vocabulary is written as.
const FILES: [&str; 3] = ["vocab.txt", "tokenizer.json", "tokenizer_config.json"];

/// Trains a WordPiece vocabulary on every sentence of `corpus` and writes the tokenizer files to `out`.
/// Returns the vocabulary size reached.
pub fn train_vocab(corpus: &Corpus, options: &VocabOptions, out: &Path) -> Result<usize> {
    let existing: Vec<&str> = FILES.into_iter().filter(|f| out.join(f).exists()).collect();
    if !existing.is_empty() && !options.overwrite {
        return Err(Error::InvalidInput(format!(
            "{} already holds a tokenizer ({}); use --overwrite to replace it",
            out.display(),
            existing.join(", ")
        )));
    }
    if options.vocab_size < SPECIAL_TOKENS.len() + 1 {
        return Err(Error::InvalidInput(format!(
            "--vocab-size {} is too small",
            options.vocab_size
        )));
    }
    let special: Vec<AddedToken> = SPECIAL_TOKENS
        .iter()
        .map(|t| AddedToken::from(*t, true))
        .collect();
    let trainer = WordPieceTrainer::builder()
        .vocab_size(options.vocab_size)
        .min_frequency(options.min_frequency)
        .special_tokens(special.clone())
        .continuing_subword_prefix("##".into())
        .show_progress(false)
        .build();
    let mut trainer = TrainerWrapper::WordPieceTrainer(trainer);
    let mut tokenizer = tokenizers::Tokenizer::new(ModelWrapper::WordPiece(WordPiece::default()));
    tokenizer
        .with_normalizer(Some(BertNormalizer::new(
            true,
            true,
            None,
            options.lowercase,
        )))
        .map_err(|e| Error::Tokenize(e.to_string()))?;
    tokenizer.with_pre_tokenizer(Some(BertPreTokenizer));
    let mut failure = None;
    let sentences = corpus.documents().flat_map(|doc| match doc {
        Ok(sentences) => sentences,
        Err(e) => {
            failure.get_or_insert(e);
            Vec::new()
        }
    });
    tokenizer
        .train(&mut trainer, sentences)
        .map_err(|e| Error::Tokenize(format!("training the vocabulary: {e}")))?;
    if let Some(e) = failure {
        return Err(e);
    }
    let id = |token: &str| tokenizer.token_to_id(token).unwrap_or_default();
    let template = TemplateProcessing::builder()
        .try_single("[CLS] $A [SEP]")
        .and_then(|b| b.try_pair("[CLS] $A [SEP] $B:1 [SEP]:1"))
        .map_err(|e| Error::Tokenize(e.to_string()))?
        .special_tokens(vec![("[CLS]", id("[CLS]")), ("[SEP]", id("[SEP]"))])
        .build()
        .map_err(|e| Error::Tokenize(e.to_string()))?;
    tokenizer
        .with_post_processor(Some(template))
        .with_decoder(Some(tokenizers::decoders::wordpiece::WordPiece::default()));
    tokenizer
        .add_special_tokens(special)
        .map_err(|e| Error::Tokenize(e.to_string()))?;
    write_tokenizer(&tokenizer, options.lowercase, out)?;
    Ok(tokenizer.get_vocab_size(false))
}

fn write_tokenizer(tokenizer: &tokenizers::Tokenizer, lowercase: bool, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let mut vocab: Vec<(String, u32)> = tokenizer.get_model().get_vocab().into_iter().collect();
    vocab.sort_by_key(|(_, id)| *id);
    let text: String = vocab
        .iter()
        .map(|(token, _)| format!("{token}\n"))
        .collect();
    write_file(&out.join("vocab.txt"), text.as_bytes())?;
    let json = tokenizer
        .to_string(true)
        .map_err(|e| Error::Tokenize(e.to_string()))?;
    write_file(&out.join("tokenizer.json"), json.as_bytes())?;
    let config = serde_json::json!({
        "tokenizer_class": "BertTokenizer",
        "do_lower_case": lowercase,
        "strip_accents": null,
        "tokenize_chinese_chars": true,
        "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
        "cls_token": "[CLS]", "mask_token": "[MASK]",
    });
    write_file(
        &out.join("tokenizer_config.json"),
        format!("{config:#}\n").as_bytes(),
    )
}
