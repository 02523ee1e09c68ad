//! A dropout mask as the fused training ops keep it for their backward passes: one byte per value
//! (kept or dropped) and the scale of the kept ones, a quarter of the f32 mask
//! [`crate::nn::Dropout::mask`] draws, with the same multipliers.

/// Which values a dropout kept, and what it multiplies them by.
#[derive(Debug, Clone)]
pub struct DropoutMask {
    kept: Vec<u8>,
    scale: f32,
}

impl DropoutMask {
    /// From an f32 mask: 0 where dropped, `1 / (1 - p)` where kept.
    pub fn new(mask: &[f32]) -> Self {
        DropoutMask {
            kept: mask.iter().map(|&v| u8::from(v != 0.0)).collect(),
            scale: mask.iter().copied().find(|&v| v != 0.0).unwrap_or(1.0),
        }
    }

    /// How many values the mask covers.
    pub fn len(&self) -> usize {
        self.kept.len()
    }

    pub fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }

    /// Multiplies each `values[j]` by the mask's value at `start + j` (0 or the scale).
    pub fn apply_in_place(&self, values: &mut [f32], start: usize) {
        let kept = &self.kept[start..start + values.len()];
        for (v, &k) in values.iter_mut().zip(kept) {
            *v *= if k != 0 { self.scale } else { 0.0 };
        }
    }

    /// Each `values[j]` times the mask's value at `start + j`, into `out[j]`.
    pub fn apply(&self, values: &[f32], start: usize, out: &mut [f32]) {
        let kept = &self.kept[start..start + values.len()];
        for ((o, &v), &k) in out.iter_mut().zip(values).zip(kept) {
            *o = v * if k != 0 { self.scale } else { 0.0 };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gives_back_the_f32_masks_multipliers() {
        let mask = [0.0, 1.25, 1.25, 0.0, 1.25];
        let bytes = DropoutMask::new(&mask);
        let mut factors = [0f32; 5];
        bytes.apply(&[1.0; 5], 0, &mut factors);
        assert_eq!(factors, mask);
        let mut out = [0f32; 3];
        bytes.apply(&[2.0, 4.0, 8.0], 2, &mut out);
        assert_eq!(out, [2.5, 0.0, 10.0]);
        let mut values = [2.0, 4.0];
        bytes.apply_in_place(&mut values, 0);
        assert_eq!(values, [0.0, 5.0]);
    }
}
