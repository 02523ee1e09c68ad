//! Making a student encoder out of a bigger checkpoint before distilling into it: every k-th encoder
//! layer (DistilBERT's initialisation) and a vocabulary cut to the pieces the training text uses.
//! The cut matters for small students: all-MiniLM-L6-v2's 30,522 x 384 token embeddings are half its
//! weights, and most of those pieces never occur in the text a student is made for.
//!
//! A cut vocabulary keeps the special tokens, the most frequent pieces, and every single character
//! (as a word start, `x`, and inside a word, `##x`) that the used pieces are made of, so every word
//! of the training text still splits into pieces the student knows; the kept pieces keep their
//! embedding rows and their order.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde_json::Value;

use crate::bitext::sentences;
use crate::error::{Error, Result};
use crate::files::safetensors_write::save_safetensors;
use crate::files::write::write_file;
use crate::finetune::DEFAULT_MAX_LENGTH;
use crate::pooling::EmbeddingConfig;
use crate::tokenizer::Tokenizer;
use crate::weights::checkpoint::Checkpoint;
use crate::weights::config::BertConfig;
use crate::weights::save::{copy_tokenizer, SavedConfig};

/// How to make a student from a checkpoint.
#[derive(Debug, Clone)]
pub struct StudentRecipe {
    /// Keep encoder layers 0, k, 2k, ... (1 keeps them all).
    pub keep_layers_every: usize,
    /// Cut the vocabulary to at most this many pieces, chosen by their use in `texts` (fewer when
    /// the texts use fewer).
    pub vocab_size: Option<usize>,
    /// Text files, one sentence a line, whose pieces the cut vocabulary keeps.
    pub texts: Vec<PathBuf>,
}

/// What [`make_student`] made.
#[derive(Debug, Clone)]
pub struct Student {
    pub config: BertConfig,
    /// The vocabulary's size before a cut.
    pub vocab_before: usize,
}

/// Writes into `out` a student of the checkpoint in `from` made by `recipe`: its kept layers
/// renumbered, its embeddings (cut with the vocabulary), pooler, tokenizer and sentence-transformers
/// pooling.
pub fn make_student(from: &Path, recipe: &StudentRecipe, out: &Path) -> Result<Student> {
    let mut config = BertConfig::from_file(&from.join("config.json"))?;
    let every = recipe.keep_layers_every;
    if every == 0 || every > config.num_hidden_layers {
        return Err(Error::InvalidInput(format!(
            "--keep-layers-every {every}: {} has {} layers; give 1 to {}",
            from.display(),
            config.num_hidden_layers,
            config.num_hidden_layers
        )));
    }
    let vocab_before = config.vocab_size;
    let cut = match recipe.vocab_size {
        Some(size) => Some(VocabCut::new(from, size, &recipe.texts)?),
        None => None,
    };
    let checkpoint = Checkpoint::open(from)?;
    let mut tensors = BTreeMap::new();
    for name in checkpoint.names() {
        let renamed = match layer_of(name) {
            Some((layer, _)) if layer % every != 0 => continue,
            Some((layer, rest)) => {
                let prefix = &name[..name.find(LAYER).unwrap_or(0)];
                format!("{prefix}{LAYER}{}{rest}", layer / every)
            }
            None => name.to_string(),
        };
        if let Some(tensor) = checkpoint.load(name, &Device::Cpu)? {
            let tensor = match &cut {
                Some(cut) if per_piece(name, &tensor, vocab_before) => cut.rows(&tensor)?,
                _ => tensor,
            };
            tensors.insert(renamed, tensor);
        }
    }
    config.num_hidden_layers = config.num_hidden_layers.div_ceil(every);
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    match &cut {
        Some(cut) => {
            config.vocab_size = cut.kept.len();
            config.pad_token_id = Some(cut.new_id(&cut.pad)? as usize);
            cut.write_tokenizer(from, out)?;
        }
        None => copy_tokenizer(from, out)?,
    }
    save_safetensors(&out.join("model.safetensors"), &tensors)?;
    write_file(
        &out.join("config.json"),
        config.config_json("BertModel")?.as_bytes(),
    )?;
    let embedding = EmbeddingConfig::from_dir(from)?;
    let max_length = embedding.max_seq_length.unwrap_or(DEFAULT_MAX_LENGTH);
    crate::pooling::write_sentence_transformers(
        out,
        embedding.pooling,
        embedding.normalize,
        max_length,
        config.hidden_size,
        false,
    )?;
    Ok(Student {
        config,
        vocab_before,
    })
}

const LAYER: &str = "encoder.layer.";

/// The layer number of a weight named `...encoder.layer.{i}.rest`, and `.rest`.
fn layer_of(name: &str) -> Option<(usize, &str)> {
    let after = &name[name.find(LAYER)? + LAYER.len()..];
    let dot = after.find('.')?;
    Some((after[..dot].parse().ok()?, &after[dot..]))
}

/// The pieces a cut vocabulary keeps, in their old order.
struct VocabCut {
    /// Old ids of the kept pieces, ascending: new id `i` is old id `kept[i]`.
    kept: Vec<u32>,
    /// Every old piece's text, by old id.
    pieces: Vec<String>,
    new_ids: HashMap<String, u32>,
    pad: String,
}

impl VocabCut {
    fn new(from: &Path, size: usize, texts: &[PathBuf]) -> Result<Self> {
        let tokenizer = Tokenizer::from_dir(from)?;
        let pieces: Vec<String> = (0..tokenizer.vocab_size() as u32)
            .map(|id| tokenizer.id_to_token(id).unwrap_or_default())
            .collect();
        let counts = piece_counts(&tokenizer, texts)?;
        let (must, single_characters) = must_keep(&tokenizer, &pieces, &counts);
        let needed = must.iter().filter(|&&m| m).count();
        if size < needed {
            return Err(Error::InvalidInput(format!(
                "--vocab-size {size}: the training text needs at least {needed} pieces (the special \
                 tokens and the {single_characters} single characters its words are made of)"
            )));
        }
        let mut by_use: Vec<usize> = (0..pieces.len())
            .filter(|&id| !must[id] && counts[id] > 0)
            .collect();
        by_use.sort_by_key(|&id| (std::cmp::Reverse(counts[id]), id));
        let mut keep = must;
        for &id in by_use.iter().take(size - needed) {
            keep[id] = true;
        }
        let kept: Vec<u32> = (0..pieces.len() as u32)
            .filter(|&id| keep[id as usize])
            .collect();
        let new_ids = (kept.iter().enumerate())
            .map(|(new, &old)| (pieces[old as usize].clone(), new as u32))
            .collect();
        Ok(VocabCut {
            kept,
            pieces,
            new_ids,
            pad: tokenizer.special_tokens().pad.clone(),
        })
    }

    fn rows(&self, tensor: &Tensor) -> Result<Tensor> {
        let ids = Tensor::new(self.kept.as_slice(), tensor.device())?;
        Ok(tensor.index_select(&ids, 0)?)
    }

    fn new_id(&self, piece: &str) -> Result<u32> {
        self.new_ids.get(piece).copied().ok_or_else(|| {
            Error::InvalidInput(format!("the cut vocabulary lost the special token {piece}"))
        })
    }

    /// `vocab.txt`, and `tokenizer.json` / `tokenizer_config.json` with every id renumbered.
    fn write_tokenizer(&self, from: &Path, out: &Path) -> Result<()> {
        copy_tokenizer(from, out)?;
        let text: String = (self.kept.iter())
            .map(|&id| format!("{}\n", self.pieces[id as usize]))
            .collect();
        write_file(&out.join("vocab.txt"), text.as_bytes())?;
        let path = from.join("tokenizer.json");
        if path.exists() {
            let mut json = read_json(&path)?;
            self.renumber_tokenizer(&mut json)?;
            write_file(&out.join("tokenizer.json"), json.to_string().as_bytes())?;
        }
        let path = from.join("tokenizer_config.json");
        if path.exists() {
            let mut json = read_json(&path)?;
            if let Some(Value::Object(decoder)) = json.get_mut("added_tokens_decoder") {
                let old = std::mem::take(decoder);
                for (_, token) in old {
                    let content = token["content"].as_str().unwrap_or_default();
                    if let Some(id) = self.new_ids.get(content) {
                        decoder.insert(id.to_string(), token);
                    }
                }
            }
            write_file(
                &out.join("tokenizer_config.json"),
                format!("{json:#}\n").as_bytes(),
            )?;
        }
        Ok(())
    }

    fn renumber_tokenizer(&self, json: &mut Value) -> Result<()> {
        let vocab: serde_json::Map<String, Value> = (self.kept.iter().enumerate())
            .map(|(new, &old)| (self.pieces[old as usize].clone(), Value::from(new)))
            .collect();
        json["model"]["vocab"] = Value::Object(vocab);
        if let Some(Value::Array(added)) = json.get_mut("added_tokens") {
            added.retain(|t| {
                self.new_ids
                    .contains_key(t["content"].as_str().unwrap_or(""))
            });
            for token in added {
                let content = token["content"].as_str().unwrap_or_default().to_string();
                token["id"] = self.new_id(&content)?.into();
            }
        }
        let processor = &mut json["post_processor"];
        if let Some(Value::Object(specials)) = processor.get_mut("special_tokens") {
            for special in specials.values_mut() {
                let tokens: Vec<String> = serde_json::from_value(special["tokens"].clone())
                    .map_err(|e| Error::InvalidInput(format!("tokenizer.json: {e}")))?;
                let ids = (tokens.iter().map(|t| self.new_id(t))).collect::<Result<Vec<_>>>()?;
                special["ids"] = ids.into();
            }
        }
        for key in ["cls", "sep"] {
            if let Some(Value::Array(pair)) = processor.get_mut(key) {
                let token = pair[0].as_str().unwrap_or_default().to_string();
                pair[1] = self.new_id(&token)?.into();
            }
        }
        if let Some(padding) = json.get_mut("padding").filter(|p| p.is_object()) {
            let token = padding["pad_token"]
                .as_str()
                .unwrap_or(&self.pad)
                .to_string();
            padding["pad_id"] = self.new_id(&token)?.into();
        }
        Ok(())
    }
}

/// Whether `tensor` has a row per piece: the token embeddings, an MLM head's decoder and bias.
fn per_piece(name: &str, tensor: &Tensor, vocab: usize) -> bool {
    let named = name.contains("word_embeddings") || name.starts_with("cls.predictions");
    named && tensor.dims().first() == Some(&vocab)
}

/// The pieces a cut must keep, by id: the single characters the used pieces are made of (their
/// number is returned too) and the special tokens.
fn must_keep(tokenizer: &Tokenizer, pieces: &[String], counts: &[u64]) -> (Vec<bool>, usize) {
    let ids: HashMap<&str, usize> = (pieces.iter().enumerate())
        .map(|(id, p)| (p.as_str(), id))
        .collect();
    let mut must = vec![false; pieces.len()];
    let used = (pieces.iter().enumerate()).filter(|(id, _)| counts[*id] > 0);
    for character in used.flat_map(|(_, piece)| characters(piece)) {
        if let Some(&id) = ids.get(character.as_str()) {
            must[id] = true;
        }
    }
    let single_characters = must.iter().filter(|&&m| m).count();
    let special = tokenizer.special_tokens();
    for token in [
        &special.pad,
        &special.unk,
        &special.cls,
        &special.sep,
        &special.mask,
    ] {
        if let Some(id) = tokenizer.token_to_id(token) {
            must[id as usize] = true;
        }
    }
    (must, single_characters)
}

fn read_json(path: &Path) -> Result<Value> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::InvalidInput(format!("{}: {e}", path.display())))
}

/// How often each piece occurs in the sentences of `texts`.
fn piece_counts(tokenizer: &Tokenizer, texts: &[PathBuf]) -> Result<Vec<u64>> {
    let mut counts = vec![0u64; tokenizer.vocab_size()];
    for path in texts {
        for sentence in sentences::read(path)? {
            for id in tokenizer.encode_plain(&sentence.text)? {
                counts[id as usize] += 1;
            }
        }
    }
    Ok(counts)
}

/// The single-character pieces a piece is made of: `"word"` -> `w`, `##o`, `##r`, `##d`;
/// `"##ing"` -> `##i`, `##n`, `##g`.
fn characters(piece: &str) -> Vec<String> {
    let (inner, rest) = match piece.strip_prefix("##") {
        Some(rest) => (true, rest),
        None => (false, piece),
    };
    (rest.chars().enumerate())
        .map(|(i, c)| {
            if inner || i > 0 {
                format!("##{c}")
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_split_into_word_start_and_inner_characters() {
        assert_eq!(characters("word"), ["w", "##o", "##r", "##d"]);
        assert_eq!(characters("##ing"), ["##i", "##n", "##g"]);
        assert_eq!(characters("é"), ["é"]);
    }
}
