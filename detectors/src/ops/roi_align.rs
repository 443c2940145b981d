//! RoIAlign (He et al.) with torchvision's exact semantics, forward and backward, as a burn op that works under
//! `Autodiff`.
//!
//! A RoI `(b, x1, y1, x2, y2)` in image pixels is scaled by `spatial_scale` (and shifted by -0.5 when `aligned`),
//! split into `out_h x out_w` bins, and each bin averages `grid_h x grid_w` bilinear samples at the centres of a
//! regular sub-grid; `sampling_ratio = 0` picks `ceil(bin size)` samples per axis (adaptive). Without `aligned`,
//! RoIs are at least 1x1 on the feature map (torchvision's legacy behaviour). Samples farther than one pixel
//! outside the map contribute zero; others are clamped to the border. Boxes are constants (no box gradient),
//! as in torchvision.
//!
//! Backends: [`RoiAlignBackend`]'s default methods work on any backend with device gathers/scatter-adds (bilinear
//! taps are computed on the host from the small RoI list). `Flex` overrides them with a multi-threaded CPU kernel.
//! `Autodiff<B>` registers the hand-written backward.

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::prelude::*;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{IndexingUpdateOp, TensorMetadata, TensorPrimitive};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::structures::BlocksError;
use attndet_backbones::fused::flex_values;

/// RoIAlign parameters (torchvision `roi_align` arguments).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoiAlignOptions {
    /// Output `[height, width]` per RoI (7x7 for box heads, 14x14 for mask heads).
    pub output_size: [usize; 2],
    /// Feature-map scale relative to the image (1 / stride).
    pub spatial_scale: f32,
    /// Samples per bin along each axis; 0 = adaptive `ceil(bin size)`.
    pub sampling_ratio: usize,
    /// Pixel-centre alignment (shift by -0.5); mmdetection uses `true`, torchvision's poolers `false`.
    pub aligned: bool,
}

/// One bilinear tap of an output cell: flat offset inside the `H x W` plane and weight (already divided by the
/// number of samples of the bin).
type Tap = (u32, f32);

/// Sampling geometry of one RoI.
struct RoiGeometry {
    batch: usize,
    start: [f32; 2],
    bin: [f32; 2],
    grid: [usize; 2],
}

fn geometry(roi: &[f32], o: &RoiAlignOptions) -> RoiGeometry {
    let offset = if o.aligned { 0.5 } else { 0.0 };
    let x1 = roi[1] * o.spatial_scale - offset;
    let y1 = roi[2] * o.spatial_scale - offset;
    let mut w = roi[3] * o.spatial_scale - offset - x1;
    let mut h = roi[4] * o.spatial_scale - offset - y1;
    if !o.aligned {
        w = w.max(1.0);
        h = h.max(1.0);
    }
    let bin = [h / o.output_size[0] as f32, w / o.output_size[1] as f32];
    let grid = if o.sampling_ratio > 0 {
        [o.sampling_ratio, o.sampling_ratio]
    } else {
        [bin[0].ceil().max(0.0) as usize, bin[1].ceil().max(0.0) as usize]
    };
    RoiGeometry {
        batch: roi[0] as usize,
        start: [y1, x1],
        bin,
        grid,
    }
}

/// Appends the taps of every output cell of one RoI to `taps` (cell-major, `per_cell` taps per cell, zero-weight
/// padding where a sample falls outside) and returns `per_cell`.
fn roi_taps(g: &RoiGeometry, o: &RoiAlignOptions, h: usize, w: usize, taps: &mut Vec<Tap>) -> usize {
    let [gh, gw] = g.grid;
    let per_cell = gh * gw * 4;
    let count = (gh * gw).max(1) as f32;
    taps.clear();
    for ph in 0..o.output_size[0] {
        for pw in 0..o.output_size[1] {
            for iy in 0..gh {
                let y = g.start[0] + ph as f32 * g.bin[0] + (iy as f32 + 0.5) * g.bin[0] / gh as f32;
                for ix in 0..gw {
                    let x = g.start[1] + pw as f32 * g.bin[1] + (ix as f32 + 0.5) * g.bin[1] / gw as f32;
                    match bilinear(y, x, h, w) {
                        Some(t) => taps.extend(t.map(|(off, wt)| (off, wt / count))),
                        None => taps.extend([(0, 0.0); 4]),
                    }
                }
            }
        }
    }
    per_cell
}

/// torchvision's `bilinear_interpolate` weights: `None` when the sample is more than one pixel outside.
fn bilinear(mut y: f32, mut x: f32, h: usize, w: usize) -> Option<[Tap; 4]> {
    if y < -1.0 || y > h as f32 || x < -1.0 || x > w as f32 || h == 0 || w == 0 {
        return None;
    }
    y = y.max(0.0);
    x = x.max(0.0);
    let (mut yl, mut xl) = (y as usize, x as usize);
    let (yh, xh);
    if yl >= h - 1 {
        yl = h - 1;
        yh = h - 1;
        y = yl as f32;
    } else {
        yh = yl + 1;
    }
    if xl >= w - 1 {
        xl = w - 1;
        xh = w - 1;
        x = xl as f32;
    } else {
        xh = xl + 1;
    }
    let (ly, lx) = (y - yl as f32, x - xl as f32);
    let (hy, hx) = (1.0 - ly, 1.0 - lx);
    let at = |yy: usize, xx: usize| (yy * w + xx) as u32;
    Some([
        (at(yl, xl), hy * hx),
        (at(yl, xh), hy * lx),
        (at(yh, xl), ly * hx),
        (at(yh, xh), ly * lx),
    ])
}

/// Forward on host slices. `x`: `[N, C, H, W]`, `rois`: `[K, 5]`; returns `[K, C, out_h, out_w]`.
///
/// The map is first transposed to channels-last (a temporary copy of `x`), so that every bilinear tap reads one
/// contiguous channel vector (vectorised multiply-adds instead of one scattered load per channel and tap).
pub(crate) fn roi_align_forward_host(
    x: &[f32],
    [n, c, h, w]: [usize; 4],
    rois: &[f32],
    o: &RoiAlignOptions,
) -> Vec<f32> {
    let cells = o.output_size[0] * o.output_size[1];
    let k = rois.len() / 5;
    let mut out = vec![0f32; k * c * cells];
    let plane = h * w;
    if cells == 0 || c == 0 || plane == 0 || k == 0 {
        return out;
    }
    let nhwc = to_channels_last(x, [n, c, h, w]);
    out.par_chunks_mut(c * cells)
        .zip(rois.par_chunks(5))
        .for_each_init(
            || (Vec::new(), vec![0f32; cells * c]),
            |(taps, acc), (dst, roi)| {
                let g = geometry(roi, o);
                if g.batch >= n {
                    return; // a RoI of a missing image pools nothing
                }
                let per_cell = roi_taps(&g, o, h, w, taps);
                if per_cell == 0 {
                    return;
                }
                let image = &nhwc[g.batch * plane * c..][..plane * c];
                for (cell, a) in acc.chunks_mut(c).enumerate() {
                    a.fill(0.0);
                    for &(i, wt) in &taps[cell * per_cell..][..per_cell] {
                        if wt != 0.0 {
                            let src = &image[i as usize * c..][..c];
                            for (av, &sv) in a.iter_mut().zip(src) {
                                *av += wt * sv;
                            }
                        }
                    }
                }
                for (ch, d) in dst.chunks_mut(cells).enumerate() {
                    for (cell, dv) in d.iter_mut().enumerate() {
                        *dv = acc[cell * c + ch];
                    }
                }
            },
        );
    out
}

/// `[N, C, H, W]` to `[N, H, W, C]`, in parallel over image rows.
fn to_channels_last(x: &[f32], [n, c, h, w]: [usize; 4]) -> Vec<f32> {
    let mut out = vec![0f32; n * h * w * c];
    out.par_chunks_mut(w * c).enumerate().for_each(|(row, dst)| {
        let (b, y) = (row / h, row % h);
        for ch in 0..c {
            let src = &x[((b * c + ch) * h + y) * w..][..w];
            for (xx, &v) in src.iter().enumerate() {
                dst[xx * c + ch] = v;
            }
        }
    });
    out
}

/// Backward on host slices: the input gradient `[N, C, H, W]` for `grad_out` `[K, C, out_h, out_w]`.
///
/// Parallel over channel blocks so that threads never write the same plane; taps are recomputed per block
/// (cheap next to the channel loop).
pub(crate) fn roi_align_backward_host(
    grad_out: &[f32],
    [n, c, h, w]: [usize; 4],
    rois: &[f32],
    o: &RoiAlignOptions,
) -> Vec<f32> {
    let cells = o.output_size[0] * o.output_size[1];
    let plane = h * w;
    let mut gx = vec![0f32; n * c * plane];
    if cells == 0 || c == 0 || plane == 0 {
        return gx;
    }
    let block = c.div_ceil((rayon::current_num_threads() * 4).max(1)).max(1);
    // gx viewed as [N][C][plane]: split each image's channels into blocks, process blocks in parallel.
    let mut jobs: Vec<(usize, usize, &mut [f32])> = Vec::new();
    for (b, img) in gx.chunks_mut(c * plane).enumerate() {
        for (j, blk) in img.chunks_mut(block * plane).enumerate() {
            jobs.push((b, j * block, blk));
        }
    }
    jobs.into_par_iter().for_each(|(b, c0, blk)| {
        let mut taps = Vec::new();
        let nch = blk.len() / plane;
        for (r, roi) in rois.chunks(5).enumerate() {
            let g = geometry(roi, o);
            if g.batch != b {
                continue;
            }
            let per_cell = roi_taps(&g, o, h, w, &mut taps);
            if per_cell == 0 {
                continue;
            }
            for dc in 0..nch {
                let dst = &mut blk[dc * plane..][..plane];
                let go = &grad_out[(r * c + c0 + dc) * cells..][..cells];
                for (cell, &gv) in go.iter().enumerate() {
                    for &(i, wt) in &taps[cell * per_cell..][..per_cell] {
                        dst[i as usize] += wt * gv;
                    }
                }
            }
        }
    });
    gx
}

/// A backend that can run RoIAlign. The default methods work on any backend (device gathers and scatter-adds,
/// chunked over RoIs to bound memory); backends with a native kernel override them.
pub trait RoiAlignBackend: Backend {
    /// Forward. `x`: `[N, C, H, W]`, `rois`: `[K, 5]` `(batch, x1, y1, x2, y2)`; returns `[K, C, out_h, out_w]`.
    fn roi_align(
        x: FloatTensor<Self>,
        rois: FloatTensor<Self>,
        options: RoiAlignOptions,
    ) -> FloatTensor<Self> {
        let x = Tensor::<Self, 4>::from_primitive(TensorPrimitive::Float(x));
        let rois = Tensor::<Self, 2>::from_primitive(TensorPrimitive::Float(rois));
        roi_align_gather(x, rois, options).into_primitive().tensor()
    }

    /// Input gradient for an output gradient (`[K, C, out_h, out_w]`) of [`RoiAlignBackend::roi_align`].
    fn roi_align_backward(
        x_shape: [usize; 4],
        rois: FloatTensor<Self>,
        grad_out: FloatTensor<Self>,
        options: RoiAlignOptions,
    ) -> FloatTensor<Self> {
        let rois = Tensor::<Self, 2>::from_primitive(TensorPrimitive::Float(rois));
        let grad_out = Tensor::<Self, 4>::from_primitive(TensorPrimitive::Float(grad_out));
        roi_align_scatter(x_shape, rois, grad_out, options)
            .into_primitive()
            .tensor()
    }
}

/// Upper bound on `taps x channels` floats held at once by the generic formulation.
const GATHER_BUDGET: usize = 1 << 26;

/// Upper bound on the rows (`rois x cells x taps`) of one scatter-add of the generic backward.
const SCATTER_ROWS: usize = 1 << 14;

/// Host taps of a batch of RoIs as (flat `b*H*W + y*W + x` row index, weight) pairs, `[cells * T]` each.
fn host_taps(rois: &[f32], [n, _, h, w]: [usize; 4], o: &RoiAlignOptions) -> (Vec<i64>, Vec<f32>, usize) {
    let cells = o.output_size[0] * o.output_size[1];
    let k = rois.len() / 5;
    let geoms: Vec<RoiGeometry> = rois.chunks(5).map(|r| geometry(r, o)).collect();
    let t = geoms
        .iter()
        .map(|g| g.grid[0] * g.grid[1] * 4)
        .max()
        .unwrap_or(0)
        .max(4);
    let (mut idx, mut wts) = (vec![0i64; k * cells * t], vec![0f32; k * cells * t]);
    let mut taps = Vec::new();
    for (r, g) in geoms.iter().enumerate() {
        if g.batch >= n {
            continue;
        }
        let per_cell = roi_taps(g, o, h, w, &mut taps);
        for cell in 0..cells {
            for (j, &(i, wt)) in taps[cell * per_cell..][..per_cell].iter().enumerate() {
                let q = (r * cells + cell) * t + j;
                idx[q] = (g.batch * h * w) as i64 + i as i64;
                wts[q] = wt;
            }
        }
    }
    (idx, wts, t)
}

fn rois_to_host<B: Backend>(rois: Tensor<B, 2>) -> Vec<f32> {
    rois.into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .unwrap_or_default()
}

/// The most bilinear taps any output cell of `rois` (host `[K, 5]` rows) takes: what a batch of them holds per
/// cell and channel.
fn max_taps(rois: &[f32], o: &RoiAlignOptions) -> usize {
    rois.chunks(5)
        .map(|r| {
            let g = geometry(r, o);
            g.grid[0] * g.grid[1] * 4
        })
        .max()
        .unwrap_or(0)
        .max(4)
}

/// RoIs per batch so that a batch's `rois x cells x taps x channels` floats stay within [`GATHER_BUDGET`]
/// (at least one RoI). `taps` is [`max_taps`] of all the RoIs: with adaptive sampling a large RoI takes
/// `ceil(bin)^2 x 4` taps per cell, far more than a small one's.
fn roi_chunks(k: usize, cells: usize, c: usize, taps: usize) -> usize {
    (GATHER_BUDGET / (cells * c * taps).max(1)).clamp(1, k.max(1))
}

/// RoIAlign from differentiable primitives (`select` of rows, multiply, sum): works on every backend, and under
/// `Autodiff` without a custom backward.
///
/// # Shapes
/// - x: `[N, C, H, W]`, rois: `[K, 5]`; output: `[K, C, out_h, out_w]`
pub fn roi_align_gather<B: Backend>(x: Tensor<B, 4>, rois: Tensor<B, 2>, o: RoiAlignOptions) -> Tensor<B, 4> {
    let [n, c, h, w] = x.dims();
    let [oh, ow] = o.output_size;
    let cells = oh * ow;
    let device = x.device();
    let k = rois.dims()[0];
    if k == 0 || c == 0 || cells == 0 || n * h * w == 0 {
        return Tensor::zeros([k, c, oh, ow], &device);
    }
    let rv = rois_to_host(rois);
    let rows = x.permute([0, 2, 3, 1]).reshape([n * h * w, c]);
    let mut outs = Vec::new();
    let step = roi_chunks(k, cells, c, max_taps(&rv, &o));
    for r0 in (0..k).step_by(step) {
        let kk = step.min(k - r0);
        let (idx, wts, t) = host_taps(&rv[r0 * 5..(r0 + kk) * 5], [n, c, h, w], &o);
        let len = kk * cells * t;
        let idx =
            Tensor::<B, 1, Int>::from_data(TensorData::new(idx, [len]).convert::<B::IntElem>(), &device);
        let wts = Tensor::<B, 2>::from_data(TensorData::new(wts, [len, 1]), &device);
        let picked = rows.clone().select(0, idx) * wts; // [len, C]
        outs.push(
            picked
                .reshape([kk * cells, t, c])
                .sum_dim(1)
                .reshape([kk, oh, ow, c]),
        );
    }
    Tensor::cat(outs, 0).permute([0, 3, 1, 2])
}

/// The input gradient of RoIAlign as device scatter-adds: the generic backward of [`RoiAlignBackend`].
///
/// # Shapes
/// - x_shape: `[N, C, H, W]`, rois: `[K, 5]`, grad_out: `[K, C, out_h, out_w]`; output: `[N, C, H, W]`
pub fn roi_align_scatter<B: Backend>(
    [n, c, h, w]: [usize; 4],
    rois: Tensor<B, 2>,
    grad_out: Tensor<B, 4>,
    o: RoiAlignOptions,
) -> Tensor<B, 4> {
    let [oh, ow] = o.output_size;
    let cells = oh * ow;
    let device = grad_out.device();
    let k = rois.dims()[0];
    let mut rows = Tensor::<B, 2>::zeros([n * h * w, c], &device);
    if k > 0 && c > 0 && cells > 0 && n * h * w > 0 {
        let rv = rois_to_host(rois);
        let g = grad_out.permute([0, 2, 3, 1]).reshape([k * cells, c]);
        let taps = max_taps(&rv, &o);
        // Each scatter-add also stays within SCATTER_ROWS rows: burn 0.21's wgpu `select_assign` loops over
        // all the rows in one invocation per column and loses additions on long inputs (512 RoIs x 49 cells x
        // 16 taps = 401,408 rows gave wrong gradients on lavapipe; the CPU's generic path is exact at any length).
        let step = roi_chunks(k, cells, c, taps).min((SCATTER_ROWS / (cells * taps)).max(1));
        for r0 in (0..k).step_by(step) {
            let kk = step.min(k - r0);
            let (idx, wts, t) = host_taps(&rv[r0 * 5..(r0 + kk) * 5], [n, c, h, w], &o);
            let len = kk * cells * t;
            let idx =
                Tensor::<B, 1, Int>::from_data(TensorData::new(idx, [len]).convert::<B::IntElem>(), &device);
            let wts = Tensor::<B, 2>::from_data(TensorData::new(wts, [len, 1]), &device);
            let gc = g.clone().slice(s![r0 * cells..(r0 + kk) * cells, ..]);
            let spread = gc
                .reshape([kk * cells, 1, c])
                .expand([kk * cells, t, c])
                .reshape([len, c])
                * wts;
            rows = rows.select_assign(0, idx, spread, IndexingUpdateOp::Add);
        }
    }
    rows.reshape([n, h, w, c]).permute([0, 3, 1, 2])
}

impl RoiAlignBackend for burn::backend::Flex {
    fn roi_align(x: FloatTensor<Self>, rois: FloatTensor<Self>, o: RoiAlignOptions) -> FloatTensor<Self> {
        let dims: [usize; 4] = x.shape().dims();
        let k = rois.shape().dims::<2>()[0];
        let out = roi_align_forward_host(&flex_values(&x), dims, &flex_values(&rois), &o);
        burn_flex::FlexTensor::from_data(TensorData::new(
            out,
            [k, dims[1], o.output_size[0], o.output_size[1]],
        ))
    }

    fn roi_align_backward(
        x_shape: [usize; 4],
        rois: FloatTensor<Self>,
        grad_out: FloatTensor<Self>,
        o: RoiAlignOptions,
    ) -> FloatTensor<Self> {
        let gx = roi_align_backward_host(&flex_values(&grad_out), x_shape, &flex_values(&rois), &o);
        burn_flex::FlexTensor::from_data(TensorData::new(gx, x_shape))
    }
}

#[cfg(feature = "cuda")]
impl RoiAlignBackend for burn::backend::Cuda {}

#[cfg(feature = "wgpu")]
impl RoiAlignBackend for burn::backend::Wgpu {}

#[derive(Debug)]
struct RoiAlignBackwardStep;

impl<B: RoiAlignBackend> Backward<B, 1> for RoiAlignBackwardStep {
    type State = ([usize; 4], FloatTensor<B>, RoiAlignOptions);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [parent] = ops.parents;
        let grad_out = grads.consume::<B>(&ops.node);
        let (shape, rois, o) = ops.state;
        if let Some(parent) = parent {
            grads.register::<B>(parent.id, B::roi_align_backward(shape, rois, grad_out, o));
        }
    }
}

impl<B: RoiAlignBackend, C: CheckpointStrategy> RoiAlignBackend for Autodiff<B, C> {
    fn roi_align(x: FloatTensor<Self>, rois: FloatTensor<Self>, o: RoiAlignOptions) -> FloatTensor<Self> {
        let shape: [usize; 4] = x.primitive.shape().dims();
        let rois = rois.primitive; // boxes are constants, as in torchvision
        let out = B::roi_align(x.primitive, rois.clone(), o);
        match RoiAlignBackwardStep
            .prepare::<C>([x.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((shape, rois, o), out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
    }
}

/// RoIAlign of `rois` on `x`.
///
/// # Shapes
/// - x: `[N, C, H, W]`
/// - rois: `[K, 5]`, `(batch_index, x1, y1, x2, y2)` in image pixels
/// - output: `[K, C, out_h, out_w]`
///
/// # Errors
/// [`BlocksError::Shape`] when rois are not `[K, 5]`.
pub fn roi_align<B: RoiAlignBackend>(
    x: Tensor<B, 4>,
    rois: Tensor<B, 2>,
    options: RoiAlignOptions,
) -> Result<Tensor<B, 4>, BlocksError> {
    if rois.dims()[1] != 5 {
        return Err(BlocksError::shape(
            "rois",
            &rois.dims(),
            "[K, 5] (batch_index, x1, y1, x2, y2)",
        ));
    }
    let [_, c, _, _] = x.dims();
    let k = rois.dims()[0];
    if k == 0 {
        let [oh, ow] = options.output_size;
        return Ok(Tensor::zeros([0, c, oh, ow], &x.device()));
    }
    let out = B::roi_align(
        x.into_primitive().tensor(),
        rois.into_primitive().tensor(),
        options,
    );
    Ok(Tensor::from_primitive(TensorPrimitive::Float(out)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A RoI of 400 x 400 px at stride 4 with adaptive sampling: bins of 100 / 7 = 14.3 feature pixels, so
    /// ceil = 15 samples per axis and 15 * 15 * 4 = 900 taps per cell, while a 20 px RoI takes 1 * 1 * 4.
    #[test]
    fn batches_are_sized_by_the_largest_roi() {
        let o = RoiAlignOptions {
            output_size: [7, 7],
            spatial_scale: 0.25,
            sampling_ratio: 0,
            aligned: false,
        };
        let small = [0.0, 10.0, 10.0, 30.0, 30.0];
        let large = [0.0, 0.0, 0.0, 400.0, 400.0];
        assert_eq!(max_taps(&small, &o), 4);
        let both: Vec<f32> = small.iter().chain(&large).copied().collect();
        assert_eq!(max_taps(&both, &o), 900);
        // 2^26 / (49 cells * 256 channels * 900 taps) = 5.9: five RoIs per batch (226 MB of f32);
        // sizing by 16 taps would have put 334 such RoIs (15 GB) in one batch.
        assert_eq!(roi_chunks(1000, 49, 256, 900), 5);
        assert_eq!(roi_chunks(1000, 49, 256, 16), 334);
        assert_eq!(max_taps(&[], &o), 4, "no RoI: the minimum");
        assert_eq!(roi_chunks(0, 49, 256, 4), 1);
    }
}
