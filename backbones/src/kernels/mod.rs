//! Multi-threaded f32 CPU kernels for inference on plain row-major buffers (no burn types).
//!
//! [`crate::fused`] routes the backbones' convolutions, pooling and residual sums here when the backend is
//! `Flex` (burn's CPU backend without autodiff); on that backend these layers otherwise dominate the forward
//! pass for reasons of layout and threading, not arithmetic (each module says which). Every kernel is tested
//! against its definition written out as plain loops.

pub mod conv;
pub mod conv_grad;
pub mod eltwise;
pub mod pool;

/// Split `0..len` into about `parts` ranges of at least `min` (fewer when `len` is small): how the kernels
/// cut a dimension into tasks for the threads.
pub(crate) fn split(len: usize, parts: usize, min: usize) -> Vec<std::ops::Range<usize>> {
    let parts = parts.min(len.div_ceil(min.max(1))).max(1);
    let size = len.div_ceil(parts);
    (0..len)
        .step_by(size.max(1))
        .map(|s| s..(s + size).min(len))
        .collect()
}

thread_local! {
    /// Column-matrix scratch of each thread that calls a convolution kernel, kept between calls (at most
    /// [`conv::COL_BUDGET`] floats). A fresh multi-megabyte buffer per layer is a fresh mmap whose pages all
    /// fault in again (measured: ~4 ms of a 60 ms ResNet-50 forward).
    static SCRATCH: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Run `f` on `len` floats of the calling thread's scratch buffer. The values are left over from earlier
/// calls: `f` must write every element it reads.
pub(crate) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let mut buf = SCRATCH.with(|c| c.take());
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    let result = f(&mut buf[..len]);
    SCRATCH.with(|c| c.replace(buf));
    result
}

/// A strided f32 matrix operand: element `(i, j)` at `ptr + i * row_stride + j * col_stride`.
#[derive(Clone, Copy)]
pub(crate) struct Strided<P> {
    pub(crate) ptr: P,
    pub(crate) row_stride: usize,
    pub(crate) col_stride: usize,
}

impl<P> Strided<P> {
    /// A row-major matrix whose rows are `row_stride` apart.
    pub(crate) fn rows(ptr: P, row_stride: usize) -> Self {
        Self {
            ptr,
            row_stride,
            col_stride: 1,
        }
    }

    /// The transpose of a row-major matrix whose rows are `row_stride` apart.
    pub(crate) fn transposed(ptr: P, row_stride: usize) -> Self {
        Self {
            ptr,
            row_stride: 1,
            col_stride: row_stride,
        }
    }
}

/// `dst[m, n] = lhs[m, k] x rhs[k, n]`, or `dst += lhs x rhs` when `accumulate`, on the calling thread (the
/// kernels split their work into such blocks themselves, so that every core gets several).
///
/// # Safety
/// Each operand must be valid for its `m x k`, `k x n`, `m x n` extent under its strides, and no other thread
/// may access `dst`'s elements during the call.
pub(crate) unsafe fn gemm(
    [m, n, k]: [usize; 3],
    dst: Strided<*mut f32>,
    lhs: Strided<*const f32>,
    rhs: Strided<*const f32>,
    accumulate: bool,
) {
    // SAFETY: forwarded from the caller.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.ptr,
            dst.col_stride as isize,
            dst.row_stride as isize,
            accumulate,
            lhs.ptr,
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.ptr,
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Helpers shared by the kernels' tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::conv::ConvGeometry;

    /// Deterministic values in [-1, 1) from an integer hash.
    pub(crate) fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len as u32)
            .map(|i| {
                let h = (i ^ seed)
                    .wrapping_mul(2_654_435_761)
                    .rotate_left(13)
                    .wrapping_mul(40_503);
                (h >> 8) as f32 / (1u32 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// A `k x k` convolution with stride `s` and padding `p` on both axes, no dilation, one group.
    pub(crate) fn square_conv(
        batch: usize,
        c_in: usize,
        hw: [usize; 2],
        c_out: usize,
        k: usize,
        s: usize,
        p: usize,
    ) -> ConvGeometry {
        ConvGeometry {
            batch,
            c_in,
            in_hw: hw,
            c_out,
            kernel: [k, k],
            stride: [s, s],
            padding: [p, p],
            dilation: [1, 1],
            groups: 1,
        }
    }
}
