//! A multi-threaded CPU convolution for inference, with BatchNorm and the activation fused into it.
//!
//! burn's CPU backend (`Flex`, 0.21) runs every non-1x1 convolution by repacking the weights to
//! `[C_out, kh, kw, C_in]` and the input to NHWC on every call, both single-threaded, then splits the work in
//! tiles of 512 output pixels: at batch 1 the last two ResNet stages (14x14 and 7x7 maps) form a single tile,
//! so their GEMMs run on one thread, behind a serial weight copy as large as the stage's parameters. In eval
//! mode none of that is needed:
//!
//! - NCHW im2col: a `[C_in * kh * kw, pixels]` column matrix whose row order matches the weights' own
//!   `[C_out, C_in, kh, kw]` layout, so the weights are the GEMM's left operand as stored (no repacking); its
//!   rows are shifted copies of input rows, built in parallel. 1x1 stride-1 convolutions use the input as is.
//! - The GEMM (the `gemm` crate, AVX-512 where the CPU has it) is split over output pixels and, when there
//!   are few pixels, over output channels, so that both cores work on every layer; each task writes its block
//!   of the output directly.
//! - The per-channel affine of an inference BatchNorm (`x * scale + shift`, the conv bias folded into `shift`)
//!   and the activation (a clamp) are applied to each block right after its GEMM, while it is in cache.
//!
//! Inputs larger than [`COL_BUDGET`] floats of column matrix are processed in chunks of tiles so memory stays
//! bounded at detection-sized inputs.

use rayon::prelude::*;

use super::{Strided, split, with_scratch};

/// Geometry of a 2-D convolution (PyTorch's `Conv2d` arguments plus the input size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    /// Batch size `N`.
    pub batch: usize,
    /// Input channels `C_in`.
    pub c_in: usize,
    /// Input height and width.
    pub in_hw: [usize; 2],
    /// Output channels `C_out`.
    pub c_out: usize,
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Stride (height, width).
    pub stride: [usize; 2],
    /// Zero padding (height, width), the same on both sides.
    pub padding: [usize; 2],
    /// Dilation (height, width).
    pub dilation: [usize; 2],
    /// Groups: `C_in` and `C_out` are split in this many independent convolutions.
    pub groups: usize,
}

impl ConvGeometry {
    /// Output height and width, `(in + 2 pad - dilation (k - 1) - 1) / stride + 1` (0 if the kernel does not fit).
    pub fn out_hw(&self) -> [usize; 2] {
        let dim = |i: usize| {
            let span = self.dilation[i] * (self.kernel[i] - 1) + 1;
            let padded = self.in_hw[i] + 2 * self.padding[i];
            if padded < span {
                0
            } else {
                (padded - span) / self.stride[i] + 1
            }
        };
        [dim(0), dim(1)]
    }

    /// Output shape `[N, C_out, H_out, W_out]`.
    pub fn out_shape(&self) -> [usize; 4] {
        let [oh, ow] = self.out_hw();
        [self.batch, self.c_out, oh, ow]
    }

    pub(super) fn c_in_per_group(&self) -> usize {
        self.c_in / self.groups
    }

    pub(super) fn c_out_per_group(&self) -> usize {
        self.c_out / self.groups
    }

    /// Rows of the column matrix (= columns of a group's weight matrix): `C_in / groups * kh * kw`.
    pub(super) fn col_rows(&self) -> usize {
        self.c_in_per_group() * self.kernel[0] * self.kernel[1]
    }

    /// A 1x1, stride-1, unpadded convolution reads its input as the column matrix.
    pub(super) fn is_pointwise(&self) -> bool {
        self.kernel == [1, 1] && self.stride == [1, 1] && self.padding == [0, 0]
    }
}

/// What happens to each output value after the convolution: `clamp(acc * scale[c] + shift[c], lo, hi)`.
#[derive(Debug, Clone, Copy)]
pub struct Epilogue<'a> {
    /// Per output channel multiplier (`None`: 1).
    pub scale: Option<&'a [f32]>,
    /// Per output channel offset (`None`: 0); holds the conv bias when there is one.
    pub shift: Option<&'a [f32]>,
    /// Lower clamp (`f32::NEG_INFINITY` for none, 0 for ReLU).
    pub lo: f32,
    /// Upper clamp (`f32::INFINITY` for none, 6 for ReLU6).
    pub hi: f32,
}

impl Epilogue<'_> {
    /// The raw convolution, nothing applied.
    pub const NONE: Epilogue<'static> = Epilogue {
        scale: None,
        shift: None,
        lo: f32::NEG_INFINITY,
        hi: f32::INFINITY,
    };

    fn apply(&self, channel: usize, row: &mut [f32]) {
        let scale = self.scale.map_or(1.0, |s| s[channel]);
        let shift = self.shift.map_or(0.0, |s| s[channel]);
        let (lo, hi) = (self.lo, self.hi);
        let clamps = lo > f32::NEG_INFINITY || hi < f32::INFINITY;
        match (scale != 1.0 || shift != 0.0, clamps) {
            (true, true) => row
                .iter_mut()
                .for_each(|v| *v = (*v * scale + shift).max(lo).min(hi)),
            (true, false) => row.iter_mut().for_each(|v| *v = *v * scale + shift),
            (false, true) => row.iter_mut().for_each(|v| *v = v.max(lo).min(hi)),
            (false, false) => {}
        }
    }
}

/// Largest column-matrix chunk built at once, in floats (16 MiB).
pub const COL_BUDGET: usize = 4 << 20;

/// Output pixels per tile: wide enough for the GEMM to run at full speed, narrow enough to give every thread
/// several tiles on large maps.
const TILE_PIXELS: usize = 1024;

/// Fewest output channels per GEMM task when a layer is split over channels.
const MIN_CHANNEL_BLOCK: usize = 16;

/// A raw pointer to the output buffer that tasks writing disjoint blocks may share.
#[derive(Clone, Copy)]
pub(super) struct OutPtr(pub(super) *mut f32);
// SAFETY: every task writes a block of the output no other task touches (distinct (image, channel range,
// pixel range) triples), and the buffer outlives the parallel section.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// The pointer (a method, so closures capture the `Sync` wrapper rather than its raw field).
    pub(super) fn get(self) -> *mut f32 {
        self.0
    }
}

/// One tile of output pixels of one (image, group).
#[derive(Clone, Copy)]
pub(super) struct Tile {
    pub(super) image: usize,
    pub(super) group: usize,
    /// Flattened output pixels `start..end`.
    pub(super) start: usize,
    pub(super) end: usize,
}

/// Convolve `x` with `weight` and apply `epilogue`.
///
/// # Shapes
/// - `x`: `[N, C_in, H, W]`, row-major (NCHW), `N * C_in * H * W` values
/// - `weight`: `[C_out, C_in / groups, kh, kw]`, row-major
/// - returns `[N, C_out, H_out, W_out]` (see [`ConvGeometry::out_shape`]), row-major
///
/// # Panics
/// If the slice lengths do not match the geometry, or `groups` does not divide both channel counts (callers
/// take the geometry from the tensors' shapes, so this is a bug, not bad input).
pub fn conv2d(x: &[f32], weight: &[f32], g: &ConvGeometry, epilogue: &Epilogue) -> Vec<f32> {
    assert!(
        g.groups > 0 && g.c_in.is_multiple_of(g.groups) && g.c_out.is_multiple_of(g.groups),
        "conv groups: {g:?}"
    );
    assert_eq!(
        x.len(),
        g.batch * g.c_in * g.in_hw[0] * g.in_hw[1],
        "conv input length for {g:?}"
    );
    assert_eq!(
        weight.len(),
        g.c_out * g.col_rows(),
        "conv weight length for {g:?}"
    );
    for s in [epilogue.scale, epilogue.shift].into_iter().flatten() {
        assert_eq!(s.len(), g.c_out, "conv epilogue length for {g:?}");
    }
    let [oh, ow] = g.out_hw();
    let pixels = oh * ow;
    let mut out = vec![0.0f32; g.batch * g.c_out * pixels];
    if out.is_empty() {
        return out;
    }
    if g.col_rows() == 0 {
        // No input channels: every accumulator is 0.
        for (i, row) in out.chunks_mut(pixels).enumerate() {
            epilogue.apply(i % g.c_out, row);
        }
        return out;
    }

    let threads = rayon::current_num_threads().max(1);
    let tile_pixels = tile_width(pixels, g.batch * g.groups, threads);
    let tiles: Vec<Tile> = (0..g.batch)
        .flat_map(|image| (0..g.groups).map(move |group| (image, group)))
        .flat_map(|(image, group)| {
            (0..pixels).step_by(tile_pixels).map(move |start| Tile {
                image,
                group,
                start,
                end: (start + tile_pixels).min(pixels),
            })
        })
        .collect();
    let rows = g.col_rows();
    let tiles_per_chunk = if g.is_pointwise() {
        tiles.len()
    } else {
        (COL_BUDGET / (rows * tile_pixels)).max(1)
    };
    let out_ptr = OutPtr(out.as_mut_ptr());
    for chunk in tiles.chunks(tiles_per_chunk) {
        let col_len = if g.is_pointwise() {
            0
        } else {
            chunk.len() * rows * tile_pixels
        };
        with_scratch(col_len, |cols| {
            // Every row of every tile's column matrix is written here before the GEMMs read it.
            cols.par_chunks_mut(rows * tile_pixels)
                .zip(chunk)
                .flat_map(|(col, tile)| {
                    col.par_chunks_mut(tile_pixels)
                        .enumerate()
                        .map(move |(r, dst)| (tile, r, dst))
                })
                .for_each(|(tile, r, dst)| im2col_row(x, g, tile, r, dst));
            // Split over output channels as well when the chunk has too few tiles to keep every thread busy.
            let blocks = split(
                g.c_out_per_group(),
                (2 * threads).div_ceil(chunk.len()),
                MIN_CHANNEL_BLOCK,
            );
            let cols = &*cols;
            (0..chunk.len() * blocks.len()).into_par_iter().for_each(|task| {
                let tile = &chunk[task / blocks.len()];
                let channels = blocks[task % blocks.len()].clone();
                let (rhs, rhs_rs) = if g.is_pointwise() {
                    let offset = (tile.image * g.c_in + tile.group * rows) * pixels + tile.start;
                    (&x[offset..], pixels)
                } else {
                    (&cols[(task / blocks.len()) * rows * tile_pixels..], tile_pixels)
                };
                // SAFETY: see `OutPtr`; `rhs` holds `rows` rows of `rhs_rs` values from which the tile's
                // columns are read, `weight` the group's `c_out` rows of `rows` values.
                unsafe { gemm_block(out_ptr, g, tile, channels, weight, rhs, rhs_rs, epilogue) };
            });
        });
    }
    out
}

/// Output pixels per tile: at most [`TILE_PIXELS`], and an equal share of the map for each thread when the
/// map has room for that (a 56x56 map in tiles of 1024 would leave one of two threads with twice the work).
fn tile_width(pixels: usize, planes: usize, threads: usize) -> usize {
    let mut tiles = pixels.div_ceil(TILE_PIXELS);
    if planes * tiles < threads * 4 && pixels >= threads * 64 {
        tiles = tiles.next_multiple_of(threads);
    }
    pixels.div_ceil(tiles.max(1))
}

/// `out[image, group's channels, tile pixels] = W[channels] x rhs`, then the epilogue on that block.
///
/// # Safety
/// No other thread may access the block of `out` this writes; `rhs` must hold `col_rows` rows of stride
/// `rhs_rs` covering the tile's width.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_block(
    out: OutPtr,
    g: &ConvGeometry,
    tile: &Tile,
    channels: std::ops::Range<usize>,
    weight: &[f32],
    rhs: &[f32],
    rhs_rs: usize,
    epilogue: &Epilogue,
) {
    let [oh, ow] = g.out_hw();
    let pixels = oh * ow;
    let rows = g.col_rows();
    let width = tile.end - tile.start;
    let first = tile.group * g.c_out_per_group() + channels.start;
    let lhs = &weight[first * rows..(first + channels.len()) * rows];
    assert!(
        rhs.len() >= (rows - 1) * rhs_rs + width,
        "conv: column matrix too short"
    );
    let dst_offset = (tile.image * g.c_out + first) * pixels + tile.start;
    // SAFETY: bounds asserted above and by construction of the output (`N * C_out * pixels` values).
    unsafe {
        let dst = out.0.add(dst_offset);
        super::gemm(
            [channels.len(), width, rows],
            Strided::rows(dst, pixels),
            Strided::rows(lhs.as_ptr(), rows),
            Strided::rows(rhs.as_ptr(), rhs_rs),
            false,
        );
        for (i, c) in (first..first + channels.len()).enumerate() {
            let row = std::slice::from_raw_parts_mut(dst.add(i * pixels), width);
            epilogue.apply(c, row);
        }
    }
}

/// Fill row `r` = (input channel, ky, kx) of a tile's column matrix: the input pixel each output pixel of the
/// tile sees through that kernel tap, 0 in the padding.
pub(super) fn im2col_row(x: &[f32], g: &ConvGeometry, tile: &Tile, r: usize, dst: &mut [f32]) {
    let [h, w] = g.in_hw;
    let channel = tile.image * g.c_in + tile.group * g.c_in_per_group() + r / (g.kernel[0] * g.kernel[1]);
    let plane = &x[channel * h * w..(channel + 1) * h * w];
    tap_runs(g, r, tile.start..tile.end, |cols, src| {
        let seg = &mut dst[cols];
        match src {
            None => seg.fill(0.0),
            Some((first, 1)) => seg.copy_from_slice(&plane[first..first + seg.len()]),
            Some((first, step)) => {
                for (j, v) in seg.iter_mut().enumerate() {
                    *v = plane[first + j * step];
                }
            }
        }
    });
}

/// The runs of output pixels `pixels` (flattened `oy * W_out + ox`) and what kernel tap `r` (`(ci, ky, kx)`
/// flattened, as the column-matrix rows) reads for them: `f(cols, None)` for pixels whose tap falls in the
/// padding, `f(cols, Some((first, step)))` for a run reading input plane positions `first + j * step`.
/// `cols` are offsets from `pixels.start`. The runs cover `pixels` in order.
pub(super) fn tap_runs(
    g: &ConvGeometry,
    r: usize,
    pixels: std::ops::Range<usize>,
    mut f: impl FnMut(std::ops::Range<usize>, Option<(usize, usize)>),
) {
    let [kh, kw] = g.kernel;
    let tap = r % (kh * kw);
    let (ky, kx) = (tap / kw, tap % kw);
    let [h, w] = g.in_hw;
    let [_, ow] = g.out_hw();
    // Input column of output column `ox` is `ox * sw + dx` (as a signed offset).
    let dx = (kx * g.dilation[1]) as isize - g.padding[1] as isize;
    let dy = (ky * g.dilation[0]) as isize - g.padding[0] as isize;
    let sw = g.stride[1];
    // Output columns whose input column lies inside the image: `lo_x..hi_x`.
    let lo_x = if dx >= 0 { 0 } else { (-dx as usize).div_ceil(sw) };
    let hi_x = if (w as isize) > dx {
        ((w as isize - dx) as usize).div_ceil(sw).min(ow)
    } else {
        0
    };
    let base = pixels.start;
    let mut p = pixels.start;
    while p < pixels.end {
        let (oy, ox0) = (p / ow, p % ow);
        let ox1 = ow.min(ox0 + (pixels.end - p));
        let at = |ox: usize| p - base + ox - ox0;
        let iy = (oy * g.stride[0]) as isize + dy;
        if iy < 0 || iy >= h as isize || lo_x >= hi_x {
            f(at(ox0)..at(ox1), None);
        } else {
            let (a, b) = (lo_x.clamp(ox0, ox1), hi_x.clamp(ox0, ox1));
            if a > ox0 {
                f(at(ox0)..at(a), None);
            }
            if b > a {
                let first = iy as usize * w + ((a * sw) as isize + dx) as usize;
                f(at(a)..at(b), Some((first, sw)));
            }
            if ox1 > b {
                f(at(b)..at(ox1), None);
            }
        }
        p += ox1 - ox0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::{square_conv as geometry, values};

    /// Convolution straight from its definition:
    /// `y[n, co, oy, ox] = sum_{ci, ky, kx} w[co, ci, ky, kx] * x[n, g*cig + ci, oy*s - p + ky*d, ox*s - p + kx*d]`.
    fn naive(x: &[f32], w: &[f32], g: &ConvGeometry) -> Vec<f32> {
        let [oh, ow] = g.out_hw();
        let (cig, cog) = (g.c_in / g.groups, g.c_out / g.groups);
        let [h, wd] = g.in_hw;
        let mut y = vec![0.0f32; g.batch * g.c_out * oh * ow];
        for n in 0..g.batch {
            for co in 0..g.c_out {
                let grp = co / cog;
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut acc = 0.0f64;
                        for ci in 0..cig {
                            for ky in 0..g.kernel[0] {
                                for kx in 0..g.kernel[1] {
                                    let iy = (oy * g.stride[0] + ky * g.dilation[0]) as isize
                                        - g.padding[0] as isize;
                                    let ix = (ox * g.stride[1] + kx * g.dilation[1]) as isize
                                        - g.padding[1] as isize;
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                        continue;
                                    }
                                    let xv = x[((n * g.c_in + grp * cig + ci) * h + iy as usize) * wd
                                        + ix as usize];
                                    let wv = w[((co * cig + ci) * g.kernel[0] + ky) * g.kernel[1] + kx];
                                    acc += (xv * wv) as f64;
                                }
                            }
                        }
                        y[((n * g.c_out + co) * oh + oy) * ow + ox] = acc as f32;
                    }
                }
            }
        }
        y
    }

    fn check(g: ConvGeometry) {
        let x = values(g.batch * g.c_in * g.in_hw[0] * g.in_hw[1], 1);
        let w = values(g.c_out * g.c_in / g.groups * g.kernel[0] * g.kernel[1], 2);
        let want = naive(&x, &w, &g);
        let got = conv2d(&x, &w, &g, &Epilogue::NONE);
        assert_eq!(got.len(), want.len(), "{g:?}");
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!(
                (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                "{g:?} at {i}: {a} vs {b}"
            );
        }
    }

    #[test]
    fn matches_the_definition_over_kernels_strides_paddings() {
        check(geometry(1, 3, [9, 11], 5, 3, 1, 1)); // 3x3 "same"
        check(geometry(2, 4, [10, 7], 6, 3, 2, 1)); // strided, odd width
        check(geometry(1, 3, [13, 13], 8, 7, 2, 3)); // the ResNet stem
        check(geometry(2, 8, [6, 5], 7, 1, 1, 0)); // pointwise: the input is the column matrix
        check(geometry(1, 8, [7, 9], 4, 1, 2, 0)); // strided 1x1 (projection shortcut)
        check(geometry(1, 2, [4, 4], 3, 5, 1, 0)); // kernel larger than part of the padded input
        check(geometry(1, 2, [3, 3], 2, 3, 1, 4)); // padding wider than the kernel reach: zero rows and columns
    }

    #[test]
    fn matches_the_definition_with_dilation_groups_and_rectangular_kernels() {
        let mut g = geometry(2, 6, [9, 8], 9, 3, 1, 2);
        g.dilation = [2, 2];
        g.groups = 3;
        check(g);
        let mut g = geometry(1, 4, [8, 10], 4, 3, 1, 1);
        g.kernel = [1, 3];
        g.padding = [0, 1];
        g.stride = [2, 1];
        g.groups = 4; // depthwise
        check(g);
    }

    #[test]
    fn large_inputs_are_tiled_and_chunked() {
        // 70x60 output pixels = 5 tiles of 1024; 64 * 9 rows * 1024 > COL_BUDGET / 8, so chunks of several tiles.
        let g = geometry(2, 64, [70, 60], 20, 3, 1, 1);
        assert!(g.col_rows() * TILE_PIXELS * 16 > COL_BUDGET / 8);
        check(g);
        // Few pixels, many channels: the GEMM is split over output channels.
        check(geometry(1, 96, [3, 3], 200, 3, 1, 1));
    }

    #[test]
    fn epilogue_scales_shifts_and_clamps_per_channel() {
        let g = geometry(1, 2, [3, 3], 3, 3, 1, 1);
        let x = values(18, 3);
        let w = values(54, 4);
        let raw = naive(&x, &w, &g);
        let scale = [2.0, -1.0, 0.5];
        let shift = [0.25, 1.0, -3.0];
        let e = Epilogue {
            scale: Some(&scale),
            shift: Some(&shift),
            lo: 0.0,
            hi: 6.0,
        };
        let got = conv2d(&x, &w, &g, &e);
        for (i, (a, r)) in got.iter().zip(&raw).enumerate() {
            let c = i / 9;
            let want = (r * scale[c] + shift[c]).clamp(0.0, 6.0);
            assert!((a - want).abs() < 1e-5, "{i}: {a} vs {want}");
        }
    }

    #[test]
    fn empty_inputs_give_empty_or_epilogue_only_outputs() {
        // No images.
        assert!(
            conv2d(
                &[],
                &values(54, 1),
                &geometry(0, 2, [3, 3], 3, 3, 1, 1),
                &Epilogue::NONE
            )
            .is_empty()
        );
        // Kernel does not fit: no output pixels.
        let g = geometry(1, 1, [2, 2], 1, 3, 1, 0);
        assert_eq!(g.out_hw(), [0, 0]);
        assert!(conv2d(&[0.0; 4], &[0.0; 9], &g, &Epilogue::NONE).is_empty());
        // No input channels: the output is the epilogue applied to 0 (here the shift).
        let g = geometry(1, 0, [2, 2], 2, 1, 1, 0);
        let shift = [1.5, -2.0];
        let e = Epilogue {
            shift: Some(&shift),
            ..Epilogue::NONE
        };
        assert_eq!(
            conv2d(&[], &[], &g, &e),
            vec![1.5, 1.5, 1.5, 1.5, -2.0, -2.0, -2.0, -2.0]
        );
    }
}
