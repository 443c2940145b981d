//! The residual sum with its activation, `clamp(a + b, lo, hi)`, in one pass.
//!
//! burn computes `relu(a + b)` as two passes with an intermediate buffer. The blocks' residual sums are
//! memory-bound, so one pass over both inputs, split across threads, takes about half the time.

use rayon::prelude::*;

/// Elements per task: large enough that scheduling is negligible, small enough to spread a 7x7x2048 map.
const CHUNK: usize = 16 * 1024;

/// `out[i] = clamp(a[i] + b[i], lo, hi)`.
///
/// # Panics
/// If `a` and `b` differ in length (callers pass tensors of one shape).
pub fn add_clamp(a: &[f32], b: &[f32], lo: f32, hi: f32) -> Vec<f32> {
    assert_eq!(a.len(), b.len(), "add_clamp: operands of different lengths");
    let mut out = vec![0.0f32; a.len()];
    out.par_chunks_mut(CHUNK)
        .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
        .for_each(|(o, (a, b))| {
            for ((o, a), b) in o.iter_mut().zip(a).zip(b) {
                *o = (a + b).max(lo).min(hi);
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_then_clamps() {
        let a: Vec<f32> = (0..40_000).map(|i| (i % 17) as f32 - 8.0).collect();
        let b: Vec<f32> = (0..40_000).map(|i| (i % 5) as f32 * 0.5).collect();
        let relu = add_clamp(&a, &b, 0.0, f32::INFINITY);
        let relu6 = add_clamp(&a, &b, 0.0, 6.0);
        let plain = add_clamp(&a, &b, f32::NEG_INFINITY, f32::INFINITY);
        for i in 0..a.len() {
            let s = a[i] + b[i];
            assert_eq!(plain[i], s);
            assert_eq!(relu[i], if s > 0.0 { s } else { 0.0 });
            assert_eq!(relu6[i], s.clamp(0.0, 6.0));
        }
    }

    #[test]
    fn empty_operands_give_an_empty_sum() {
        assert!(add_clamp(&[], &[], 0.0, 1.0).is_empty());
    }
}
