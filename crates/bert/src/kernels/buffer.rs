//! Buffers for the kernels: 64-byte-aligned bytes for AMX tiles ([`Aligned`]), and output buffers for
//! the kernels that store every element of their result before anything reads it (products,
//! element-wise and row-wise ops). Zero-filling such a buffer first is a pass over memory of its own,
//! single-threaded: in a fine-tuning step it was about 9% of the time.

/// A buffer of `len` values, left uninitialised, for a kernel that writes each of them before any is
/// read. This is what candle's `alloc_uninit` does for its own outputs.
#[allow(clippy::uninit_vec)]
pub fn output_buffer(len: usize) -> Vec<f32> {
    let mut values = Vec::with_capacity(len);
    // SAFETY: f32 has no invalid bit patterns and no drop; callers write every element before
    // reading it.
    unsafe { values.set_len(len) };
    values
}

/// A 64-byte-aligned line, so that tile rows never straddle cache lines.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// A 64-byte-aligned byte buffer.
#[derive(Default)]
pub struct Aligned {
    lines: Vec<Line>,
}

impl Aligned {
    /// An empty buffer.
    pub const fn new() -> Self {
        Aligned { lines: Vec::new() }
    }

    pub fn zeroed(bytes: usize) -> Self {
        Aligned {
            lines: vec![Line([0; 64]); bytes.div_ceil(64)],
        }
    }

    /// Room for at least `bytes` (contents unspecified).
    pub fn reserve(&mut self, bytes: usize) {
        let lines = bytes.div_ceil(64);
        if self.lines.len() < lines {
            self.lines = vec![Line([0; 64]); lines];
        }
    }

    pub fn bytes(&self) -> &[u8] {
        let len = self.lines.len() * 64;
        // SAFETY: `lines` holds `len` initialised bytes (a `Line` is plain bytes, no padding).
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr() as *const u8, len) }
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        let len = self.lines.len() * 64;
        // SAFETY: as in `bytes`, and the borrow is unique.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr() as *mut u8, len) }
    }
}

/// The bytes of plain numbers (f32, i32), for writing them.
pub fn as_bytes<T: Copy>(values: &[T]) -> &[u8] {
    // SAFETY: the numbers this is used for have no padding, so every byte is initialised.
    unsafe {
        std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values))
    }
}

/// `bytes` as f32 values, when they start on a 4-byte boundary and are a whole number of values (on
/// a little-endian machine, as the files hold them).
pub fn f32_values(bytes: &[u8]) -> Option<&[f32]> {
    let usable = cfg!(target_endian = "little")
        && (bytes.as_ptr() as usize).is_multiple_of(4)
        && bytes.len().is_multiple_of(4);
    // SAFETY: aligned and in bounds (checked), and every bit pattern is a valid f32.
    usable.then(|| unsafe {
        std::slice::from_raw_parts(bytes.as_ptr().cast::<f32>(), bytes.len() / 4)
    })
}
