//! How a Linear layer's weights are converted for bf16 and int8 inference, and how the converted
//! weights are laid out in memory: rounded to bf16, or quantized to int8 symmetrically per output
//! channel (one scale per row of the `(out, in)` weight, and each row's sum of levels); with AMX,
//! packed into 1 KiB tiles ([`crate::kernels::amx`]), else kept as the rounded values in f32 for the
//! emulated path.
//!
//! The cache of converted layers ([`crate::cache::converted`]) keys its files on a hash of this file
//! alone: a change here is a change of layout, and earlier caches are not read.

use std::fmt;
use std::str::FromStr;

use rayon::prelude::*;

use crate::kernels::amx::{self, TileOp, BLOCK, TILE_BYTES, TILE_BYTES_PER_ROW, TILE_ROWS};
use crate::kernels::buffer::{as_bytes, f32_values, Aligned};
use crate::kernels::number_formats::{ConvertedRows, Format};

/// The number format of a model's Linear layers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Precision {
    #[default]
    F32,
    Bf16,
    Int8,
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::Int8 => "int8",
        })
    }
}

impl FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "f32" | "fp32" | "float32" => Ok(Precision::F32),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            "int8" | "i8" => Ok(Precision::Int8),
            other => Err(format!(
                "unknown dtype {other:?}: expected f32, bf16 or int8"
            )),
        }
    }
}

impl Precision {
    /// The tile instruction for this precision (none for f32).
    pub(crate) fn tile_op(self) -> Option<TileOp> {
        match self {
            Precision::F32 => None,
            Precision::Bf16 => Some(TileOp::Bf16),
            Precision::Int8 => Some(TileOp::Int8),
        }
    }
}

impl TileOp {
    /// The format of the weights (the tiles' B operand) and of the activations (A).
    pub(crate) fn formats(self) -> (Format, Format) {
        match self {
            TileOp::Bf16 => (Format::Bf16, Format::Bf16),
            TileOp::Int8 => (Format::Int8, Format::Uint8),
        }
    }

    /// `k` values per tile row.
    pub(crate) fn depth(self) -> usize {
        TILE_BYTES_PER_ROW / self.formats().0.bytes()
    }
}

/// A Linear layer's weight and bias, converted for one [`Precision`].
pub struct PackedLinear {
    pub(crate) precision: Precision,
    pub(crate) in_dim: usize,
    pub(crate) out_dim: usize,
    pub(crate) bias: Vec<f32>,
    /// int8: the scale of each output channel (`w = q * scale`); empty for bf16.
    pub(crate) scales: Vec<f32>,
    /// int8: each output channel's sum of quantized weights, to take out the activations' zero point.
    pub(crate) column_sums: Vec<i32>,
    pub(crate) weights: Weights,
}

/// The converted weights of a [`PackedLinear`].
pub(crate) enum Weights {
    /// AMX tiles: for each 16-column block, its `k_tiles` tiles in order.
    Tiles { data: Stored, k_tiles: usize },
    /// The rounded (bf16) or quantized (int8, as integers) values in f32, `(out, in)` row-major.
    Emulated(Stored),
}

/// Bytes held elsewhere and shared, such as a file mapped into memory.
pub type SharedBytes = Box<dyn AsRef<[u8]> + Send + Sync>;

/// Converted weights: made at load, or mapped in place from the cache of converted layers
/// ([`crate::cache::converted`]).
pub(crate) enum Stored {
    Tiles(Aligned),
    Values(Vec<f32>),
    Mapped(SharedBytes),
}

impl Stored {
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Stored::Tiles(aligned) => aligned.bytes(),
            Stored::Values(values) => as_bytes(values),
            Stored::Mapped(mapped) => (**mapped).as_ref(),
        }
    }

    /// The bytes as f32 values (emulated weights: mapped ones were checked to be aligned).
    pub(crate) fn values(&self) -> &[f32] {
        match self {
            Stored::Values(values) => values,
            Stored::Mapped(mapped) => f32_values((**mapped).as_ref()).unwrap_or_default(),
            Stored::Tiles(_) => &[],
        }
    }
}

impl fmt::Debug for PackedLinear {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (path, stored) = match &self.weights {
            Weights::Tiles { data, .. } => ("amx", data),
            Weights::Emulated(values) => ("emulated", values),
        };
        let mapped = if matches!(stored, Stored::Mapped(_)) {
            ", mapped"
        } else {
            ""
        };
        write!(
            f,
            "PackedLinear({} {}x{} {path}{mapped})",
            self.precision, self.out_dim, self.in_dim
        )
    }
}

impl PackedLinear {
    /// Converts an `(out_dim, in_dim)` weight and its bias, on AMX when the CPU has it.
    pub fn new(weight: &[f32], bias: &[f32], out_dim: usize, precision: Precision) -> Self {
        Self::with_tiles(weight, bias, out_dim, precision, amx::available())
    }

    /// As [`PackedLinear::new`], choosing the path: tiles (AMX must be available) or emulated.
    pub fn with_tiles(
        weight: &[f32],
        bias: &[f32],
        out_dim: usize,
        precision: Precision,
        tiles: bool,
    ) -> Self {
        assert_eq!(bias.len(), out_dim, "one bias per output");
        let in_dim = weight.len() / out_dim.max(1);
        assert_eq!(weight.len(), out_dim * in_dim, "weight is (out, in)");
        let op = precision.tile_op().expect("a reduced precision");
        let rows = ConvertedRows::convert(weight, in_dim, op.formats().0);
        let (scales, column_sums) = match op {
            TileOp::Bf16 => (Vec::new(), Vec::new()),
            TileOp::Int8 => (
                rows.scales.iter().map(|s| s.scale).collect(),
                rows.bytes
                    .chunks(in_dim.max(1))
                    .map(|row| row.iter().map(|&q| q as i8 as i32).sum())
                    .collect(),
            ),
        };
        let weights = if tiles && amx::available() {
            pack_tiles(&rows, out_dim, in_dim, op)
        } else {
            Weights::Emulated(Stored::Values(rows.values()))
        };
        PackedLinear {
            precision,
            in_dim,
            out_dim,
            bias: bias.to_vec(),
            scales,
            column_sums,
            weights,
        }
    }
}

/// Packs the converted rows of an `(n, k)` weight into tiles: for each 16-column block, `k_tiles`
/// tiles whose row `r` holds, for each column, its four bytes of group `r` (2 bf16 or 4 int8
/// consecutive `k` values, which are adjacent in the weight's row). Columns and depth past the matrix
/// are zero.
fn pack_tiles(rows: &ConvertedRows, n: usize, k: usize, op: TileOp) -> Weights {
    let k_tiles = k.div_ceil(op.depth());
    let width = k * rows.format.bytes();
    let column_blocks = n.div_ceil(BLOCK) * 2;
    let block_bytes = k_tiles * TILE_BYTES;
    let mut data = Aligned::zeroed(column_blocks * block_bytes);
    data.bytes_mut()[..column_blocks * block_bytes]
        .par_chunks_mut(block_bytes)
        .enumerate()
        .for_each(|(cb, tiles)| {
            for col in 0..TILE_ROWS.min(n.saturating_sub(cb * TILE_ROWS)) {
                let j = cb * TILE_ROWS + col;
                let row = &rows.bytes[j * width..(j + 1) * width];
                for (g, group) in row.chunks(4).enumerate() {
                    let (t, r) = (g / TILE_ROWS, g % TILE_ROWS);
                    let at = t * TILE_BYTES + r * TILE_BYTES_PER_ROW + col * 4;
                    tiles[at..at + group.len()].copy_from_slice(group);
                }
            }
        });
    Weights::Tiles {
        data: Stored::Tiles(data),
        k_tiles,
    }
}
