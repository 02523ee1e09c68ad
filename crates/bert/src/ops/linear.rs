//! The Linear layer's products as candle ops: `x W^T + b` with its backward pass ([`LinearOp`], f32
//! or bf16 products), the plain products it is made of ([`Gemm`]), and the inference op over weights
//! held outside candle ([`FixedLinear`]: in place in a mapped file, or converted to bf16/int8).

use std::sync::Arc;

use rayon::prelude::*;

use crate::kernels::buffer::output_buffer;
use crate::kernels::gemm::{matmul, matmul_with, Epilogue, View};
use crate::kernels::packed_layout::PackedLinear;
use crate::kernels::{tile_gemm, vector_math};
use crate::ops::contiguous_f32;

/// `op(a) op(b)` as a candle op over contiguous f32 matrices, `op` transposing when asked; the form
/// `a b^T` (a Linear layer: inputs times the `(out, in)` weight) has a backward pass made of the other
/// two forms. With `bf16` the operands are rounded to bf16 and the products summed in f32 on AMX tiles
/// (mixed-precision training, [`crate::kernels::tile_gemm`]).
#[derive(Debug, Clone, Copy)]
pub struct Gemm {
    pub transpose_a: bool,
    pub transpose_b: bool,
    pub bf16: bool,
}

impl Gemm {
    /// `a b^T`: what a Linear layer computes.
    pub const fn linear(bf16: bool) -> Gemm {
        Gemm {
            transpose_a: false,
            transpose_b: true,
            bf16,
        }
    }

    /// `a b` into a new row-major matrix.
    fn product(&self, a: View, b: View) -> Vec<f32> {
        if self.bf16 {
            return tile_gemm::matmul_bf16(a, b);
        }
        let mut c = output_buffer(a.rows * b.cols);
        matmul(a, b, &mut c);
        c
    }

    fn view<'a>(data: &'a [f32], rows: usize, cols: usize, transpose: bool) -> View<'a> {
        let v = View::row_major(data, rows, cols);
        if transpose {
            v.t()
        } else {
            v
        }
    }
}

fn matrix<'a>(
    storage: &'a candle_core::CpuStorage,
    layout: &candle_core::Layout,
) -> candle_core::Result<(&'a [f32], usize, usize)> {
    let data = contiguous_f32(storage, layout, "gemm")?;
    let [rows, cols] = layout.dims() else {
        candle_core::bail!("gemm: operands must be matrices, got {:?}", layout.dims())
    };
    Ok((data, *rows, *cols))
}

/// The input of an inference Linear op named `op`: a contiguous f32 `(rows, in)` matrix, checked
/// against the layer's `(out, in)` weight; its values and its rows.
pub(crate) fn linear_input<'a>(
    storage: &'a candle_core::CpuStorage,
    layout: &candle_core::Layout,
    (out_dim, in_dim): (usize, usize),
    op: &str,
) -> candle_core::Result<(&'a [f32], usize)> {
    let x = contiguous_f32(storage, layout, op)?;
    let &[rows, cols] = layout.dims() else {
        candle_core::bail!("{op}: expects a matrix, got {:?}", layout.dims())
    };
    if cols != in_dim {
        candle_core::bail!("{op}: {rows}x{cols} input for a {out_dim}x{in_dim} weight")
    }
    Ok((x, rows))
}

/// `x W^T + b` as one candle op: the bias is added as each output tile is stored (see [`Epilogue`]),
/// which saves zeroing the output and a separate pass over it. Its backward pass is made of [`Gemm`]s
/// and a column sum. With `bf16`, every product is a bf16 one (see [`Gemm`]). With `gelu` (inference
/// only: there is no backward pass), `gelu(x W^T + b)`, the activation applied in the same store.
#[derive(Debug, Clone, Copy)]
pub struct LinearOp {
    pub bf16: bool,
    pub gelu: bool,
}

impl candle_core::CustomOp3 for LinearOp {
    fn name(&self) -> &'static str {
        "bert-linear"
    }

    fn cpu_fwd(
        &self,
        s1: &candle_core::CpuStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CpuStorage,
        l2: &candle_core::Layout,
        s3: &candle_core::CpuStorage,
        l3: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let (x, rows, in_dim) = matrix(s1, l1)?;
        let (w, out_dim, w_in) = matrix(s2, l2)?;
        let bias = contiguous_f32(s3, l3, "linear")?;
        if w_in != in_dim || bias.len() != out_dim {
            candle_core::bail!(
                "linear: {rows}x{in_dim} input, {out_dim}x{w_in} weight, {} bias",
                bias.len()
            )
        }
        let a = View::row_major(x, rows, in_dim);
        let b = View::row_major(w, out_dim, in_dim).t();
        let epilogue = Epilogue {
            accumulate: false,
            bias: Some(bias),
            gelu: self.gelu,
        };
        let c = if self.bf16 {
            let mut c = Gemm::linear(true).product(a, b);
            for row in c.chunks_mut(out_dim.max(1)) {
                for (j, v) in row.iter_mut().enumerate() {
                    *v += bias[j];
                    if self.gelu {
                        *v = vector_math::gelu_scalar(*v);
                    }
                }
            }
            c
        } else {
            let mut c = output_buffer(rows * out_dim);
            matmul_with(a, b, &mut c, epilogue);
            c
        };
        Ok((
            candle_core::CpuStorage::F32(c),
            candle_core::Shape::from((rows, out_dim)),
        ))
    }

    fn bwd(
        &self,
        x: &candle_core::Tensor,
        w: &candle_core::Tensor,
        _bias: &candle_core::Tensor,
        _res: &candle_core::Tensor,
        grad: &candle_core::Tensor,
    ) -> candle_core::Result<(
        Option<candle_core::Tensor>,
        Option<candle_core::Tensor>,
        Option<candle_core::Tensor>,
    )> {
        if self.gelu {
            candle_core::bail!("linear: the fused GELU is for inference and has no backward pass")
        }
        let grad = grad.contiguous()?;
        let (dx, dw) = candle_core::CustomOp2::bwd(&Gemm::linear(self.bf16), x, w, &grad, &grad)?;
        let dbias = grad.apply_op1_no_bwd(&ColumnSum)?;
        Ok((dx, dw, Some(dbias)))
    }
}

/// The sum of a matrix's rows (a bias gradient): one pass, row after row, where candle's sum over
/// the first dimension walks the matrix column-wise.
#[derive(Debug, Clone, Copy)]
struct ColumnSum;

impl candle_core::CustomOp1 for ColumnSum {
    fn name(&self) -> &'static str {
        "bert-column-sum"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let (data, rows, cols) = matrix(storage, layout)?;
        let sum_rows = |rows: &[f32]| {
            let mut sum = vec![0f32; cols];
            for row in rows.chunks_exact(cols.max(1)) {
                sum.iter_mut().zip(row).for_each(|(s, v)| *s += v);
            }
            sum
        };
        let per_thread = rows.div_ceil(rayon::current_num_threads()).max(1) * cols.max(1);
        let partial: Vec<Vec<f32>> = data.par_chunks(per_thread).map(sum_rows).collect();
        let sum = partial.into_iter().reduce(|mut a, b| {
            a.iter_mut().zip(&b).for_each(|(s, v)| *s += v);
            a
        });
        let sum = sum.unwrap_or_else(|| vec![0f32; cols]);
        Ok((
            candle_core::CpuStorage::F32(sum),
            candle_core::Shape::from(cols),
        ))
    }
}

impl candle_core::CustomOp2 for Gemm {
    fn name(&self) -> &'static str {
        "bert-gemm"
    }

    fn cpu_fwd(
        &self,
        s1: &candle_core::CpuStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CpuStorage,
        l2: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let (a, ar, ac) = matrix(s1, l1)?;
        let (b, br, bc) = matrix(s2, l2)?;
        let a = Gemm::view(a, ar, ac, self.transpose_a);
        let b = Gemm::view(b, br, bc, self.transpose_b);
        if a.cols != b.rows {
            candle_core::bail!("gemm: {}x{} times {}x{}", a.rows, a.cols, b.rows, b.cols)
        }
        let c = self.product(a, b);
        Ok((
            candle_core::CpuStorage::F32(c),
            candle_core::Shape::from((a.rows, b.cols)),
        ))
    }

    fn bwd(
        &self,
        a: &candle_core::Tensor,
        b: &candle_core::Tensor,
        _res: &candle_core::Tensor,
        grad: &candle_core::Tensor,
    ) -> candle_core::Result<(Option<candle_core::Tensor>, Option<candle_core::Tensor>)> {
        if self.transpose_a || !self.transpose_b {
            candle_core::bail!("gemm: only the a b^T form has a backward pass")
        }
        let grad = grad.contiguous()?;
        // c = a b^T: da = dc b, db = dc^T a.
        let da = grad.apply_op2_no_bwd(
            b,
            &Gemm {
                transpose_a: false,
                transpose_b: false,
                bf16: self.bf16,
            },
        )?;
        let db = grad.apply_op2_no_bwd(
            a,
            &Gemm {
                transpose_a: true,
                transpose_b: false,
                bf16: self.bf16,
            },
        )?;
        Ok((Some(da), Some(db)))
    }
}

/// A Linear layer whose weights are fixed for inference and held outside candle, run by one op.
pub trait FixedLinear: Send + Sync + std::fmt::Debug {
    fn in_dim(&self) -> usize;
    fn out_dim(&self) -> usize;
    /// `gelu?(x W^T + b)` for `rows` row-major inputs.
    fn forward_rows(&self, x: &[f32], rows: usize, gelu: bool) -> Vec<f32>;
}

/// A [`FixedLinear`] as a candle op (inference only: no backward pass).
pub struct FixedLinearOp {
    pub linear: Arc<dyn FixedLinear>,
    pub gelu: bool,
}

impl candle_core::CustomOp1 for FixedLinearOp {
    fn name(&self) -> &'static str {
        "bert-fixed-linear"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let linear = &self.linear;
        let dims = (linear.out_dim(), linear.in_dim());
        let (x, rows) = linear_input(storage, layout, dims, self.name())?;
        Ok((
            candle_core::CpuStorage::F32(linear.forward_rows(x, rows, self.gelu)),
            candle_core::Shape::from((rows, linear.out_dim())),
        ))
    }
}

impl FixedLinear for PackedLinear {
    fn in_dim(&self) -> usize {
        self.in_dim
    }

    fn out_dim(&self) -> usize {
        self.out_dim
    }

    fn forward_rows(&self, x: &[f32], rows: usize, gelu: bool) -> Vec<f32> {
        self.forward_then(x, rows, gelu)
    }
}
