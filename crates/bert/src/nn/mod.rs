//! The network's layers over the ops: [`Linear`] in its variants (f32, in place, bf16/int8),
//! [`LayerNorm`], [`Dropout`], the functions [`softmax`], [`activation`] and [`attention_bias`], and the
//! two switches every layer reads: [`Mode`] (inference or training) and [`Precision`] (the number
//! format of Linear layers).

pub mod checkpoint;
pub mod dropout;
pub mod functional;
pub mod layer_norm;
pub mod linear;
pub mod mapped_linear;
pub mod mode;

pub use crate::kernels::packed_layout::Precision;
pub use dropout::Dropout;
pub use functional::{activation, attention_bias, softmax};
pub use layer_norm::LayerNorm;
pub use linear::Linear;
pub use mode::Mode;
