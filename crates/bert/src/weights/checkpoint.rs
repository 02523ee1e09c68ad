//! Reading weights from a checkpoint directory: `model.safetensors` (read tensor by tensor), sharded safetensors
//! with `model.safetensors.index.json`, or a zip-format `pytorch_model.bin`.
//!
//! Names are mapped once, on open, to the canonical `transformers` layout (`bert.` prefix, LayerNorm
//! `weight`/`bias`), so the model code asks for one name whatever the file's vintage. Tensors are read
//! lazily: only the ones a model asks for are converted.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::pickle::PthTensors;
use candle_core::{Device, Tensor};

use crate::cache::{aligned_copy, cache_dir};
use crate::error::{read_json, Error, Result};
use crate::files::safetensors::{MappedF32, SafetensorsFiles};
use crate::kernels::cpu;

/// Where one checkpoint's tensors live.
enum Store {
    Safetensors(SafetensorsFiles),
    Pth(PthTensors),
    /// Other checkpoints' tensors under new names; a name in the file is `{part}/{its name there}`.
    Parts(Vec<Checkpoint>),
}

/// The tensors of a checkpoint, under canonical names.
pub struct Checkpoint {
    store: Store,
    /// Files read, for messages.
    files: Vec<PathBuf>,
    /// canonical name -> name in the file
    names: BTreeMap<String, String>,
}

impl Checkpoint {
    /// Opens the weights in `dir`, preferring safetensors (single, then sharded) over `pytorch_model.bin`.
    pub fn open(dir: &Path) -> Result<Self> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        let pth = dir.join("pytorch_model.bin");
        if single.exists() {
            Self::open_safetensors(vec![single])
        } else if index.exists() {
            let names = shard_names(&index)?;
            Self::open_safetensors(names.iter().map(|f| dir.join(f)).collect())
        } else if pth.exists() {
            Self::open_pth(pth)
        } else {
            Err(Error::checkpoint(
                dir,
                "no weights found: expected model.safetensors, model.safetensors.index.json or pytorch_model.bin",
            ))
        }
    }

    /// As [`Checkpoint::open`], for f32 inference: safetensors files whose f32 tensors are not 64-byte
    /// aligned are read from their aligned copy in the cache ([`crate::cache::aligned`]), written on first
    /// use, so that the weights are used in place (only where they are: see
    /// [`crate::weights::linear_weights`]).
    pub fn open_for_f32_inference(dir: &Path) -> Result<Self> {
        let checkpoint = Self::open(dir)?;
        if !cpu::fast_gemm_available() {
            return Ok(checkpoint);
        }
        let (Store::Safetensors(files), Some(cache)) = (&checkpoint.store, cache_dir()) else {
            return Ok(checkpoint);
        };
        let Some(copy) = aligned_copy(&checkpoint.files, files, &cache) else {
            return Ok(checkpoint);
        };
        match SafetensorsFiles::open(std::slice::from_ref(&copy)) {
            Ok(store) => Ok(Checkpoint {
                store: Store::Safetensors(store),
                ..checkpoint
            }),
            // A damaged copy (another process writing it, a full disk): the original serves.
            Err(_) => Ok(checkpoint),
        }
    }

    fn open_safetensors(files: Vec<PathBuf>) -> Result<Self> {
        for file in &files {
            if !file.exists() {
                return Err(Error::checkpoint(
                    file,
                    "shard listed in the index is missing",
                ));
            }
        }
        let store = SafetensorsFiles::open(&files)?;
        let raw: Vec<String> = store.names().map(String::from).collect();
        Ok(Checkpoint {
            store: Store::Safetensors(store),
            files,
            names: canonical_names(raw),
        })
    }

    fn open_pth(file: PathBuf) -> Result<Self> {
        let store = PthTensors::new(&file, None).map_err(|e| {
            Error::checkpoint(
                &file,
                format!("not a readable zip-format PyTorch checkpoint: {e}"),
            )
        })?;
        let raw: Vec<String> = store.tensor_infos().keys().cloned().collect();
        Ok(Checkpoint {
            store: Store::Pth(store),
            files: vec![file],
            names: canonical_names(raw),
        })
    }

    /// The tensors of an encoder-decoder warm-started from BERT checkpoints (Rothe et al.): `encoder.*`
    /// is `encoder`'s BERT (`bert.*`), `decoder.bert.*` and `decoder.cls.*` are `decoder`'s `bert.*`
    /// and `cls.*` (its masked-LM head predicts the next token). The two may be the same checkpoint.
    pub fn warm_start(encoder: Checkpoint, decoder: Checkpoint) -> Self {
        let mut names = BTreeMap::new();
        for name in encoder.names() {
            if let Some(rest) = name.strip_prefix("bert.") {
                names.insert(format!("encoder.{rest}"), format!("0/{name}"));
            }
        }
        for name in decoder.names() {
            let renamed = match name.strip_prefix("bert.") {
                Some(rest) => format!("decoder.bert.{rest}"),
                None => format!("decoder.{name}"),
            };
            names.insert(renamed, format!("1/{name}"));
        }
        let mut files = encoder.files.clone();
        files.extend(
            decoder
                .files
                .iter()
                .filter(|f| !encoder.files.contains(f))
                .cloned(),
        );
        Checkpoint {
            store: Store::Parts(vec![encoder, decoder]),
            files,
            names,
        }
    }

    /// A short description of the files, for error messages.
    pub fn describe(&self) -> String {
        match self.files.as_slice() {
            [one] => one.display().to_string(),
            many => format!("{} shards in {}", many.len(), parent_of(&many[0]).display()),
        }
    }

    /// The files the weights are read from.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Canonical names of every tensor in the checkpoint.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.keys().map(|s| s.as_str())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.names.contains_key(name)
    }

    /// An f32 tensor by canonical name in place in a memory-mapped safetensors file (see
    /// [`SafetensorsFiles::mapped_f32`]); `None` when absent or not mappable.
    pub fn mapped_f32(&self, name: &str) -> Option<MappedF32> {
        let raw = self.names.get(name)?;
        match &self.store {
            Store::Safetensors(st) => st.mapped_f32(raw),
            Store::Pth(_) => None,
            Store::Parts(parts) => {
                let (part, name) = part_name(raw)?;
                parts.get(part)?.mapped_f32(name)
            }
        }
    }

    /// Reads one tensor by canonical name (`None` when absent).
    pub fn load(&self, name: &str, device: &Device) -> Result<Option<Tensor>> {
        let Some(raw) = self.names.get(name) else {
            return Ok(None);
        };
        let tensor = match &self.store {
            Store::Safetensors(st) => return st.load(raw, device).map(Some),
            Store::Parts(parts) => {
                let found = part_name(raw).and_then(|(part, name)| Some((parts.get(part)?, name)));
                return match found {
                    Some((part, name)) => part.load(name, device),
                    None => Ok(None),
                };
            }
            Store::Pth(pth) => pth
                .get(raw)
                .and_then(|t| t.ok_or_else(|| candle_core::Error::Msg("absent".into())))
                .and_then(|t| t.to_device(device)),
        };
        tensor
            .map(Some)
            .map_err(|e| Error::checkpoint(self.describe(), format!("tensor `{raw}`: {e}")))
    }
}

/// `{part}/{name}`: the part's index and the name there.
fn part_name(raw: &str) -> Option<(usize, &str)> {
    let (part, name) = raw.split_once('/')?;
    Some((part.parse().ok()?, name))
}

fn parent_of(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("."))
}

/// The shard file names listed by a `model.safetensors.index.json`, in order, without repeats.
pub fn shard_names(index: &Path) -> Result<Vec<String>> {
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: HashMap<String, String>,
    }
    let index_data: Index = read_json(index)?;
    let mut files: Vec<String> = index_data.weight_map.into_values().collect();
    files.sort();
    files.dedup();
    Ok(files)
}

/// Maps file names to canonical ones: legacy `gamma`/`beta` become `weight`/`bias`, encoder weights get the
/// `bert.` prefix when the file has none (a bare `BertModel`), buffers such as `position_ids` are dropped,
/// and the masked-LM bias is found under either of its two names.
fn canonical_names(raw: Vec<String>) -> BTreeMap<String, String> {
    // An encoder-decoder's `encoder.*` is its encoder, not a prefix-less BERT's layer stack.
    let encoder_decoder = raw.iter().any(|n| n.starts_with("decoder.bert."));
    let has_prefix = encoder_decoder || raw.iter().any(|n| n.starts_with("bert."));
    let mut names = BTreeMap::new();
    for name in raw {
        if name.ends_with("position_ids") {
            continue;
        }
        let mut canonical = name.clone();
        if let Some(stem) = canonical.strip_suffix(".gamma") {
            canonical = format!("{stem}.weight");
        } else if let Some(stem) = canonical.strip_suffix(".beta") {
            canonical = format!("{stem}.bias");
        }
        let encoder_part = ["embeddings.", "encoder.", "pooler."]
            .iter()
            .any(|p| canonical.starts_with(p));
        if !has_prefix && encoder_part {
            canonical = format!("bert.{canonical}");
        }
        names.insert(canonical, name);
    }
    for head in ["cls.predictions", "decoder.cls.predictions"] {
        let (bias, decoder_bias) = (format!("{head}.bias"), format!("{head}.decoder.bias"));
        if !names.contains_key(&bias) {
            if let Some(raw) = names.get(&decoder_bias).cloned() {
                names.insert(bias, raw);
            }
        }
        // The decoder bias is the same parameter as `cls.predictions.bias`.
        names.remove(&decoder_bias);
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_names_cover_legacy_layouts() {
        let raw = [
            "embeddings.LayerNorm.gamma",
            "encoder.layer.0.output.LayerNorm.beta",
            "embeddings.position_ids",
            "cls.predictions.decoder.bias",
        ];
        let names = canonical_names(raw.iter().map(|s| s.to_string()).collect());
        let keys: Vec<&str> = names.keys().map(|s| s.as_str()).collect();
        assert_eq!(
            keys,
            [
                "bert.embeddings.LayerNorm.weight",
                "bert.encoder.layer.0.output.LayerNorm.bias",
                "cls.predictions.bias"
            ]
        );
        assert_eq!(
            names["cls.predictions.bias"],
            "cls.predictions.decoder.bias"
        );
    }
}
