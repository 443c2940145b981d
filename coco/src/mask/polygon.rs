//! Polygon and box rasterization, ported literally from pycocotools' `rleFrPoly` (5x upsampled edge tracing,
//! then the y-boundary crossings, downsampled) so that areas and IoUs match bit for bit.

use super::Rle;

/// Rasterize a polygon `[x0, y0, x1, y1, ...]` (pixel coordinates, an odd trailing value is dropped) into an
/// `h x w` RLE, exactly like pycocotools `frPyObjects(poly, h, w)`.
///
/// Time and memory grow with the polygon's perimeter at 5x resolution (as in pycocotools): callers bound the
/// coordinates first, as the dataset and results loaders do (one image size around the image).
pub fn fr_poly(xy: &[f64], h: u32, w: u32) -> Rle {
    let k = xy.len() / 2;
    const SCALE: f64 = 5.0;
    // C's (int) conversion truncates toward zero; Rust's `as` does too (and saturates instead of UB).
    let mut x: Vec<i32> = (0..k).map(|j| (SCALE * xy[2 * j] + 0.5) as i32).collect();
    let mut y: Vec<i32> = (0..k).map(|j| (SCALE * xy[2 * j + 1] + 0.5) as i32).collect();
    if k == 0 {
        return finish(Vec::new(), h, w);
    }
    x.push(x[0]);
    y.push(y[0]);
    let mut u: Vec<i32> = Vec::new();
    let mut v: Vec<i32> = Vec::new();
    for j in 0..k {
        let (mut xs, mut xe, mut ys, mut ye) = (x[j], x[j + 1], y[j], y[j + 1]);
        let dx = (xe - xs).abs();
        let dy = (ys - ye).abs();
        let flip = (dx >= dy && xs > xe) || (dx < dy && ys > ye);
        if flip {
            std::mem::swap(&mut xs, &mut xe);
            std::mem::swap(&mut ys, &mut ye);
        }
        if dx >= dy {
            let s = (ye - ys) as f64 / dx as f64;
            for d in 0..=dx {
                let t = if flip { dx - d } else { d };
                u.push(t + xs);
                v.push((ys as f64 + s * t as f64 + 0.5) as i32);
            }
        } else {
            let s = (xe - xs) as f64 / dy as f64;
            for d in 0..=dy {
                let t = if flip { dy - d } else { d };
                v.push(t + ys);
                u.push((xs as f64 + s * t as f64 + 0.5) as i32);
            }
        }
    }
    // Points on the y-boundary, downsampled to pixel coordinates.
    let mut a: Vec<u32> = Vec::new();
    let w_max = (w as u64).wrapping_sub(1) as f64;
    for j in 1..u.len() {
        if u[j] == u[j - 1] {
            continue;
        }
        let xd = if u[j] < u[j - 1] { u[j] } else { u[j] - 1 } as f64;
        let xd = (xd + 0.5) / SCALE - 0.5;
        if xd.floor() != xd || xd < 0.0 || xd > w_max {
            continue;
        }
        let yd = v[j].min(v[j - 1]) as f64;
        let mut yd = (yd + 0.5) / SCALE - 0.5;
        if yd < 0.0 {
            yd = 0.0;
        } else if yd > h as f64 {
            yd = h as f64;
        }
        let yd = yd.ceil();
        let (xi, yi) = (xd as i32, yd as i32);
        a.push(xi.wrapping_mul(h as i32).wrapping_add(yi) as u32);
    }
    finish(a, h, w)
}

/// Turn boundary positions into run lengths: sort, difference, and merge zero-length runs (as the C code does).
fn finish(mut a: Vec<u32>, h: u32, w: u32) -> Rle {
    a.push(h.wrapping_mul(w));
    a.sort_unstable();
    let mut p = 0u32;
    for e in a.iter_mut() {
        let t = *e;
        *e -= p;
        p = t;
    }
    let mut b: Vec<u32> = Vec::with_capacity(a.len());
    let mut j = 0;
    b.push(a[j]);
    j += 1;
    while j < a.len() {
        if a[j] > 0 {
            b.push(a[j]);
            j += 1;
        } else {
            j += 1;
            if j < a.len() {
                let last = b.len() - 1;
                b[last] += a[j];
                j += 1;
            }
        }
    }
    Rle { h, w, counts: b }
}

/// Rasterize a box `[x, y, w, h]` into an `height x width` RLE (pycocotools `frBbox`: the box's polygon).
pub fn fr_bbox(bb: &[f64; 4], height: u32, width: u32) -> Rle {
    let (x0, y0, x1, y1) = (bb[0], bb[1], bb[0] + bb[2], bb[1] + bb[3]);
    fr_poly(&[x0, y0, x0, y1, x1, y1, x1, y0], height, width)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn box_rasterizes_to_its_pixels() {
        // A 2x3 box at (1, 1) in a 5x5 image covers columns 1..=2, rows 1..=3: 6 pixels.
        let r = fr_bbox(&[1.0, 1.0, 2.0, 3.0], 5, 5);
        assert_eq!(r.area(), 6);
        assert_eq!(r.to_bbox(), [1.0, 1.0, 2.0, 3.0]);
        assert_eq!(r.counts, vec![6, 3, 2, 3, 11]);
    }

    #[test]
    fn empty_polygon_is_empty_mask() {
        let r = fr_poly(&[], 4, 3);
        assert_eq!(r.counts, vec![12]);
        assert_eq!(r.area(), 0);
    }
}
