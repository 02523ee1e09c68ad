//! Sentence embeddings from token states: `mean`, `cls`, `max` (and `mean_sqrt_len`) pooling with
//! optional L2 normalisation, and the defaults a sentence-transformers checkpoint declares in
//! `modules.json`, `1_Pooling/config.json`, `sentence_bert_config.json` and
//! `config_sentence_transformers.json` (its named prompts), with the `Dense` projections some put
//! after pooling ([`dense`]).

pub mod dense;

use std::collections::BTreeMap;

use std::path::Path;

use candle_core::{DType, Tensor, D};
use serde::Deserialize;

use crate::error::{read_json, Error, Result};
use crate::files::write::write_file;
use dense::DenseConfig;

/// Where a projection written by [`write_sentence_transformers`] lives in the model's directory.
pub const PROJECTION_DIR: &str = "2_Dense";

/// How token states become one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// The `[CLS]` token's state.
    Cls,
    /// The mean over real (unpadded) tokens.
    Mean,
    /// The element-wise maximum over real tokens.
    Max,
    /// The sum over real tokens divided by the square root of their number.
    MeanSqrtLen,
}

/// Scales a vector to unit length (as `torch.nn.functional.normalize`, eps 1e-12).
pub fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= norm);
}

impl Pooling {
    /// The name `FromStr` reads.
    pub fn name(self) -> &'static str {
        match self {
            Pooling::Cls => "cls",
            Pooling::Mean => "mean",
            Pooling::Max => "max",
            Pooling::MeanSqrtLen => "mean_sqrt_len",
        }
    }
}

impl std::str::FromStr for Pooling {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "cls" => Ok(Pooling::Cls),
            "mean" => Ok(Pooling::Mean),
            "max" => Ok(Pooling::Max),
            "mean_sqrt_len" => Ok(Pooling::MeanSqrtLen),
            other => Err(format!(
                "unknown pooling `{other}` (expected mean, cls, max or mean_sqrt_len)"
            )),
        }
    }
}

/// Pooling and normalisation, with the maximum sequence length sentence-transformers uses.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingConfig {
    pub pooling: Pooling,
    pub normalize: bool,
    /// `max_seq_length` of `sentence_bert_config.json`.
    pub max_seq_length: Option<usize>,
    /// Texts put before an input by name (`"query": "query: "`), from
    /// `config_sentence_transformers.json`.
    pub prompts: BTreeMap<String, String>,
    /// The prompt used when a request names none.
    pub default_prompt_name: Option<String>,
    /// `Dense` modules after pooling, in order (before normalisation).
    pub dense: Vec<DenseConfig>,
}

impl Default for EmbeddingConfig {
    /// Without sentence-transformers files: mean pooling, no normalisation.
    fn default() -> Self {
        EmbeddingConfig {
            pooling: Pooling::Mean,
            normalize: false,
            max_seq_length: None,
            prompts: BTreeMap::new(),
            default_prompt_name: None,
            dense: Vec::new(),
        }
    }
}

#[derive(Deserialize)]
struct Module {
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PoolingFile {
    pooling_mode_cls_token: bool,
    pooling_mode_mean_tokens: bool,
    pooling_mode_max_tokens: bool,
    pooling_mode_mean_sqrt_len_tokens: bool,
}

#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct SentenceTransformersConfig {
    prompts: BTreeMap<String, String>,
    default_prompt_name: Option<String>,
}

impl EmbeddingConfig {
    /// Reads the sentence-transformers files of `dir`, if it has them; the default otherwise.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let mut config = EmbeddingConfig::default();
        let prompts_path = dir.join("config_sentence_transformers.json");
        if prompts_path.exists() {
            let file: SentenceTransformersConfig = read_json(&prompts_path)?;
            if let Some(name) = &file.default_prompt_name {
                if !file.prompts.contains_key(name) {
                    return Err(Error::config(
                        &prompts_path,
                        "default_prompt_name",
                        format!("`{name}` is not one of `prompts`"),
                    ));
                }
            }
            (config.prompts, config.default_prompt_name) = (file.prompts, file.default_prompt_name);
        }
        let modules_path = dir.join("modules.json");
        if !modules_path.exists() {
            return Ok(config);
        }
        let modules: Vec<Module> = read_json(&modules_path)?;
        for module in &modules {
            let kind = module.kind.rsplit('.').next().unwrap_or_default();
            match kind {
                "Transformer" => {}
                "Pooling" => {
                    config.pooling = read_pooling(&dir.join(&module.path).join("config.json"))?
                }
                "Normalize" => config.normalize = true,
                "Dense" => config
                    .dense
                    .push(DenseConfig::read(&dir.join(&module.path))?),
                _ => {
                    return Err(Error::config(
                        &modules_path,
                        "type",
                        format!(
                            "sentence-transformers module `{}` is not supported",
                            module.kind
                        ),
                    ))
                }
            }
        }
        let st_config = dir.join("sentence_bert_config.json");
        if st_config.exists() {
            config.max_seq_length = read_json::<SentenceBertConfig>(&st_config)?.max_seq_length;
        }
        Ok(config)
    }
}

fn read_pooling(path: &Path) -> Result<Pooling> {
    let file: PoolingFile = read_json(path)?;
    let modes = [
        (file.pooling_mode_cls_token, Pooling::Cls),
        (file.pooling_mode_mean_tokens, Pooling::Mean),
        (file.pooling_mode_max_tokens, Pooling::Max),
        (file.pooling_mode_mean_sqrt_len_tokens, Pooling::MeanSqrtLen),
    ];
    let chosen: Vec<Pooling> = modes
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, p)| *p)
        .collect();
    match chosen.as_slice() {
        [one] => Ok(*one),
        _ => Err(Error::config(
            path,
            "pooling_mode_*",
            "exactly one pooling mode must be set (combined modes are not supported)",
        )),
    }
}

/// Writes the sentence-transformers modules that make a BERT checkpoint directory a sentence
/// encoder: `modules.json` (Transformer, Pooling, the `Dense` in [`PROJECTION_DIR`] when `projection`
/// (its weights written apart, by [`dense::write_projection`]), and Normalize when `normalize`),
/// `sentence_bert_config.json` and `1_Pooling/config.json` for `dim`-wide token states.
pub fn write_sentence_transformers(
    dir: &Path,
    pooling: Pooling,
    normalize: bool,
    max_seq_length: usize,
    dim: usize,
    projection: bool,
) -> Result<()> {
    let module = |idx: usize, path: &str, kind: &str| {
        serde_json::json!({"idx": idx, "name": idx.to_string(), "path": path,
                           "type": format!("sentence_transformers.models.{kind}")})
    };
    let mut modules = vec![
        module(0, "", "Transformer"),
        module(1, "1_Pooling", "Pooling"),
    ];
    if projection {
        modules.push(module(2, PROJECTION_DIR, "Dense"));
    }
    if normalize {
        let path = format!("{}_Normalize", modules.len());
        modules.push(module(modules.len(), &path, "Normalize"));
        std::fs::create_dir_all(dir.join(&path)).map_err(|e| Error::io(dir, e))?;
    }
    let pooling_config = serde_json::json!({
        "word_embedding_dimension": dim,
        "pooling_mode_cls_token": pooling == Pooling::Cls,
        "pooling_mode_mean_tokens": pooling == Pooling::Mean,
        "pooling_mode_max_tokens": pooling == Pooling::Max,
        "pooling_mode_mean_sqrt_len_tokens": pooling == Pooling::MeanSqrtLen,
        "pooling_mode_weightedmean_tokens": false,
        "pooling_mode_lasttoken": false,
        "include_prompt": true,
    });
    let pooling_dir = dir.join("1_Pooling");
    std::fs::create_dir_all(&pooling_dir).map_err(|e| Error::io(&pooling_dir, e))?;
    let json = |value: &serde_json::Value| format!("{value:#}\n");
    write_file(
        &dir.join("modules.json"),
        json(&serde_json::json!(modules)).as_bytes(),
    )?;
    let sentence_bert =
        serde_json::json!({"max_seq_length": max_seq_length, "do_lower_case": false});
    write_file(
        &dir.join("sentence_bert_config.json"),
        json(&sentence_bert).as_bytes(),
    )?;
    write_file(
        &pooling_dir.join("config.json"),
        json(&pooling_config).as_bytes(),
    )
}

/// Pools (B, T, C) states under a (B, T) mask into (B, C), then L2-normalises if asked.
pub fn pool(
    hidden: &Tensor,
    attention_mask: &Tensor,
    pooling: Pooling,
    normalize: bool,
) -> Result<Tensor> {
    let mask = attention_mask
        .to_dtype(hidden.dtype())?
        .unsqueeze(D::Minus1)?; // (B, T, 1)
    let pooled = match pooling {
        Pooling::Cls => hidden.narrow(1, 0, 1)?.squeeze(1)?,
        Pooling::Mean | Pooling::MeanSqrtLen => {
            let sum = hidden.broadcast_mul(&mask)?.sum(1)?; // (B, C)
            let count = mask.sum(1)?.clamp(1e-9, f64::MAX)?; // (B, 1)
            let denominator = if pooling == Pooling::Mean {
                count
            } else {
                count.sqrt()?
            };
            sum.broadcast_div(&denominator)?
        }
        Pooling::Max => {
            // Padded positions get a very negative value, as sentence-transformers does.
            let penalty = ((mask.ones_like()? - &mask)? * -1e9)?;
            hidden.broadcast_add(&penalty)?.max(1)?
        }
    };
    if normalize {
        normalize_rows(&pooled)
    } else {
        Ok(pooled)
    }
}

/// Scales each row of `(N, C)` vectors to unit length, in f32.
pub fn normalize_rows(vectors: &Tensor) -> Result<Tensor> {
    let norm = vectors
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12, f64::MAX)?;
    Ok(vectors.broadcast_div(&norm)?.to_dtype(DType::F32)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(files: &[(&str, &str)], name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("bert-pooling-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (path, contents) in files {
            let path = dir.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, contents).unwrap();
        }
        dir
    }

    const MODULES: &str = r#"[{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]"#;

    #[test]
    fn reads_sentence_transformers_modules() {
        let cls = r#"{"pooling_mode_cls_token": true, "pooling_mode_mean_tokens": false}"#;
        let dir = dir_with(
            &[("modules.json", MODULES), ("1_Pooling/config.json", cls)],
            "cls",
        );
        let config = EmbeddingConfig::from_dir(&dir).unwrap();
        assert_eq!(
            (config.pooling, config.normalize, config.max_seq_length),
            (Pooling::Cls, false, None)
        );

        let with_normalize = MODULES.replace(
            "}]",
            r#"}, {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]"#,
        );
        let max = r#"{"pooling_mode_max_tokens": true}"#;
        let files = [
            ("modules.json", with_normalize.as_str()),
            ("1_Pooling/config.json", max),
            ("sentence_bert_config.json", r#"{"max_seq_length": 128}"#),
        ];
        let config = EmbeddingConfig::from_dir(&dir_with(&files, "max")).unwrap();
        assert_eq!(
            (config.pooling, config.normalize, config.max_seq_length),
            (Pooling::Max, true, Some(128))
        );

        assert_eq!(
            EmbeddingConfig::from_dir(&dir_with(&[], "none")).unwrap(),
            EmbeddingConfig::default()
        );
    }

    #[test]
    fn reads_named_prompts_and_checks_the_default_is_one_of_them() {
        let prompts =
            r#"{"prompts": {"query": "query: ", "document": ""}, "default_prompt_name": "query"}"#;
        let config = EmbeddingConfig::from_dir(&dir_with(
            &[("config_sentence_transformers.json", prompts)],
            "prompts",
        ))
        .unwrap();
        assert_eq!(config.prompts["query"], "query: ");
        assert_eq!(config.default_prompt_name.as_deref(), Some("query"));
        let wrong = prompts.replace(
            "\"default_prompt_name\": \"query\"",
            "\"default_prompt_name\": \"passage\"",
        );
        let err = EmbeddingConfig::from_dir(&dir_with(
            &[("config_sentence_transformers.json", &wrong)],
            "wrong-prompt",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("default_prompt_name") && err.contains("passage"),
            "{err}"
        );
    }

    #[test]
    fn unsupported_modules_and_combined_modes_are_errors() {
        let dense = MODULES.replace("}]", r#"}, {"idx": 2, "name": "2", "path": "2_CNN", "type": "sentence_transformers.models.CNN"}]"#);
        let mean = r#"{"pooling_mode_mean_tokens": true}"#;
        let err = EmbeddingConfig::from_dir(&dir_with(
            &[("modules.json", &dense), ("1_Pooling/config.json", mean)],
            "dense",
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("CNN") && err.contains("modules.json"), "{err}");
        let both = r#"{"pooling_mode_mean_tokens": true, "pooling_mode_max_tokens": true}"#;
        let err = EmbeddingConfig::from_dir(&dir_with(
            &[("modules.json", MODULES), ("1_Pooling/config.json", both)],
            "both",
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("exactly one pooling mode"), "{err}");
    }

    #[test]
    fn pooling_ignores_padding() {
        let device = candle_core::Device::Cpu;
        // One text of two tokens, padded to three; the padded state is huge and must not count.
        let hidden = Tensor::new(&[[[1f32, 2.], [3., 6.], [100., 100.]]], &device).unwrap();
        let mask = Tensor::new(&[[1f32, 1., 0.]], &device).unwrap();
        let row = |p, n| -> Vec<f32> {
            pool(&hidden, &mask, p, n)
                .unwrap()
                .get(0)
                .unwrap()
                .to_vec1()
                .unwrap()
        };
        assert_eq!(row(Pooling::Mean, false), [2., 4.]);
        assert_eq!(row(Pooling::Cls, false), [1., 2.]);
        assert_eq!(row(Pooling::Max, false), [3., 6.]);
        let s = 2f32.sqrt();
        assert_eq!(row(Pooling::MeanSqrtLen, false), [4. / s, 8. / s]);
        assert_eq!(
            row(Pooling::Mean, true),
            [2. / 20f32.sqrt(), 4. / 20f32.sqrt()]
        );
    }
}
