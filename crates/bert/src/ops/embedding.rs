//! BERT's input embeddings as one op: each token's word, token-type and position rows gathered and
//! summed in one pass, and, backwards, each table's gradient built once by adding the output gradient's
//! rows into it. Through candle, each lookup was an `index_select` whose gradient `index_add` built by
//! zero-filling and copying the whole word table twice (30,522 x 384 floats for MiniLM, per shard and
//! step), and the padding token's rows were cut from the gradient by a mask over the batch. For
//! inference the same sum reads tables in place in the memory-mapped checkpoint
//! ([`mapped_embedding_sum`]).

use candle_core::{bail, CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::error::Result;
use crate::files::safetensors::MappedF32;
use crate::kernels::buffer::output_buffer;

/// The ids of a batch of `rows` tokens, `seq_len` to a sequence, and the padding token whose
/// embedding gets no gradient (`nn.Embedding(padding_idx)`).
struct EmbeddingSum {
    batch: usize,
    input_ids: Vec<u32>,
    token_type_ids: Vec<u32>,
    seq_len: usize,
    pad_token_id: Option<u32>,
}

/// A table's values and its (rows, width), or an error naming it.
fn table<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    name: &str,
) -> candle_core::Result<(&'a [f32], usize, usize)> {
    match (storage, layout.contiguous_offsets(), layout.dims()) {
        (CpuStorage::F32(values), Some((start, end)), &[rows, width]) => {
            Ok((&values[start..end], rows, width))
        }
        _ => bail!("embeddings: the {name} table must be a contiguous (rows, width) f32 matrix"),
    }
}

impl EmbeddingSum {
    fn new(input_ids: &Tensor, token_type_ids: &Tensor, pad_token_id: Option<u32>) -> Result<Self> {
        let (batch, seq_len) = input_ids.dims2()?;
        Ok(EmbeddingSum {
            batch,
            input_ids: input_ids.flatten_all()?.to_vec1()?,
            token_type_ids: token_type_ids.flatten_all()?.to_vec1()?,
            seq_len,
            pad_token_id,
        })
    }

    /// Each token's three rows summed, `(rows, c)` row-major; the ids must have been checked.
    fn sum(&self, words: &[f32], types: &[f32], positions: &[f32], c: usize) -> Vec<f32> {
        let mut out = output_buffer(self.input_ids.len() * c);
        out.par_chunks_mut(c).enumerate().for_each(|(r, out)| {
            let w = self.input_ids[r] as usize * c;
            let k = self.token_type_ids[r] as usize * c;
            let p = (r % self.seq_len) * c;
            let rows = words[w..w + c]
                .iter()
                .zip(&types[k..k + c])
                .zip(&positions[p..p + c]);
            for (o, ((&w, &k), &p)) in out.iter_mut().zip(rows) {
                *o = w + k + p;
            }
        });
        out
    }

    /// The ids checked against the tables' row counts.
    fn check(&self, words: usize, types: usize, positions: usize) -> candle_core::Result<()> {
        if let Some(&id) = self.input_ids.iter().find(|&&id| id as usize >= words) {
            bail!("input id {id} is outside the vocabulary of {words} tokens");
        }
        if let Some(&id) = self.token_type_ids.iter().find(|&&id| id as usize >= types) {
            bail!("token type id {id} is outside the {types} token types");
        }
        if self.seq_len > positions {
            bail!(
                "{} tokens in a sequence, more than the {positions} positions",
                self.seq_len
            );
        }
        Ok(())
    }
}

impl CustomOp3 for EmbeddingSum {
    fn name(&self) -> &'static str {
        "embedding-sum"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (words, vocab, c) = table(s1, l1, "word")?;
        let (types, type_rows, c2) = table(s2, l2, "token type")?;
        let (positions, position_rows, c3) = table(s3, l3, "position")?;
        if c2 != c || c3 != c {
            bail!("embeddings: tables of widths {c}, {c2} and {c3}");
        }
        self.check(vocab, type_rows, position_rows)?;
        let out = self.sum(words, types, positions, c);
        let shape = Shape::from((self.batch, self.seq_len, c));
        Ok((CpuStorage::F32(out), shape))
    }

    fn bwd(
        &self,
        words: &Tensor,
        types: &Tensor,
        positions: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let c = words.dim(1)?;
        let grad = grad.flatten_all()?.to_vec1::<f32>()?;
        let gradient_of = |table: &Tensor, row_of: &dyn Fn(usize) -> Option<usize>| {
            let mut sum = vec![0f32; table.elem_count()];
            for (r, g) in grad.chunks_exact(c).enumerate() {
                if let Some(row) = row_of(r) {
                    let target = &mut sum[row * c..row * c + c];
                    target.iter_mut().zip(g).for_each(|(s, &g)| *s += g);
                }
            }
            Tensor::from_vec(sum, table.shape(), table.device())
        };
        let word = |r: usize| {
            let id = self.input_ids[r];
            (Some(id) != self.pad_token_id).then_some(id as usize)
        };
        Ok((
            Some(gradient_of(words, &word)?),
            Some(gradient_of(types, &|r| {
                Some(self.token_type_ids[r] as usize)
            })?),
            Some(gradient_of(positions, &|r| Some(r % self.seq_len))?),
        ))
    }
}

/// Whether the fused op applies: f32 tables on the CPU.
pub fn fused_embeddings_apply(tables: [&Tensor; 3]) -> bool {
    tables
        .iter()
        .all(|t| t.device().is_cpu() && t.dtype() == candle_core::DType::F32)
}

/// `words[input_ids] + types[token_type_ids] + positions[t]` for each token (`input_ids` and
/// `token_type_ids` (B, T)), (B, T, C); the padding token's word row gets no gradient.
pub fn embedding_sum(
    [words, types, positions]: [&Tensor; 3],
    input_ids: &Tensor,
    token_type_ids: &Tensor,
    pad_token_id: Option<u32>,
) -> Result<Tensor> {
    let op = EmbeddingSum::new(input_ids, token_type_ids, pad_token_id)?;
    let (words, types, positions) = (
        words.contiguous()?,
        types.contiguous()?,
        positions.contiguous()?,
    );
    Ok(words.apply_op3(&types, &positions, op)?)
}

/// As [`embedding_sum`], for inference from `(rows, C)` tables in place in a memory-mapped checkpoint:
/// loading then copies none of the word table's values. Positions count from `first_position` (the
/// tokens a decoder has already seen).
pub fn mapped_embedding_sum(
    [words, types, positions]: [&MappedF32; 3],
    input_ids: &Tensor,
    token_type_ids: &Tensor,
    first_position: usize,
) -> Result<Tensor> {
    let op = EmbeddingSum::new(input_ids, token_type_ids, None)?;
    let rows = |t: &MappedF32| t.shape()[0];
    let position_rows = rows(positions).saturating_sub(first_position);
    op.check(rows(words), rows(types), position_rows)?;
    let c = words.shape()[1];
    let positions = &positions.values()[first_position.min(rows(positions)) * c..];
    let out = op.sum(words.values(), types.values(), positions, c);
    Ok(Tensor::from_vec(
        out,
        (op.batch, op.seq_len, c),
        input_ids.device(),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn matches_candles_lookups_forward_and_backward_and_skips_the_padding_row() {
        let d = Device::Cpu;
        let table = |rows: usize, seed: f32| {
            let v: Vec<f32> = (0..rows * 4)
                .map(|i| (i as f32 * 0.7 + seed).sin())
                .collect();
            Var::from_tensor(&Tensor::from_vec(v, (rows, 4), &d).unwrap()).unwrap()
        };
        let (words, types, positions) = (table(10, 0.0), table(2, 1.0), table(6, 2.0));
        let ids = Tensor::new(&[[3u32, 0, 7], [3, 9, 0]], &d).unwrap();
        let type_ids = Tensor::new(&[[0u32, 1, 1], [0, 0, 1]], &d).unwrap();
        let tables = [words.as_tensor(), types.as_tensor(), positions.as_tensor()];
        let fused = embedding_sum(tables, &ids, &type_ids, Some(0)).unwrap();
        // Weighted, so that each output element's gradient differs.
        let weights = Tensor::arange(0f32, 24.0, &d)
            .unwrap()
            .reshape((2, 3, 4))
            .unwrap();
        let grads = (&fused * &weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();

        let w = words
            .as_tensor()
            .embedding(&ids.flatten_all().unwrap())
            .unwrap();
        let t = types
            .as_tensor()
            .embedding(&type_ids.flatten_all().unwrap())
            .unwrap();
        let positions_of = Tensor::new(&[0u32, 1, 2], &d).unwrap();
        let p = positions.as_tensor().embedding(&positions_of).unwrap();
        let reference = (w + t)
            .unwrap()
            .reshape((2, 3, 4))
            .unwrap()
            .broadcast_add(&p)
            .unwrap();
        let diff = (&fused - &reference)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-6);
        let expected = (&reference * &weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for var in [&types, &positions] {
            let (a, b) = (
                grads.get(var.as_tensor()).unwrap(),
                expected.get(var.as_tensor()).unwrap(),
            );
            assert_eq!(a.to_vec2::<f32>().unwrap(), b.to_vec2::<f32>().unwrap());
        }
        let word_grad: Vec<Vec<f32>> = grads.get(words.as_tensor()).unwrap().to_vec2().unwrap();
        let mut reference: Vec<Vec<f32>> =
            expected.get(words.as_tensor()).unwrap().to_vec2().unwrap();
        // The padding id (0) appears twice; its row gets nothing.
        reference[0] = vec![0.0; 4];
        assert_eq!(word_grad, reference);
        assert!(word_grad[3].iter().all(|&g| g != 0.0));
    }

    #[test]
    fn an_id_outside_the_vocabulary_is_an_error_naming_it() {
        let d = Device::Cpu;
        let words = Tensor::zeros((5, 2), candle_core::DType::F32, &d).unwrap();
        let types = Tensor::zeros((2, 2), candle_core::DType::F32, &d).unwrap();
        let positions = Tensor::zeros((4, 2), candle_core::DType::F32, &d).unwrap();
        let ids = Tensor::new(&[[1u32, 5]], &d).unwrap();
        let type_ids = Tensor::new(&[[0u32, 0]], &d).unwrap();
        let err = embedding_sum([&words, &types, &positions], &ids, &type_ids, None).unwrap_err();
        assert!(err.to_string().contains("input id 5"), "{err}");
    }
}
