//! `Params`: how model blocks ask for their weights, by the names `transformers` gives them.
//!
//! A [`ParamStore`] sits over a [`Checkpoint`]. Encoder weights are required ([`Params::get`]); task-head
//! weights may be absent and are then freshly initialised from a seeded generator
//! ([`Params::get_or_init`]) and listed, as `transformers` warns about them. In trainable mode every weight
//! becomes a `Var` registered under its name, ready for an optimizer and for saving; asking twice for a
//! name gives the same tensor, which is how the masked-LM decoder is tied to the word embeddings.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use candle_core::{DType, Device, Tensor, Var};

use crate::cache::PackedCache;
use crate::error::{Error, Result};
use crate::files::safetensors::MappedF32;
use crate::kernels::packed_layout::{PackedLinear, Precision};
use crate::rng::Rng;
use crate::weights::checkpoint::Checkpoint;

/// How a missing task-head weight is initialised (as `transformers`' `_init_weights` does).
#[derive(Debug, Clone, Copy)]
pub enum Init {
    Zeros,
    Ones,
    Normal(f64),
    /// An embedding matrix: normal, with the padding token's row zero (as `nn.Embedding(padding_idx)`
    /// is initialised by `transformers`).
    Embedding {
        std: f64,
        padding_idx: Option<usize>,
    },
}

/// Owns the weights handed out to a model while it is built.
pub struct ParamStore {
    checkpoint: Option<Checkpoint>,
    device: Device,
    dtype: DType,
    trainable: bool,
    /// The number format of Linear layers: converted weights for inference; for a trainable store,
    /// bf16 means mixed precision (f32 weights, bf16 products).
    precision: Precision,
    loaded: Mutex<BTreeMap<String, Tensor>>,
    /// Names whose tensors a model converted and let go of (loaded, but no longer held here).
    released: Mutex<BTreeSet<String>>,
    vars: Mutex<BTreeMap<String, Var>>,
    initialized: Mutex<BTreeSet<String>>,
    /// Names that are another weight under a second name (a tied decoder), not unused weights.
    tied: Mutex<BTreeSet<String>>,
    rng: Mutex<Rng>,
    /// Reduced-precision layers converted on earlier loads of this checkpoint (inference only).
    packed_cache: Option<PackedCache>,
}

/// What loading a model did with the checkpoint, for the warnings `transformers` also gives.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadReport {
    /// Head weights absent from the checkpoint and newly initialised.
    pub newly_initialized: Vec<String>,
    /// Checkpoint tensors the model did not use (e.g. a pretraining head when embedding).
    pub unused: Vec<String>,
}

impl ParamStore {
    /// Weights from a checkpoint; `trainable` turns each into a `Var`.
    pub fn new(checkpoint: Checkpoint, device: &Device, trainable: bool, seed: u64) -> Self {
        Self::build(Some(checkpoint), device, trainable, seed)
    }

    /// No checkpoint: every weight is freshly initialised (for pretraining from scratch).
    pub fn fresh(device: &Device, seed: u64) -> Self {
        Self::build(None, device, true, seed)
    }

    fn build(checkpoint: Option<Checkpoint>, device: &Device, trainable: bool, seed: u64) -> Self {
        ParamStore {
            checkpoint,
            device: device.clone(),
            dtype: DType::F32,
            trainable,
            precision: Precision::F32,
            loaded: Mutex::default(),
            released: Mutex::default(),
            vars: Mutex::default(),
            initialized: Mutex::default(),
            tied: Mutex::default(),
            rng: Mutex::new(Rng::new(seed)),
            packed_cache: None,
        }
    }

    /// Linear layers in `precision`: for inference, weights converted to bf16 or int8; for training,
    /// bf16 means mixed precision (f32 weights, bf16 products); int8 does not train and is ignored.
    /// For inference on the CPU, converted layers are cached on disk for the next load of the
    /// checkpoint ([`crate::cache::converted`]).
    pub fn with_precision(mut self, precision: Precision) -> Self {
        if !(self.trainable && precision == Precision::Int8) {
            self.precision = precision;
        }
        let inference = !self.trainable && self.device.is_cpu() && precision != Precision::F32;
        self.packed_cache = match &self.checkpoint {
            Some(checkpoint) if inference => {
                PackedCache::for_checkpoint(checkpoint.files(), precision)
            }
            _ => None,
        };
        self
    }

    /// Keeps converted layers in `cache` instead of the one the environment names.
    pub fn with_packed_cache(mut self, cache: PackedCache) -> Self {
        self.packed_cache = Some(cache);
        self
    }

    /// The root path of the weight names.
    pub fn root(&self) -> Params<'_> {
        Params {
            store: self,
            prefix: String::new(),
        }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Every trainable variable by name (empty unless trainable).
    pub fn vars(&self) -> BTreeMap<String, Var> {
        lock(&self.vars).clone()
    }

    /// Which head weights were initialised and which checkpoint tensors went unused.
    pub fn report(&self) -> LoadReport {
        let loaded = lock(&self.loaded);
        let released = lock(&self.released);
        let tied = lock(&self.tied);
        let unused = match &self.checkpoint {
            Some(c) => c
                .names()
                .filter(|n| {
                    !loaded.contains_key(*n) && !released.contains(*n) && !tied.contains(*n)
                })
                .map(String::from)
                .collect(),
            None => Vec::new(),
        };
        LoadReport {
            newly_initialized: lock(&self.initialized).iter().cloned().collect(),
            unused,
        }
    }

    fn fetch(&self, name: &str, shape: &[usize], init: Option<Init>) -> Result<Tensor> {
        if let Some(t) = lock(&self.loaded).get(name) {
            return Ok(t.clone());
        }
        let from_file = match &self.checkpoint {
            Some(c) => c.load(name, &self.device)?,
            None => None,
        };
        let tensor = match (from_file, init) {
            (Some(t), _) => {
                if t.dims() != shape {
                    return Err(Error::ShapeMismatch {
                        name: name.to_string(),
                        expected: shape.to_vec(),
                        found: t.dims().to_vec(),
                    });
                }
                t.to_dtype(self.dtype)?
            }
            (None, Some(init)) => {
                lock(&self.initialized).insert(name.to_string());
                self.initial_value(shape, init)?
            }
            (None, None) => {
                return Err(Error::MissingWeight {
                    name: name.to_string(),
                    source_desc: self
                        .checkpoint
                        .as_ref()
                        .map_or("no checkpoint".into(), |c| c.describe()),
                })
            }
        };
        let tensor = if self.trainable {
            let var = Var::from_tensor(&tensor)?;
            let t = var.as_tensor().clone();
            lock(&self.vars).insert(name.to_string(), var);
            t
        } else {
            tensor
        };
        lock(&self.loaded).insert(name.to_string(), tensor.clone());
        Ok(tensor)
    }

    /// `name`'s f32 values in place in the memory-mapped checkpoint, for an inference weight that only
    /// our own kernels read; `None` for a trainable store, a device other than the CPU, or a tensor
    /// that is absent or cannot be mapped (the caller then loads it as a tensor).
    fn fetch_mapped(&self, name: &str, shape: &[usize]) -> Result<Option<MappedF32>> {
        if self.trainable || !self.device.is_cpu() || self.dtype != DType::F32 {
            return Ok(None);
        }
        let Some(mapped) = self.checkpoint.as_ref().and_then(|c| c.mapped_f32(name)) else {
            return Ok(None);
        };
        if mapped.shape() != shape {
            return Err(Error::ShapeMismatch {
                name: name.to_string(),
                expected: shape.to_vec(),
                found: mapped.shape().to_vec(),
            });
        }
        // Used, though not held here.
        lock(&self.released).insert(name.to_string());
        Ok(Some(mapped))
    }

    fn initial_value(&self, shape: &[usize], init: Init) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = match init {
            Init::Zeros => vec![0.0; n],
            Init::Ones => vec![1.0; n],
            Init::Normal(std) => {
                let mut rng = lock(&self.rng);
                (0..n).map(|_| (rng.normal() * std) as f32).collect()
            }
            Init::Embedding { std, padding_idx } => {
                let mut rng = lock(&self.rng);
                let mut values: Vec<f32> = (0..n).map(|_| (rng.normal() * std) as f32).collect();
                let row = n / shape.first().copied().unwrap_or(1).max(1);
                if let Some(pad) = padding_idx.filter(|&p| (p + 1) * row <= n) {
                    values[pad * row..(pad + 1) * row].fill(0.0);
                }
                values
            }
        };
        Ok(Tensor::from_vec(values, shape, &self.device)?.to_dtype(self.dtype)?)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A path into the weight names, like `bert.encoder.layer.3`.
#[derive(Clone)]
pub struct Params<'a> {
    store: &'a ParamStore,
    prefix: String,
}

impl<'a> Params<'a> {
    /// Descends one level: `p.pp("attention").pp("self")`.
    pub fn pp(&self, part: impl std::fmt::Display) -> Params<'a> {
        let prefix = if self.prefix.is_empty() {
            part.to_string()
        } else {
            format!("{}.{part}", self.prefix)
        };
        Params {
            store: self.store,
            prefix,
        }
    }

    /// Lets go of the store's copy of `name` (converted by the model into another form), so that its
    /// memory is freed with the model's; it still counts as used. Trainable stores keep everything.
    pub fn release(&self, name: &str) {
        if self.store.trainable {
            return;
        }
        let name = self.full(name);
        lock(&self.store.loaded).remove(&name);
        lock(&self.store.released).insert(name);
    }

    /// Whether the weights are trainable variables.
    pub fn is_trainable(&self) -> bool {
        self.store.trainable
    }

    /// The number format Linear layers are to use.
    pub fn precision(&self) -> Precision {
        self.store.precision
    }

    fn full(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// A weight that must be in the checkpoint, with this shape. `init` is used only by a model built
    /// from scratch ([`ParamStore::fresh`]).
    pub fn get(&self, shape: &[usize], name: &str, init: Init) -> Result<Tensor> {
        let init = self.store.checkpoint.is_none().then_some(init);
        self.store.fetch(&self.full(name), shape, init)
    }

    /// An inference weight's f32 values in place in the memory-mapped checkpoint, when the store is
    /// not trainable and the tensor can be mapped; `None` means: load it with [`Params::get`].
    pub fn mapped(&self, shape: &[usize], name: &str) -> Result<Option<MappedF32>> {
        self.store.fetch_mapped(&self.full(name), shape)
    }

    /// The layer over `parts` (stacked along the outputs) in the store's reduced precision as an
    /// earlier load converted and cached it ([`crate::cache::converted`]), its weights used in place;
    /// its tensors count as used. `None` when not cached, or absent from the checkpoint.
    pub fn cached_linear(parts: &[Params], in_dim: usize, out_dim: usize) -> Option<PackedLinear> {
        let store = parts.first()?.store;
        let (cache, checkpoint) = (store.packed_cache.as_ref()?, store.checkpoint.as_ref()?);
        let names: Vec<String> = parts
            .iter()
            .flat_map(|p| [p.full("weight"), p.full("bias")])
            .collect();
        if !names.iter().all(|name| checkpoint.contains(name)) {
            return None;
        }
        let linear = cache.load(&layer_name(parts), in_dim, out_dim, store.precision)?;
        lock(&store.released).extend(names);
        Some(linear)
    }

    /// Keeps a layer converted from `parts` for later loads ([`Params::cached_linear`]). A layer
    /// that cannot be written is converted again next time, so a failure is not an error.
    pub fn cache_linear(parts: &[Params], linear: &PackedLinear) {
        if let Some(cache) = parts.first().and_then(|p| p.store.packed_cache.as_ref()) {
            let _ = cache.store(&layer_name(parts), linear);
        }
    }

    /// A task-head weight, initialised with `init` when the checkpoint lacks it.
    pub fn get_or_init(&self, shape: &[usize], name: &str, init: Init) -> Result<Tensor> {
        self.store.fetch(&self.full(name), shape, Some(init))
    }

    /// Records that `name` is tied to a weight already loaded, so a copy of it in the checkpoint is
    /// not reported as unused.
    pub fn tie(&self, name: &str) {
        lock(&self.store.tied).insert(self.full(name));
    }

    /// As [`Params::tie`] for every checkpoint tensor under this path whose name (from here) passes
    /// `shared`.
    pub fn tie_where(&self, shared: impl Fn(&str) -> bool) {
        let Some(checkpoint) = &self.store.checkpoint else {
            return;
        };
        let prefix = format!("{}.", self.prefix);
        let names = checkpoint
            .names()
            .filter(|name| name.strip_prefix(&prefix).is_some_and(&shared))
            .map(String::from);
        lock(&self.store.tied).extend(names);
    }

    /// Whether the checkpoint has the tensor `name` under this path.
    pub fn has(&self, name: &str) -> bool {
        let name = self.full(name);
        self.store
            .checkpoint
            .as_ref()
            .is_some_and(|c| c.contains(&name))
    }
}

/// The name of the layer over `parts`: their paths, joined by `+` when stacked.
fn layer_name(parts: &[Params]) -> String {
    let prefixes: Vec<&str> = parts.iter().map(|p| p.prefix.as_str()).collect();
    prefixes.join("+")
}
