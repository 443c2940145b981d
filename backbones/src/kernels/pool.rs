//! Max pooling.
//!
//! burn's CPU max pool (0.21) computes the argmax indices alongside the maxima and walks one output value at
//! a time: ~5 ms for the ResNet stem's pool at 224x224 on two cores, about as long as the stem convolution.
//! Inference needs only the maxima; this kernel takes each output row as a run over input rows, one plane per
//! task.

use rayon::prelude::*;

/// Geometry of a 2-D max pool (PyTorch's `MaxPool2d` with `dilation=1`, `ceil_mode=False`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolGeometry {
    /// Planes: batch times channels.
    pub planes: usize,
    /// Input height and width.
    pub in_hw: [usize; 2],
    /// Window height and width.
    pub kernel: [usize; 2],
    /// Stride (height, width).
    pub stride: [usize; 2],
    /// Implicit `-inf` padding (height, width), at most half the window as PyTorch requires.
    pub padding: [usize; 2],
}

impl PoolGeometry {
    /// Output height and width, `(in + 2 pad - k) / stride + 1` (0 if the window does not fit).
    pub fn out_hw(&self) -> [usize; 2] {
        let dim = |i: usize| {
            let padded = self.in_hw[i] + 2 * self.padding[i];
            if padded < self.kernel[i] {
                0
            } else {
                (padded - self.kernel[i]) / self.stride[i] + 1
            }
        };
        [dim(0), dim(1)]
    }
}

/// Max over each window; padding never wins (a window always holds an input value when the padding is at
/// most half the window).
///
/// # Shapes
/// - `x`: `[planes, H, W]` row-major -> `[planes, H_out, W_out]`
pub fn max_pool2d(x: &[f32], g: &PoolGeometry) -> Vec<f32> {
    let [h, w] = g.in_hw;
    assert_eq!(x.len(), g.planes * h * w, "max pool input length for {g:?}");
    assert!(
        2 * g.padding[0] <= g.kernel[0] && 2 * g.padding[1] <= g.kernel[1],
        "max pool padding over half the window: {g:?}"
    );
    let [oh, ow] = g.out_hw();
    let mut out = vec![f32::NEG_INFINITY; g.planes * oh * ow];
    if out.is_empty() {
        return out;
    }
    out.par_chunks_mut(oh * ow)
        .zip(x.par_chunks(h * w))
        .for_each(|(dst, plane)| pool_plane(plane, g, dst));
    out
}

fn pool_plane(plane: &[f32], g: &PoolGeometry, dst: &mut [f32]) {
    let [h, w] = g.in_hw;
    let [oh, ow] = g.out_hw();
    let [sh, sw] = g.stride;
    let [ph, pw] = g.padding;
    for oy in 0..oh {
        let out_row = &mut dst[oy * ow..(oy + 1) * ow];
        // Input rows of this window, clipped to the image.
        let y0 = (oy * sh).saturating_sub(ph);
        let y1 = (oy * sh + g.kernel[0] - ph).min(h);
        for row in plane[y0 * w..y1 * w].chunks_exact(w) {
            for (ox, v) in out_row.iter_mut().enumerate() {
                let x0 = (ox * sw).saturating_sub(pw);
                let x1 = (ox * sw + g.kernel[1] - pw).min(w);
                *v = row[x0..x1].iter().fold(*v, |m, &r| m.max(r));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Max pool from its definition: the max of the in-image positions of each window.
    fn naive(x: &[f32], g: &PoolGeometry) -> Vec<f32> {
        let [h, w] = g.in_hw;
        let [oh, ow] = g.out_hw();
        let mut y = Vec::new();
        for p in 0..g.planes {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut m = f32::NEG_INFINITY;
                    for ky in 0..g.kernel[0] {
                        for kx in 0..g.kernel[1] {
                            let iy = (oy * g.stride[0] + ky) as isize - g.padding[0] as isize;
                            let ix = (ox * g.stride[1] + kx) as isize - g.padding[1] as isize;
                            if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                m = m.max(x[(p * h + iy as usize) * w + ix as usize]);
                            }
                        }
                    }
                    y.push(m);
                }
            }
        }
        y
    }

    fn check(planes: usize, in_hw: [usize; 2], k: usize, s: usize, p: usize) {
        let g = PoolGeometry {
            planes,
            in_hw,
            kernel: [k, k],
            stride: [s, s],
            padding: [p, p],
        };
        // Distinct values in a scrambled order, negative ones included, so any wrong window shows.
        let x: Vec<f32> = (0..planes * in_hw[0] * in_hw[1])
            .map(|i| ((i * 7919) % 1013) as f32 - 500.0)
            .collect();
        assert_eq!(max_pool2d(&x, &g), naive(&x, &g), "{g:?}");
    }

    #[test]
    fn matches_the_definition() {
        check(3, [112, 112], 3, 2, 1); // the ResNet stem pool
        check(2, [7, 9], 3, 2, 1); // odd sizes: the last window is clipped
        check(2, [6, 6], 2, 2, 0);
        check(1, [5, 4], 3, 1, 1);
        check(1, [1, 1], 3, 2, 1);
    }

    #[test]
    fn empty_input_gives_empty_output() {
        let g = PoolGeometry {
            planes: 0,
            in_hw: [4, 4],
            kernel: [3, 3],
            stride: [2, 2],
            padding: [1, 1],
        };
        assert!(max_pool2d(&[], &g).is_empty());
    }
}
