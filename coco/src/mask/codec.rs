//! pycocotools' compressed RLE strings: each count (after the first two, as a difference to the count two
//! before) is written in 5-bit groups, least significant first, as ASCII characters 48..=111; bit 0x20 of a
//! character says "more follows", bit 0x10 of the last one is the sign.

use super::Rle;
use crate::error::MaskError;

/// Encode the counts of `rle` as a compressed string (pycocotools `rleToString`).
pub fn rle_to_string(rle: &Rle) -> String {
    let mut s = Vec::with_capacity(rle.counts.len() * 2);
    for (i, &c) in rle.counts.iter().enumerate() {
        let mut x = c as i64;
        if i > 2 {
            x -= rle.counts[i - 2] as i64;
        }
        loop {
            let mut ch = (x & 0x1f) as u8;
            x >>= 5;
            let more = if ch & 0x10 != 0 { x != -1 } else { x != 0 };
            if more {
                ch |= 0x20;
            }
            s.push(ch + 48);
            if !more {
                break;
            }
        }
    }
    // Every byte is in 48..=111, so this is ASCII.
    String::from_utf8(s).unwrap_or_default()
}

/// Decode a compressed string into an `h x w` RLE (pycocotools `rleFrString`). Characters outside 48..=111, a
/// string that ends inside a count, or a count that does not fit are errors (pycocotools reads past the end).
pub fn rle_from_string(s: &str, h: u32, w: u32) -> Result<Rle, MaskError> {
    let bytes = s.as_bytes();
    let mut counts: Vec<u32> = Vec::with_capacity(bytes.len());
    let mut p = 0;
    while p < bytes.len() {
        let mut x: i64 = 0;
        let mut k = 0u32;
        loop {
            let Some(&b) = bytes.get(p) else {
                return Err(MaskError::MalformedString {
                    pos: p,
                    why: "string ends inside a count",
                });
            };
            if !(48..=111).contains(&b) {
                return Err(MaskError::MalformedString {
                    pos: p,
                    why: "character outside '0'..='o'",
                });
            }
            if k >= 12 {
                return Err(MaskError::MalformedString {
                    pos: p,
                    why: "count too long",
                });
            }
            let c = (b - 48) as i64;
            x |= (c & 0x1f) << (5 * k);
            let more = c & 0x20 != 0;
            p += 1;
            k += 1;
            if !more {
                if c & 0x10 != 0 {
                    x |= -1i64 << (5 * k);
                }
                break;
            }
        }
        let m = counts.len();
        if m > 2 {
            x += counts[m - 2] as i64;
        }
        counts.push(x as u32);
    }
    Ok(Rle { h, w, counts })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_string() {
        // From the spec: counts [0, 16] encode as "0`0" (16 = 0b10000 has the sign bit set, so a second group).
        let r = Rle {
            h: 4,
            w: 4,
            counts: vec![0, 16],
        };
        assert_eq!(rle_to_string(&r), "0`0");
        assert_eq!(rle_from_string("0`0", 4, 4).unwrap(), r);
    }

    #[test]
    fn roundtrip_with_differences() {
        let r = Rle {
            h: 10,
            w: 10,
            counts: vec![3, 5, 10, 2, 40, 1, 39],
        };
        let s = rle_to_string(&r);
        assert_eq!(rle_from_string(&s, 10, 10).unwrap(), r);
    }

    #[test]
    fn empty_and_malformed() {
        assert_eq!(rle_from_string("", 0, 0).unwrap().counts, Vec::<u32>::new());
        assert!(rle_from_string("0a ", 2, 2).is_err());
        assert!(rle_from_string("0`", 2, 2).is_err());
    }
}
