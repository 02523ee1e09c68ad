//! sentence-transformers' `Dense` module: a linear map of the pooled sentence vector, with an
//! activation, that models put after pooling to change the vector's width (a distilled student gets
//! one when its width differs from its teacher's). Read from and written as sentence-transformers
//! does: `config.json` (`in_features`, `out_features`, `bias`, `activation_function`) and
//! `model.safetensors` with `linear.weight` `(out, in)` and `linear.bias` `(out)`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::Deserialize;

use crate::error::{read_json, Error, Result};
use crate::files::safetensors_write::save_safetensors;
use crate::files::write::write_file;
use crate::weights::checkpoint::Checkpoint;

/// The activations sentence-transformers' `Dense` is saved with that this crate applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Identity,
    Tanh,
}

const IDENTITY: &str = "torch.nn.modules.linear.Identity";
const TANH: &str = "torch.nn.modules.activation.Tanh";

/// A `Dense` module's directory and its `config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct DenseConfig {
    pub dir: PathBuf,
    pub in_features: usize,
    pub out_features: usize,
    pub bias: bool,
    pub activation: Activation,
}

#[derive(Deserialize)]
struct DenseFile {
    in_features: usize,
    out_features: usize,
    #[serde(default = "yes")]
    bias: bool,
    /// sentence-transformers' default is `Tanh`.
    #[serde(default = "tanh")]
    activation_function: String,
}

fn yes() -> bool {
    true
}

fn tanh() -> String {
    TANH.into()
}

impl DenseConfig {
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let file: DenseFile = read_json(&path)?;
        let activation = match file.activation_function.as_str() {
            IDENTITY => Activation::Identity,
            TANH => Activation::Tanh,
            other => {
                return Err(Error::config(
                    &path,
                    "activation_function",
                    format!("`{other}` is not supported (Identity or Tanh)"),
                ))
            }
        };
        Ok(DenseConfig {
            dir: dir.to_path_buf(),
            in_features: file.in_features,
            out_features: file.out_features,
            bias: file.bias,
            activation,
        })
    }
}

/// A loaded `Dense` module, for inference.
#[derive(Debug, Clone)]
pub struct Dense {
    /// `(in, out)`: the saved `(out, in)` weight transposed once.
    weight_t: Tensor,
    bias: Option<Tensor>,
    activation: Activation,
}

impl Dense {
    pub fn load(config: &DenseConfig) -> Result<Self> {
        let checkpoint = Checkpoint::open(&config.dir)?;
        let tensor = |name: &str, shape: &[usize]| -> Result<Tensor> {
            let t = checkpoint
                .load(name, &Device::Cpu)?
                .ok_or_else(|| Error::checkpoint(&config.dir, format!("no tensor `{name}`")))?;
            if t.dims() != shape {
                return Err(Error::checkpoint(
                    &config.dir,
                    format!("`{name}` is {:?}; config.json says {shape:?}", t.dims()),
                ));
            }
            Ok(t.to_dtype(DType::F32)?)
        };
        let weight = tensor("linear.weight", &[config.out_features, config.in_features])?;
        let bias = if config.bias {
            Some(tensor("linear.bias", &[config.out_features])?)
        } else {
            None
        };
        Ok(Dense {
            weight_t: weight.t()?.contiguous()?,
            bias,
            activation: config.activation,
        })
    }

    /// `(N, in)` pooled vectors to `(N, out)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut y = x.to_dtype(DType::F32)?.matmul(&self.weight_t)?;
        if let Some(bias) = &self.bias {
            y = y.broadcast_add(bias)?;
        }
        Ok(match self.activation {
            Activation::Identity => y,
            Activation::Tanh => y.tanh()?,
        })
    }
}

/// Writes a `Dense` module with no activation (a projection) into `dir`: `weight` `(out, in)`,
/// `bias` `(out)`.
pub fn write_projection(dir: &Path, weight: &Tensor, bias: &Tensor) -> Result<()> {
    let (out_features, in_features) = weight.dims2()?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let config = serde_json::json!({
        "in_features": in_features,
        "out_features": out_features,
        "bias": true,
        "activation_function": IDENTITY,
    });
    write_file(&dir.join("config.json"), format!("{config:#}\n").as_bytes())?;
    let tensors = BTreeMap::from([
        ("linear.weight".to_string(), weight.clone()),
        ("linear.bias".to_string(), bias.clone()),
    ]);
    save_safetensors(&dir.join("model.safetensors"), &tensors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(name: &str, activation: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("bert-dense-{name}-{}", std::process::id()));
        let device = Device::Cpu;
        let weight = Tensor::new(&[[1f32, 2.], [0., -1.], [0.5, 0.5]], &device).unwrap();
        let bias = Tensor::new(&[0.1f32, 0., -1.], &device).unwrap();
        write_projection(&dir, &weight, &bias).unwrap();
        let config = format!(
            r#"{{"in_features": 2, "out_features": 3, "bias": true, "activation_function": "{activation}"}}"#
        );
        std::fs::write(dir.join("config.json"), config).unwrap();
        dir
    }

    #[test]
    fn a_dense_module_maps_pooled_vectors_as_sentence_transformers_does() {
        // By hand: x = (1, -2): W x + b = (1 - 4 + 0.1, 2, 0.5 - 1 - 1) = (-2.9, 2, -1.5), then tanh.
        let x = Tensor::new(&[[1f32, -2.]], &Device::Cpu).unwrap();
        let run = |activation: &str| -> Vec<f32> {
            let config =
                DenseConfig::read(&module(activation.rsplit('.').next().unwrap(), activation))
                    .unwrap();
            let y = Dense::load(&config).unwrap().forward(&x).unwrap();
            y.squeeze(0).unwrap().to_vec1().unwrap()
        };
        let linear = run(IDENTITY);
        let expected = [-2.9f32, 2., -1.5];
        for (got, want) in linear.iter().zip(expected) {
            assert!((got - want).abs() < 1e-6, "{linear:?}");
        }
        for (got, want) in run(TANH).iter().zip(expected) {
            assert!((got - want.tanh()).abs() < 1e-6, "{got} {want}");
        }
        let err = DenseConfig::read(&module("relu", "torch.nn.modules.activation.ReLU"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("activation_function") && err.contains("ReLU"),
            "{err}"
        );
    }
}
