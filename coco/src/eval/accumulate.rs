//! pycocotools `accumulate`: per category, area range and maxDets, the precision/recall curves over all images.

use std::cmp::Ordering;

use rayon::prelude::*;

use super::EvalParams;
use super::image::{IGNORED, Pair, PairEval, TRUE_POSITIVE};

/// `np.spacing(1)`: added to the precision denominator exactly as pycocotools does.
const EPS: f64 = 2.220446049250313e-16;

/// Returns `(precision [T, R, K, A, M], recall [T, K, A, M])`, -1 where a category has no ground truth.
/// `pairs` are ordered by category then image, `evals` parallel to them.
pub(super) fn accumulate(
    p: &EvalParams,
    pairs: &[Pair],
    evals: &[PairEval],
    nk: usize,
) -> (Vec<f64>, Vec<f64>) {
    let (nt, nr, na, nm) = (
        p.iou_thrs.len(),
        p.rec_thrs.len(),
        p.area_ranges.len(),
        p.max_dets.len(),
    );
    // Pairs of category k are the contiguous range starts[k]..starts[k + 1].
    let mut starts = vec![0usize; nk + 1];
    for pair in pairs {
        starts[pair.k + 1] += 1;
    }
    for k in 0..nk {
        starts[k + 1] += starts[k];
    }
    // Per category: precision [A][M][T][R] and recall [A][M][T], scattered into the C-order arrays below.
    let per_cat: Vec<(Vec<f64>, Vec<f64>)> = (0..nk)
        .into_par_iter()
        .map(|k| {
            let evals = &evals[starts[k]..starts[k + 1]];
            let mut prec = vec![-1.0; na * nm * nt * nr];
            let mut rec = vec![-1.0; na * nm * nt];
            if evals.is_empty() {
                return (prec, rec);
            }
            // Every kept detection of the category, sorted once by a stable descending sort (ties keep image
            // order, then within-image order). The stable order of the first-m-per-image subset is this order
            // filtered, so one sort serves every maxDets and area range.
            let mut all: Vec<(f64, u32, u32)> = Vec::new();
            for (pi, e) in evals.iter().enumerate() {
                for (d, &score) in e.scores.iter().enumerate() {
                    all.push((score, pi as u32, d as u32));
                }
            }
            all.sort_by(|x, y| y.0.partial_cmp(&x.0).unwrap_or(Ordering::Equal));
            let mut entries: Vec<(f64, u32, u32)> = Vec::with_capacity(all.len());
            let (mut rc, mut pr): (Vec<f64>, Vec<f64>) = (Vec::new(), Vec::new());
            let (mut tp, mut fp): (Vec<u64>, Vec<u64>) = (Vec::new(), Vec::new());
            for a in 0..na {
                let npig: u64 = evals.iter().map(|e| e.npig[a] as u64).sum();
                if npig == 0 {
                    continue;
                }
                for (m, &max_det) in p.max_dets.iter().enumerate() {
                    entries.clear();
                    entries.extend(all.iter().filter(|x| (x.2 as usize) < max_det));
                    let nd = entries.len();
                    // One pass over the detections for all thresholds (flags of a detection are contiguous
                    // in t): cumulative tp/fp, then recall and precision per threshold, row t of rc/pr.
                    rc.clear();
                    rc.resize(nt * nd, 0.0);
                    pr.clear();
                    pr.resize(nt * nd, 0.0);
                    tp.clear();
                    tp.resize(nt, 0u64);
                    fp.clear();
                    fp.resize(nt, 0u64);
                    for (j, &(_, pi, d)) in entries.iter().enumerate() {
                        let e = &evals[pi as usize];
                        let flags = &e.flags[(a * e.scores.len() + d as usize) * nt..][..nt];
                        for (t, &f) in flags.iter().enumerate() {
                            if f == TRUE_POSITIVE {
                                tp[t] += 1;
                            } else if f != IGNORED {
                                fp[t] += 1;
                            }
                            let (tpf, fpf) = (tp[t] as f64, fp[t] as f64);
                            rc[t * nd + j] = tpf / npig as f64;
                            pr[t * nd + j] = tpf / ((fpf + tpf) + EPS);
                        }
                    }
                    for t in 0..nt {
                        let rc = &rc[t * nd..][..nd];
                        let pr = &mut pr[t * nd..][..nd];
                        rec[(a * nm + m) * nt + t] = if nd > 0 { rc[nd - 1] } else { 0.0 };
                        for i in (1..nd).rev() {
                            if pr[i] > pr[i - 1] {
                                pr[i - 1] = pr[i];
                            }
                        }
                        let q = &mut prec[((a * nm + m) * nt + t) * nr..][..nr];
                        for (r, &thr) in p.rec_thrs.iter().enumerate() {
                            // np.searchsorted(rc, thr, side='left')
                            let i = rc.partition_point(|&x| x < thr);
                            q[r] = if i < nd { pr[i] } else { 0.0 };
                        }
                    }
                }
            }
            (prec, rec)
        })
        .collect();
    let mut precision = vec![-1.0; nt * nr * nk * na * nm];
    let mut recall = vec![-1.0; nt * nk * na * nm];
    for (k, (prec, rec)) in per_cat.iter().enumerate() {
        for a in 0..na {
            for m in 0..nm {
                for t in 0..nt {
                    recall[((t * nk + k) * na + a) * nm + m] = rec[(a * nm + m) * nt + t];
                    for r in 0..nr {
                        precision[(((t * nr + r) * nk + k) * na + a) * nm + m] =
                            prec[((a * nm + m) * nt + t) * nr + r];
                    }
                }
            }
        }
    }
    (precision, recall)
}
