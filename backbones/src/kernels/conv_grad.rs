//! Gradients of [`super::conv::conv2d`] (without epilogue) with respect to its input and its weights.
//!
//! Training on the CPU backend spends most of its time in the convolutions' backward pass. burn 0.21 computes
//! both gradients as other convolutions over transposed views, which lands the GEMMs in shapes its kernels
//! handle one 16-lane row at a time, plus strided layout copies. Written as the adjoints of im2col + GEMM they
//! are two GEMMs with the same well-shaped operands as the forward pass:
//!
//! - weights: `dW_g[C_out/g, K] += dY[C_out/g, P] x cols[K, P]^T`, summed over images and pixel chunks;
//! - input: `dcols[K, P] = W_g^T[K, C_out/g] x dY[C_out/g, P]`, then col2im adds each column-matrix row back
//!   onto the input pixels it was copied from (for a 1x1 stride-1 convolution the GEMM writes `dX` itself).
//!
//! Shapes as in [`super::conv::conv2d`]: `K = C_in / groups * kh * kw`, `P = H_out * W_out`.

use rayon::prelude::*;

use super::conv::{COL_BUDGET, ConvGeometry, OutPtr, Tile, im2col_row, tap_runs};
use super::{Strided, split, with_scratch};

/// Pixels per chunk of column matrix: within [`COL_BUDGET`].
fn chunk_pixels(g: &ConvGeometry, pixels: usize) -> usize {
    if g.is_pointwise() {
        pixels
    } else {
        (COL_BUDGET / g.col_rows()).clamp(1, pixels.max(1))
    }
}

/// Gradient of the loss with respect to the weights.
///
/// # Shapes
/// - `x`: `[N, C_in, H, W]`, `dy`: `[N, C_out, H_out, W_out]` (row-major)
/// - returns `[C_out, C_in / groups, kh, kw]`
pub fn conv2d_grad_weight(x: &[f32], dy: &[f32], g: &ConvGeometry) -> Vec<f32> {
    let [oh, ow] = g.out_hw();
    let pixels = oh * ow;
    let rows = g.col_rows();
    let (cig, cog) = (g.c_in_per_group(), g.c_out_per_group());
    assert_eq!(
        x.len(),
        g.batch * g.c_in * g.in_hw[0] * g.in_hw[1],
        "conv grad input length for {g:?}"
    );
    assert_eq!(
        dy.len(),
        g.batch * g.c_out * pixels,
        "conv grad output length for {g:?}"
    );
    let mut dw = vec![0.0f32; g.c_out * rows];
    if dw.is_empty() || pixels == 0 {
        return dw;
    }
    let threads = rayon::current_num_threads().max(1);
    let channel_blocks = split(cog, 2 * threads, 16);
    let row_blocks = split(rows, (2 * threads).div_ceil(channel_blocks.len()), 64);
    let step = chunk_pixels(g, pixels);
    let tasks: Vec<_> = channel_blocks
        .iter()
        .flat_map(|c| row_blocks.iter().map(move |r| (c.clone(), r.clone())))
        .collect();
    let dw_ptr = OutPtr(dw.as_mut_ptr());
    for image in 0..g.batch {
        for group in 0..g.groups {
            for start in (0..pixels).step_by(step) {
                let end = (start + step).min(pixels);
                let len = end - start;
                let col_len = if g.is_pointwise() { 0 } else { rows * len };
                with_scratch(col_len, |cols| {
                    let (rhs, rhs_rs): (&[f32], usize) = if g.is_pointwise() {
                        (&x[(image * g.c_in + group * cig) * pixels + start..], pixels)
                    } else {
                        let tile = Tile {
                            image,
                            group,
                            start,
                            end,
                        };
                        cols.par_chunks_mut(len)
                            .enumerate()
                            .for_each(|(r, dst)| im2col_row(x, g, &tile, r, dst));
                        (&*cols, len)
                    };
                    let lhs = &dy[(image * g.c_out + group * cog) * pixels + start..];
                    tasks.par_iter().for_each(|(c, r)| {
                        assert!(
                            lhs.len() >= (c.end - 1) * pixels + len
                                && rhs.len() >= (r.end - 1) * rhs_rs + len
                        );
                        // SAFETY: tasks write disjoint (channel, row) blocks of `dw`; operand bounds asserted
                        // above.
                        unsafe {
                            super::gemm(
                                [c.len(), r.len(), len],
                                Strided::rows(
                                    dw_ptr.get().add((group * cog + c.start) * rows + r.start),
                                    rows,
                                ),
                                Strided::rows(lhs.as_ptr().add(c.start * pixels), pixels),
                                // cols^T: element (pixel j, row r) of the column matrix is cols[r * rhs_rs + j].
                                Strided::transposed(rhs.as_ptr().add(r.start * rhs_rs), rhs_rs),
                                true,
                            );
                        }
                    });
                });
            }
        }
    }
    dw
}

/// Gradient of the loss with respect to the input.
///
/// # Shapes
/// - `dy`: `[N, C_out, H_out, W_out]`, `weight`: `[C_out, C_in / groups, kh, kw]` (row-major)
/// - returns `[N, C_in, H, W]`
pub fn conv2d_grad_input(dy: &[f32], weight: &[f32], g: &ConvGeometry) -> Vec<f32> {
    let [oh, ow] = g.out_hw();
    let [h, w] = g.in_hw;
    let pixels = oh * ow;
    let rows = g.col_rows();
    let (cig, cog) = (g.c_in_per_group(), g.c_out_per_group());
    assert_eq!(
        dy.len(),
        g.batch * g.c_out * pixels,
        "conv grad output length for {g:?}"
    );
    assert_eq!(weight.len(), g.c_out * rows, "conv grad weight length for {g:?}");
    let mut dx = vec![0.0f32; g.batch * g.c_in * h * w];
    if dx.is_empty() || pixels == 0 || cog == 0 {
        return dx;
    }
    let threads = rayon::current_num_threads().max(1);
    let step = chunk_pixels(g, pixels);
    for image in 0..g.batch {
        for group in 0..g.groups {
            let planes = (image * g.c_in + group * cig) * h * w..(image * g.c_in + (group + 1) * cig) * h * w;
            let weights = &weight[group * cog * rows..(group + 1) * cog * rows];
            for start in (0..pixels).step_by(step) {
                let end = (start + step).min(pixels);
                let len = end - start;
                let grad = &dy[(image * g.c_out + group * cog) * pixels + start..];
                let dcols_len = if g.is_pointwise() { 0 } else { rows * len };
                with_scratch(dcols_len, |dcols| {
                    // A 1x1 stride-1 convolution's column matrix is its input: write dX directly.
                    let (dst, dst_rs) = if g.is_pointwise() {
                        (OutPtr(dx[planes.start + start..].as_mut_ptr()), pixels)
                    } else {
                        (OutPtr(dcols.as_mut_ptr()), len)
                    };
                    // The tasks cover every (row, pixel) of `dcols`, so col2im below reads only fresh values.
                    let row_blocks = split(rows, 2 * threads, 32);
                    let pixel_blocks = split(len, (2 * threads).div_ceil(row_blocks.len()), 64);
                    let tasks: Vec<_> = row_blocks
                        .iter()
                        .flat_map(|r| pixel_blocks.iter().map(move |p| (r.clone(), p.clone())))
                        .collect();
                    tasks.into_par_iter().for_each(|(r, p)| {
                        assert!(grad.len() >= (cog - 1) * pixels + p.end);
                        // SAFETY: tasks write disjoint (row, pixel) blocks of `dst` (dX planes of this image
                        // and group, or `dcols`); W_g^T is read through strides (element (k, c) =
                        // weights[c * rows + k]).
                        unsafe {
                            super::gemm(
                                [r.len(), p.len(), cog],
                                Strided::rows(dst.get().add(r.start * dst_rs + p.start), dst_rs),
                                Strided::transposed(weights.as_ptr().add(r.start), rows),
                                Strided::rows(grad.as_ptr().add(p.start), pixels),
                                false,
                            );
                        }
                    });
                    if !g.is_pointwise() {
                        let taps = g.kernel[0] * g.kernel[1];
                        let dcols = &*dcols;
                        dx[planes.clone()]
                            .par_chunks_mut(h * w)
                            .enumerate()
                            .for_each(|(ci, plane)| {
                                for r in ci * taps..(ci + 1) * taps {
                                    let row = &dcols[r * len..(r + 1) * len];
                                    tap_runs(g, r, start..end, |cols, src| {
                                        if let Some((first, step)) = src {
                                            for (j, v) in row[cols].iter().enumerate() {
                                                plane[first + j * step] += v;
                                            }
                                        }
                                    });
                                }
                            });
                    }
                });
            }
        }
    }
    dx
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::conv::{Epilogue, conv2d};
    use crate::kernels::testing::{square_conv, values};

    fn dot(a: &[f32], b: &[f32]) -> f64 {
        a.iter().zip(b).map(|(a, b)| f64::from(*a) * f64::from(*b)).sum()
    }

    /// The convolution is linear in `x` and in `w`, so the gradients are its adjoints:
    /// `<conv(x, w), u> = <x, grad_input(u, w)> = <w, grad_weight(x, u)>` for any `u`. Checked in f64 sums,
    /// plus a finite difference on single entries (which a wrongly placed value would fail even where the
    /// inner products happen to agree).
    fn check(g: ConvGeometry) {
        let x = values(g.batch * g.c_in * g.in_hw[0] * g.in_hw[1], 11);
        let w = values(g.c_out * g.col_rows(), 12);
        let y = conv2d(&x, &w, &g, &Epilogue::NONE);
        let u = values(y.len(), 13);
        let gx = conv2d_grad_input(&u, &w, &g);
        let gw = conv2d_grad_weight(&x, &u, &g);
        let (lhs, rx, rw) = (dot(&y, &u), dot(&x, &gx), dot(&w, &gw));
        let tol = 1e-4 * (1.0 + lhs.abs());
        assert!(
            (lhs - rx).abs() < tol && (lhs - rw).abs() < tol,
            "{g:?}: {lhs} {rx} {rw}"
        );
        // d<conv(x, w), u>/dx_i = gx_i exactly (linearity), so a unit step measures it.
        for i in [0, x.len() / 3, x.len() - 1] {
            let mut x2 = x.clone();
            x2[i] += 1.0;
            let d = dot(&conv2d(&x2, &w, &g, &Epilogue::NONE), &u) - lhs;
            assert!(
                (d - f64::from(gx[i])).abs() < 1e-3,
                "{g:?} dx[{i}]: {d} vs {}",
                gx[i]
            );
        }
        for i in [0, w.len() / 2, w.len() - 1] {
            let mut w2 = w.clone();
            w2[i] += 1.0;
            let d = dot(&conv2d(&x, &w2, &g, &Epilogue::NONE), &u) - lhs;
            assert!(
                (d - f64::from(gw[i])).abs() < 1e-3,
                "{g:?} dw[{i}]: {d} vs {}",
                gw[i]
            );
        }
    }

    #[test]
    fn gradients_are_the_adjoints_of_the_convolution() {
        check(square_conv(2, 3, [9, 11], 5, 3, 1, 1));
        check(square_conv(2, 4, [10, 7], 6, 3, 2, 1));
        check(square_conv(2, 3, [13, 13], 8, 7, 2, 3));
        check(square_conv(2, 8, [6, 5], 7, 1, 1, 0)); // pointwise
        check(square_conv(2, 8, [7, 9], 4, 1, 2, 0)); // strided 1x1
        check(square_conv(2, 2, [3, 3], 2, 3, 1, 4)); // padding wider than the kernel reach
        check(square_conv(2, 16, [2, 2], 16, 3, 1, 1)); // an FPN's P5 of a 64 x 64 image
        check(square_conv(2, 16, [1, 1], 16, 3, 1, 1)); // its P6: every tap but the centre in the padding
        check(ConvGeometry {
            dilation: [2, 2],
            groups: 3,
            ..square_conv(2, 6, [9, 8], 9, 3, 1, 2)
        });
        // Many pixels and rows: several column-matrix chunks and task blocks.
        check(square_conv(2, 64, [100, 90], 20, 3, 1, 1)); // 576 rows x 9,000 pixels > COL_BUDGET
    }

    #[test]
    fn empty_inputs_give_zero_or_empty_gradients() {
        let g = ConvGeometry {
            batch: 0,
            ..square_conv(2, 2, [3, 3], 3, 3, 1, 1)
        };
        assert!(conv2d_grad_input(&[], &values(54, 1), &g).is_empty());
        assert_eq!(conv2d_grad_weight(&[], &[], &g), vec![0.0; 54]);
        // Kernel larger than the padded input: no output pixels, zero gradients.
        let g = ConvGeometry {
            batch: 1,
            ..square_conv(2, 1, [2, 2], 1, 3, 1, 0)
        };
        assert_eq!(conv2d_grad_input(&[], &[0.5; 9], &g), vec![0.0; 4]);
        assert_eq!(conv2d_grad_weight(&[1.0; 4], &[], &g), vec![0.0; 9]);
    }
}
