//! The arithmetic under everything else, with no knowledge of tensors, files or models (std and rayon
//! only): the f32 matrix product ([`gemm`]), AMX tile products in bf16 and int8 ([`amx`],
//! [`tile_gemm`], [`tile_attention`]), Linear layers converted to bf16/int8 ([`packed_layout`],
//! [`packed_linear`]), vectorised element-wise math ([`vector_math`]), number formats
//! ([`number_formats`]), aligned and uninitialised buffers ([`buffer`]), the rayon worker a forward pass
//! runs on ([`worker`]), and the one place that asks what the CPU can do ([`cpu`]).
//!
//! Each kernel takes slices and dimensions and is tested here against a plain reference.

pub mod amx;
pub mod buffer;
pub mod cpu;
pub mod gemm;
pub mod number_formats;
pub mod packed_layout;
pub mod packed_linear;
pub mod tile_attention;
pub mod tile_gemm;
pub mod vector_math;
pub mod worker;

pub use packed_layout::{PackedLinear, Precision};
pub use worker::on_worker;
