//! f32 Linear layers for inference whose weights stay where they lie in the memory-mapped checkpoint:
//! loading copies nothing and allocates nothing, and each product reads the mapping directly. Layers
//! loaded side by side (query, key and value, read by one fused attention op) stay separate parts of
//! the file, each product writing its own column block of the one output.

use crate::error::{Error, Result};
use crate::files::safetensors::MappedF32;
use crate::kernels::buffer::output_buffer;
use crate::kernels::gemm::{matmul_strided, Epilogue, View};
use crate::ops::linear::FixedLinear;

/// `x W^T + b` with `W` made of mapped `(out, in)` parts stacked along the outputs.
#[derive(Debug)]
pub struct MappedLinear {
    parts: Vec<MappedF32>,
    bias: Vec<f32>,
    in_dim: usize,
    out_dim: usize,
}

impl MappedLinear {
    /// The parts must share their input size; `bias` has one value per output of all of them.
    pub fn new(parts: Vec<MappedF32>, bias: Vec<f32>) -> Result<Self> {
        let in_dim = parts.first().map_or(0, |p| p.shape()[1]);
        let out_dim: usize = parts.iter().map(|p| p.shape()[0]).sum();
        if parts
            .iter()
            .any(|p| p.shape().len() != 2 || p.shape()[1] != in_dim)
        {
            return Err(Error::InvalidInput(format!(
                "mapped linear: parts of shapes {:?} do not share an input size",
                parts.iter().map(|p| p.shape().to_vec()).collect::<Vec<_>>()
            )));
        }
        if bias.len() != out_dim {
            return Err(Error::InvalidInput(format!(
                "mapped linear: {} bias values for {out_dim} outputs",
                bias.len()
            )));
        }
        Ok(MappedLinear {
            parts,
            bias,
            in_dim,
            out_dim,
        })
    }

    /// `gelu?(x W^T + b)` for `rows` row-major inputs.
    pub fn forward(&self, x: &[f32], rows: usize, gelu: bool) -> Vec<f32> {
        assert_eq!(x.len(), rows * self.in_dim, "input is (rows, in)");
        let a = View::row_major(x, rows, self.in_dim);
        let mut c = output_buffer(rows * self.out_dim);
        let mut j0 = 0;
        for part in &self.parts {
            let n = part.shape()[0];
            let epilogue = Epilogue {
                accumulate: false,
                bias: Some(&self.bias[j0..j0 + n]),
                gelu,
            };
            let w = View::row_major(part.values(), n, self.in_dim).t();
            if rows > 0 {
                matmul_strided(a, w, &mut c[j0..], self.out_dim, epilogue);
            }
            j0 += n;
        }
        c
    }
}

impl FixedLinear for MappedLinear {
    fn in_dim(&self) -> usize {
        self.in_dim
    }

    fn out_dim(&self) -> usize {
        self.out_dim
    }

    fn forward_rows(&self, x: &[f32], rows: usize, gelu: bool) -> Vec<f32> {
        self.forward(x, rows, gelu)
    }
}
