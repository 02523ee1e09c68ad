//! Output buffers for the kernels that store every element of their result before anything reads it
//! (products, element-wise and row-wise ops). Zero-filling such a buffer first is a pass over memory of
//! its own, single-threaded: in a fine-tuning step it was about 9% of the time.

/// A buffer of `len` values, left uninitialised, for a kernel that writes each of them before any is
/// read. This is what candle's `alloc_uninit` does for its own outputs.
#[allow(clippy::uninit_vec)]
pub(crate) fn output_buffer(len: usize) -> Vec<f32> {
    let mut values = Vec::with_capacity(len);
    // SAFETY: f32 has no invalid bit patterns and no drop; callers write every element before
    // reading it.
    unsafe { values.set_len(len) };
    values
}
