//! Run-length encoded binary masks and the operations on them.

use crate::error::MaskError;

/// A run-length encoded binary mask of `h x w` pixels, column-major.
///
/// `counts` alternate between runs of 0s and runs of 1s, starting with 0s (the first count may be 0). The JSON
/// form is `{"size": [h, w], "counts": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rle {
    /// Height in pixels.
    pub h: u32,
    /// Width in pixels.
    pub w: u32,
    /// Alternating run lengths, starting with a run of 0s.
    pub counts: Vec<u32>,
}

impl Rle {
    /// Encode a column-major mask of `h * w` bytes (`mask[x * h + y]`). Any non-zero byte counts as 1
    /// (pycocotools gives garbage for values other than 0/1).
    pub fn encode(mask: &[u8], h: u32, w: u32) -> Result<Rle, MaskError> {
        let n = h as usize * w as usize;
        if mask.len() != n {
            return Err(MaskError::BufferSize {
                len: mask.len(),
                expected: n,
            });
        }
        let mut counts = Vec::new();
        let mut current = false;
        let mut run = 0u32;
        for &px in mask {
            let v = px != 0;
            if v != current {
                counts.push(run);
                run = 0;
                current = v;
            }
            run += 1;
        }
        counts.push(run);
        Ok(Rle { h, w, counts })
    }

    /// Encode a row-major mask (`mask[y * w + x]`, as images are stored).
    pub fn encode_row_major(mask: &[u8], h: u32, w: u32) -> Result<Rle, MaskError> {
        let n = h as usize * w as usize;
        if mask.len() != n {
            return Err(MaskError::BufferSize {
                len: mask.len(),
                expected: n,
            });
        }
        let mut col_major = vec![0u8; n];
        for y in 0..h as usize {
            for x in 0..w as usize {
                col_major[x * h as usize + y] = mask[y * w as usize + x];
            }
        }
        Rle::encode(&col_major, h, w)
    }

    /// Decode to a column-major mask of 0/1 bytes. Counts that overrun `h * w` are an error (pycocotools 2.0.5+
    /// raises); counts that fall short leave the rest 0.
    pub fn decode(&self) -> Result<Vec<u8>, MaskError> {
        let n = self.h as usize * self.w as usize;
        let mut out = vec![0u8; n];
        let mut pos = 0usize;
        let mut v = 0u8;
        for &c in &self.counts {
            let end = pos + c as usize;
            if end > n {
                return Err(MaskError::CountsSum {
                    sum: self.counts_sum(),
                    expected: n as u64,
                });
            }
            if v == 1 {
                out[pos..end].fill(1);
            }
            pos = end;
            v ^= 1;
        }
        Ok(out)
    }

    /// Decode to a row-major mask (`mask[y * w + x]`) of 0/1 bytes.
    pub fn decode_row_major(&self) -> Result<Vec<u8>, MaskError> {
        let col = self.decode()?;
        let (h, w) = (self.h as usize, self.w as usize);
        let mut out = vec![0u8; h * w];
        for x in 0..w {
            for y in 0..h {
                out[y * w + x] = col[x * h + y];
            }
        }
        Ok(out)
    }

    /// Sum of all run lengths (must equal `h * w` for a valid mask).
    pub fn counts_sum(&self) -> u64 {
        self.counts.iter().map(|&c| c as u64).sum()
    }

    /// Check that the counts cover exactly `h * w` pixels.
    pub fn validate(&self) -> Result<(), MaskError> {
        let sum = self.counts_sum();
        let expected = self.h as u64 * self.w as u64;
        if sum != expected {
            return Err(MaskError::CountsSum { sum, expected });
        }
        Ok(())
    }

    /// Number of foreground pixels: the sum of the odd-index counts (u32 like pycocotools).
    pub fn area(&self) -> u32 {
        self.counts
            .iter()
            .skip(1)
            .step_by(2)
            .fold(0u32, |a, &c| a.wrapping_add(c))
    }

    /// Tight bounding box `[x, y, w, h]` (pycocotools' fixed `rleToBbox`); all zeros for an empty RLE.
    pub fn to_bbox(&self) -> [f64; 4] {
        let h = self.h;
        let m = (self.counts.len() / 2) * 2;
        if m == 0 {
            return [0.0; 4];
        }
        let (mut xs, mut ys, mut xe, mut ye) = (self.w, h, 0u32, 0u32);
        let mut cc = 0u32;
        for j in 0..m {
            let start = cc;
            cc = cc.wrapping_add(self.counts[j]);
            if j % 2 == 0 || self.counts[j] == 0 {
                continue;
            }
            let y_start = start % h;
            let x_start = (start - y_start) / h;
            let y_end = (cc - 1) % h;
            let x_end = (cc - 1 - y_end) / h;
            xs = xs.min(x_start);
            xe = xe.max(x_end);
            if x_start < x_end {
                ys = 0;
                ye = h - 1;
            } else {
                ys = ys.min(y_start);
                ye = ye.max(y_end);
            }
        }
        // u32 arithmetic like the C code (wraps when no foreground run was seen).
        [
            xs as f64,
            ys as f64,
            xe.wrapping_sub(xs).wrapping_add(1) as f64,
            ye.wrapping_sub(ys).wrapping_add(1) as f64,
        ]
    }
}

/// Union (`intersect = false`) or intersection of masks (pycocotools `merge`). No masks give an empty RLE
/// (`0 x 0`); one mask is copied; masks of different sizes are an error (pycocotools returns `0 x 0`).
pub fn merge(rles: &[Rle], intersect: bool) -> Result<Rle, MaskError> {
    let Some(first) = rles.first() else {
        return Ok(Rle::default());
    };
    let (h, w) = (first.h, first.w);
    let mut acc = first.counts.clone();
    let mut out = Vec::with_capacity(acc.len());
    for b in &rles[1..] {
        if b.h != h || b.w != w {
            return Err(MaskError::SizeMismatch {
                a_h: h,
                a_w: w,
                b_h: b.h,
                b_w: b.w,
            });
        }
        out.clear();
        let a = &acc;
        let mut ca = a.first().copied().unwrap_or(0);
        let mut cb = b.counts.first().copied().unwrap_or(0);
        let (mut va, mut vb, mut v) = (false, false, false);
        let (mut ia, mut ib) = (1usize, 1usize);
        let mut cc = 0u32;
        let mut ct = 1u32;
        while ct > 0 {
            let c = ca.min(cb);
            cc += c;
            ct = 0;
            ca -= c;
            if ca == 0 && ia < a.len() {
                ca = a[ia];
                ia += 1;
                va = !va;
            }
            ct += ca;
            cb -= c;
            if cb == 0 && ib < b.counts.len() {
                cb = b.counts[ib];
                ib += 1;
                vb = !vb;
            }
            ct += cb;
            let vp = v;
            v = if intersect { va && vb } else { va || vb };
            if v != vp || ct == 0 {
                out.push(cc);
                cc = 0;
            }
        }
        std::mem::swap(&mut acc, &mut out);
    }
    Ok(Rle { h, w, counts: acc })
}

/// IoU of boxes `[x, y, w, h]` (pycocotools `bbIou`), `dt.len() x gt.len()` row-major. For a crowd GT the
/// union is the detection's area.
pub fn bb_iou(dt: &[[f64; 4]], gt: &[[f64; 4]], iscrowd: &[bool]) -> Vec<f64> {
    let mut out = vec![0.0; dt.len() * gt.len()];
    let ng = gt.len();
    for (g, gb) in gt.iter().enumerate() {
        let ga = gb[2] * gb[3];
        let crowd = iscrowd.get(g).copied().unwrap_or(false);
        for (d, db) in dt.iter().enumerate() {
            out[d * ng + g] = box_iou(db, gb, ga, crowd);
        }
    }
    out
}

#[inline]
pub(crate) fn box_iou(db: &[f64; 4], gb: &[f64; 4], ga: f64, crowd: bool) -> f64 {
    let da = db[2] * db[3];
    let w = (db[2] + db[0]).min(gb[2] + gb[0]) - db[0].max(gb[0]);
    if w <= 0.0 {
        return 0.0;
    }
    let h = (db[3] + db[1]).min(gb[3] + gb[1]) - db[1].max(gb[1]);
    if h <= 0.0 {
        return 0.0;
    }
    let i = w * h;
    let u = if crowd { da } else { da + ga - i };
    i / u
}

/// IoU of masks (pycocotools `rleIou`), `dt.len() x gt.len()` row-major: box IoU first, then the exact mask
/// IoU where the boxes overlap; -1 where the mask sizes differ. For a crowd GT the union is the detection's area.
pub fn iou(dt: &[Rle], gt: &[Rle], iscrowd: &[bool]) -> Vec<f64> {
    let db: Vec<[f64; 4]> = dt.iter().map(Rle::to_bbox).collect();
    let gb: Vec<[f64; 4]> = gt.iter().map(Rle::to_bbox).collect();
    let mut out = bb_iou(&db, &gb, iscrowd);
    let ng = gt.len();
    for (g, gr) in gt.iter().enumerate() {
        let crowd = iscrowd.get(g).copied().unwrap_or(false);
        for (d, dr) in dt.iter().enumerate() {
            let o = &mut out[d * ng + g];
            if *o > 0.0 {
                *o = rle_pair_iou(dr, gr, crowd);
            }
        }
    }
    out
}

fn rle_pair_iou(dt: &Rle, gt: &Rle, crowd: bool) -> f64 {
    if dt.h != gt.h || dt.w != gt.w {
        return -1.0;
    }
    let (a, b) = (&dt.counts, &gt.counts);
    let mut ca = a.first().copied().unwrap_or(0);
    let mut cb = b.first().copied().unwrap_or(0);
    let (mut va, mut vb) = (false, false);
    let (mut ia, mut ib) = (1usize, 1usize);
    let (mut i, mut u) = (0u32, 0u32);
    let mut ct = 1u32;
    while ct > 0 {
        let c = ca.min(cb);
        if va || vb {
            u = u.wrapping_add(c);
            if va && vb {
                i = i.wrapping_add(c);
            }
        }
        ct = 0;
        ca -= c;
        if ca == 0 && ia < a.len() {
            ca = a[ia];
            ia += 1;
            va = !va;
        }
        ct = ct.wrapping_add(ca);
        cb -= c;
        if cb == 0 && ib < b.len() {
            cb = b[ib];
            ib += 1;
            vb = !vb;
        }
        ct = ct.wrapping_add(cb);
    }
    if i == 0 {
        u = 1;
    } else if crowd {
        u = dt.area();
    }
    i as f64 / u as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_roundtrip_and_area() {
        // 3x2 column-major: column 0 = [0,1,1], column 1 = [1,0,0] -> runs 1 zero, 3 ones, 2 zeros.
        let m = [0, 1, 1, 1, 0, 0];
        let r = Rle::encode(&m, 3, 2).unwrap();
        assert_eq!(r.counts, vec![1, 3, 2]);
        assert_eq!(r.area(), 3);
        assert_eq!(r.decode().unwrap(), m.to_vec());
        // Foreground spans columns 0..=1, so ys = 0, ye = h-1.
        assert_eq!(r.to_bbox(), [0.0, 0.0, 2.0, 3.0]);
    }

    #[test]
    fn row_major_conversions() {
        // Image rows [1, 0, 0] and [1, 1, 0] (h = 2, w = 3): column-major [1, 1, 0, 1, 0, 0] -> runs 0, 2, 1, 1, 2.
        let img = [1, 0, 0, 1, 1, 0];
        let r = Rle::encode_row_major(&img, 2, 3).unwrap();
        assert_eq!(r.counts, vec![0, 2, 1, 1, 2]);
        assert_eq!(r.decode_row_major().unwrap(), img.to_vec());
        assert!(Rle::encode_row_major(&img, 2, 2).is_err());
    }

    #[test]
    fn empty_inputs() {
        assert_eq!(Rle::encode(&[], 0, 0).unwrap().counts, vec![0]);
        assert_eq!(Rle::default().to_bbox(), [0.0; 4]);
        assert_eq!(merge(&[], false).unwrap(), Rle::default());
        assert!(iou(&[], &[], &[]).is_empty());
        assert!(bb_iou(&[], &[[0.0, 0.0, 1.0, 1.0]], &[false]).is_empty());
    }

    #[test]
    fn decode_overrun_is_an_error() {
        let r = Rle {
            h: 2,
            w: 2,
            counts: vec![3, 3],
        };
        assert!(matches!(
            r.decode(),
            Err(MaskError::CountsSum { sum: 6, expected: 4 })
        ));
    }

    #[test]
    fn merge_union_and_intersection() {
        let a = Rle::encode(&[1, 1, 0, 0], 2, 2).unwrap();
        let b = Rle::encode(&[0, 1, 1, 0], 2, 2).unwrap();
        assert_eq!(
            merge(&[a.clone(), b.clone()], false).unwrap().decode().unwrap(),
            vec![1, 1, 1, 0]
        );
        assert_eq!(
            merge(&[a.clone(), b.clone()], true).unwrap().decode().unwrap(),
            vec![0, 1, 0, 0]
        );
        // IoU = 1 / 3; with b as crowd: 1 / area(a) = 1/2.
        assert_eq!(
            iou(std::slice::from_ref(&a), std::slice::from_ref(&b), &[false]),
            vec![1.0 / 3.0]
        );
        assert_eq!(iou(&[a], &[b], &[true]), vec![0.5]);
    }

    #[test]
    fn box_iou_by_hand() {
        // [0,0,2,2] vs [1,1,2,2]: intersection 1, union 4+4-1 = 7.
        assert_eq!(
            bb_iou(&[[0.0, 0.0, 2.0, 2.0]], &[[1.0, 1.0, 2.0, 2.0]], &[false]),
            vec![1.0 / 7.0]
        );
        assert_eq!(
            bb_iou(&[[0.0, 0.0, 2.0, 2.0]], &[[1.0, 1.0, 2.0, 2.0]], &[true]),
            vec![0.25]
        );
    }
}
