//! pycocotools `summarize`: the 12 stats, their printed table, and mmdetection-style per-category AP.

use super::Evaluation;

/// Names of the 12 standard stats, in pycocotools' order (used as JSON field names).
pub const STAT_NAMES: [&str; 12] = [
    "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
];

/// `np.mean` bit for bit: numpy's pairwise summation (blocks of 8, split above 128 items), then `/ n`.
/// NaN for an empty slice (numpy warns and returns NaN).
pub fn pairwise_mean(a: &[f64]) -> f64 {
    pairwise_sum(a) / a.len() as f64
}

fn pairwise_sum(a: &[f64]) -> f64 {
    let n = a.len();
    if n < 8 {
        let mut s = 0.0;
        for &x in a {
            s += x;
        }
        s
    } else if n <= 128 {
        let mut r = [0.0f64; 8];
        r.copy_from_slice(&a[..8]);
        let mut i = 8;
        while i < n - n % 8 {
            for j in 0..8 {
                r[j] += a[i + j];
            }
            i += 8;
        }
        let mut s = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        while i < n {
            s += a[i];
            i += 1;
        }
        s
    } else {
        let mut n2 = n / 2;
        n2 -= n2 % 8;
        pairwise_sum(&a[..n2]) + pairwise_sum(&a[n2..])
    }
}

/// One summary line's definition: AP or AR, IoU threshold (None = all), area label, maxDets.
struct StatDef {
    ap: bool,
    iou: Option<f64>,
    area: &'static str,
    max_det: usize,
}

fn stat_defs(ev: &Evaluation) -> Vec<StatDef> {
    let md = &ev.params.max_dets;
    let last = *md.last().unwrap_or(&0);
    let at = |i: usize| md.get(i).copied().unwrap_or(last);
    let d = |ap, iou, area, max_det| StatDef {
        ap,
        iou,
        area,
        max_det,
    };
    vec![
        d(true, None, "all", 100),
        d(true, Some(0.5), "all", last),
        d(true, Some(0.75), "all", last),
        d(true, None, "small", last),
        d(true, None, "medium", last),
        d(true, None, "large", last),
        d(false, None, "all", at(0)),
        d(false, None, "all", at(1)),
        d(false, None, "all", at(2)),
        d(false, None, "small", last),
        d(false, None, "medium", last),
        d(false, None, "large", last),
    ]
}

/// Mean of the selected slice's values > -1 (C order t, r, k for AP; t, k for AR), or -1 if there are none.
fn compute(ev: &Evaluation, s: &StatDef) -> f64 {
    let p = &ev.params;
    let [nt, nr, nk, _, _] = ev.precision_shape();
    let ts: Vec<usize> = match s.iou {
        Some(v) => (0..nt).filter(|&t| p.iou_thrs[t] == v).collect(),
        None => (0..nt).collect(),
    };
    let areas: Vec<usize> = (0..p.area_ranges.len())
        .filter(|&a| p.area_ranges[a].label == s.area)
        .collect();
    let ms: Vec<usize> = (0..p.max_dets.len())
        .filter(|&m| p.max_dets[m] == s.max_det)
        .collect();
    let mut vals = Vec::new();
    for &t in &ts {
        if s.ap {
            for r in 0..nr {
                for k in 0..nk {
                    for &a in &areas {
                        for &m in &ms {
                            vals.push(ev.precision_at(t, r, k, a, m));
                        }
                    }
                }
            }
        } else {
            for k in 0..nk {
                for &a in &areas {
                    for &m in &ms {
                        vals.push(ev.recall_at(t, k, a, m));
                    }
                }
            }
        }
    }
    vals.retain(|&v| v > -1.0);
    if vals.is_empty() {
        -1.0
    } else {
        pairwise_mean(&vals)
    }
}

pub(super) fn stats(ev: &Evaluation) -> Vec<f64> {
    stat_defs(ev).iter().map(|s| compute(ev, s)).collect()
}

impl Evaluation {
    /// The familiar 12-line summary, formatted like pycocotools' `summarize()`.
    pub fn summary_lines(&self) -> Vec<String> {
        let p = &self.params;
        let first = p.iou_thrs.first().copied().unwrap_or(0.0);
        let last = p.iou_thrs.last().copied().unwrap_or(0.0);
        stat_defs(self)
            .iter()
            .zip(&self.stats)
            .map(|(s, v)| {
                let (title, kind) = if s.ap {
                    ("Average Precision", "(AP)")
                } else {
                    ("Average Recall", "(AR)")
                };
                let iou = match s.iou {
                    Some(t) => format!("{t:.2}"),
                    None => format!("{first:.2}:{last:.2}"),
                };
                format!(
                    " {:<18} {} @[ IoU={:<9} | area={:>6} | maxDets={:>3} ] = {:.3}",
                    title, kind, iou, s.area, s.max_det, v
                )
            })
            .collect()
    }

    /// The summary as one printable string (12 lines).
    pub fn summary(&self) -> String {
        let mut s = self.summary_lines().join("\n");
        s.push('\n');
        s
    }

    /// AP per category (IoU 0.50:0.95, area `all`, largest maxDets), like mmdetection's classwise table:
    /// `(category id, name, AP)`, AP NaN for a category without ground truth.
    pub fn per_category_ap(&self) -> Vec<(u64, String, f64)> {
        let [nt, nr, nk, _, nm] = self.precision_shape();
        let a = self
            .params
            .area_ranges
            .iter()
            .position(|r| r.label == "all")
            .unwrap_or(0);
        (0..nk)
            .map(|k| {
                let mut vals = Vec::with_capacity(nt * nr);
                for t in 0..nt {
                    for r in 0..nr {
                        let v = self.precision_at(t, r, k, a, nm - 1);
                        if v > -1.0 {
                            vals.push(v);
                        }
                    }
                }
                let ap = if vals.is_empty() {
                    f64::NAN
                } else {
                    pairwise_mean(&vals)
                };
                (self.category_ids[k], self.category_names[k].clone(), ap)
            })
            .collect()
    }

    /// Class-agnostic average recall at each maxDets (IoU 0.50:0.95, area `all`): the proposal metrics
    /// AR@100/300/1000 with [`EvalParams::proposals`](super::EvalParams::proposals).
    pub fn average_recall(&self) -> Vec<(usize, f64)> {
        self.params
            .max_dets
            .iter()
            .map(|&m| {
                (
                    m,
                    compute(
                        self,
                        &StatDef {
                            ap: false,
                            iou: None,
                            area: "all",
                            max_det: m,
                        },
                    ),
                )
            })
            .collect()
    }
}

impl Evaluation {
    /// mmdetection's proposal metric: `[AR@100, AR@300, AR@1000, AR_s@1000, AR_m@1000, AR_l@1000]`
    /// (class-agnostic recall averaged over IoU 0.50:0.95; run with
    /// [`EvalParams::proposals`](super::EvalParams::proposals), whose last maxDets is 1000).
    pub fn proposal_stats(&self) -> Vec<f64> {
        let last = self.params.max_dets.last().copied().unwrap_or(0);
        let at = |area: &'static str, max_det: usize| {
            compute(
                self,
                &StatDef {
                    ap: false,
                    iou: None,
                    area,
                    max_det,
                },
            )
        };
        let mut out: Vec<f64> = self.params.max_dets.iter().map(|&m| at("all", m)).collect();
        out.extend(["small", "medium", "large"].map(|a| at(a, last)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairwise_mean_blocks() {
        // n < 8: sequential. n = 9: 8 lanes + 1 remainder; exact for these integers.
        assert_eq!(pairwise_mean(&[1.0, 2.0, 3.0]), 2.0);
        assert_eq!(pairwise_mean(&[1.0; 9]), 1.0);
        assert!(pairwise_mean(&[]).is_nan());
        // 0.1 * 10 sequentially is 0.9999999999999999; the 8-lane pairwise order gives exactly 1.0.
        let v = [0.1; 10];
        assert_eq!(
            pairwise_sum(&v),
            ((0.1f64 + 0.1) + (0.1 + 0.1)) + ((0.1 + 0.1) + (0.1 + 0.1)) + 0.1 + 0.1
        );
    }
}
