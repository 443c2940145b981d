//! Image transforms that keep boxes and masks consistent with the pixels: keep-ratio resize, horizontal
//! flip, normalisation and padding. Boxes are `[x1, y1, x2, y2]` in absolute pixels of the current image
//! (mmdetection's convention since 2.0: a box covering the whole `W x H` image is `[0, 0, W, H]`).

use image::{GrayImage, RgbImage, imageops};

/// One training or test image with its annotations, as it moves through the transforms.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The pixels (RGB).
    pub image: RgbImage,
    /// Ground-truth boxes, `[x1, y1, x2, y2]`.
    pub boxes: Vec<[f32; 4]>,
    /// Class index (0-based, contiguous) of each box.
    pub labels: Vec<usize>,
    /// Crowd regions: anchors inside them are ignored, never negatives.
    pub ignore: Vec<[f32; 4]>,
    /// Optional instance masks (one per box, image-sized, 0 or 255).
    pub masks: Vec<GrayImage>,
    /// Where the image came from and what was done to it.
    pub meta: ImageMeta,
    /// Seed of this image's random choices inside the model in this epoch (training-target sampling): a
    /// function of the run's seed, the epoch and the image alone, so that the sampled targets do not depend
    /// on the batch the image lands in, on the number of replicas, or on where a run was resumed.
    pub seed: u64,
}

pub use crate::structures::ImageMeta;

/// The size an image of `(w, h)` gets under mmdetection's keep-ratio rescale to `scale = [long, short]`:
/// the largest factor with long side <= long and short side <= short, sizes rounded to the nearest pixel.
pub fn keep_ratio_size((w, h): (u32, u32), scale: [usize; 2]) -> (u32, u32) {
    let long = scale[0].max(scale[1]) as f64;
    let short = scale[0].min(scale[1]) as f64;
    let (wf, hf) = (w as f64, h as f64);
    let factor = (long / wf.max(hf)).min(short / wf.min(hf));
    (
        ((wf * factor) + 0.5).floor().max(1.0) as u32,
        ((hf * factor) + 0.5).floor().max(1.0) as u32,
    )
}

/// Resize to `scale` (`[long, short]` keeping the ratio, or exactly `[w, h]` when `keep_ratio` is false);
/// boxes and masks follow.
pub fn resize(mut s: Sample, scale: [usize; 2], keep_ratio: bool) -> Sample {
    let (w, h) = s.image.dimensions();
    let (nw, nh) = if keep_ratio {
        keep_ratio_size((w, h), scale)
    } else {
        (scale[0] as u32, scale[1] as u32)
    };
    let (sx, sy) = (nw as f32 / w as f32, nh as f32 / h as f32);
    if (nw, nh) != (w, h) {
        s.image = imageops::resize(&s.image, nw, nh, imageops::FilterType::Triangle);
        s.masks = s
            .masks
            .iter()
            .map(|m| imageops::resize(m, nw, nh, imageops::FilterType::Nearest))
            .collect();
    }
    let scale_box = |b: &[f32; 4]| {
        [
            (b[0] * sx).clamp(0.0, nw as f32),
            (b[1] * sy).clamp(0.0, nh as f32),
            (b[2] * sx).clamp(0.0, nw as f32),
            (b[3] * sy).clamp(0.0, nh as f32),
        ]
    };
    s.boxes = s.boxes.iter().map(scale_box).collect();
    s.ignore = s.ignore.iter().map(scale_box).collect();
    s.meta.img_size = (nw, nh);
    s.meta.scale = (s.meta.scale.0 * sx, s.meta.scale.1 * sy);
    s
}

/// Flip horizontally: `x -> W - x` for pixels, boxes (`x1' = W - x2`, `x2' = W - x1`) and masks.
pub fn hflip(mut s: Sample) -> Sample {
    let w = s.image.width() as f32;
    imageops::flip_horizontal_in_place(&mut s.image);
    s.masks.iter_mut().for_each(imageops::flip_horizontal_in_place);
    let flip = |b: &[f32; 4]| [w - b[2], b[1], w - b[0], b[3]];
    s.boxes = s.boxes.iter().map(flip).collect();
    s.ignore = s.ignore.iter().map(flip).collect();
    s.meta.flipped = !s.meta.flipped;
    s
}

/// Round `x` up to a multiple of `divisor` (divisor 0 or 1: unchanged).
pub fn round_up(x: usize, divisor: usize) -> usize {
    if divisor <= 1 {
        x
    } else {
        x.div_ceil(divisor) * divisor
    }
}

/// Write the normalised image `(pixel - mean) / std` into a zero-padded channel-first buffer of
/// `[3, pad_h, pad_w]` (padding at the bottom and right, as mmdetection does; zeros after normalisation).
///
/// # Panics
/// When the buffer is smaller than the image.
pub fn normalize_into(
    image: &RgbImage,
    mean: [f32; 3],
    std: [f32; 3],
    out: &mut [f32],
    pad_h: usize,
    pad_w: usize,
) {
    let (w, h) = (image.width() as usize, image.height() as usize);
    assert!(
        h <= pad_h && w <= pad_w && out.len() >= 3 * pad_h * pad_w,
        "padded buffer smaller than image"
    );
    let plane = pad_h * pad_w;
    let inv = [1.0 / std[0], 1.0 / std[1], 1.0 / std[2]];
    for (y, row) in image.as_raw().chunks_exact(3 * w).enumerate() {
        for (x, px) in row.chunks_exact(3).enumerate() {
            for c in 0..3 {
                out[c * plane + y * pad_w + x] = (px[c] as f32 - mean[c]) * inv[c];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    /// An image of `w x h` with each box painted in its own colour on black.
    fn painted(w: u32, h: u32, boxes: &[[f32; 4]]) -> Sample {
        let mut image = RgbImage::new(w, h);
        for (i, b) in boxes.iter().enumerate() {
            let colour = Rgb([60 * (i as u8 + 1), 255 - 50 * i as u8, 100]);
            for y in b[1] as u32..b[3] as u32 {
                for x in b[0] as u32..b[2] as u32 {
                    image.put_pixel(x, y, colour);
                }
            }
        }
        let masks = boxes
            .iter()
            .map(|b| {
                GrayImage::from_fn(w, h, |x, y| {
                    let inside =
                        (x as f32) >= b[0] && (x as f32) < b[2] && (y as f32) >= b[1] && (y as f32) < b[3];
                    image::Luma([if inside { 255 } else { 0 }])
                })
            })
            .collect();
        Sample {
            image,
            boxes: boxes.to_vec(),
            labels: (0..boxes.len()).collect(),
            ignore: vec![],
            masks,
            seed: 0,
            meta: ImageMeta {
                image_id: 1,
                file: "painted.png".into(),
                ori_size: (w, h),
                img_size: (w, h),
                scale: (1.0, 1.0),
                flipped: false,
                pad_size: (w, h),
            },
        }
    }

    /// Every box still frames its colour: the pixel just inside each corner has the box's colour, the pixel
    /// just outside does not (black), and the mask agrees.
    fn assert_boxes_frame_their_paint(s: &Sample, originals: &Sample) {
        for (i, b) in s.boxes.iter().enumerate() {
            let orig = &originals.boxes[i];
            let colour = originals.image.get_pixel(orig[0] as u32 + 1, orig[1] as u32 + 1);
            let inside = [
                (b[0] + 1.5, b[1] + 1.5),
                (b[2] - 1.5, b[1] + 1.5),
                (b[0] + 1.5, b[3] - 1.5),
                (b[2] - 1.5, b[3] - 1.5),
            ];
            for (x, y) in inside {
                let p = s.image.get_pixel(x as u32, y as u32);
                let close =
                    p.0.iter()
                        .zip(colour.0.iter())
                        .all(|(a, b)| (*a as i32 - *b as i32).abs() <= 8);
                assert!(
                    close,
                    "box {i} {b:?}: pixel ({x}, {y}) = {p:?}, expected {colour:?}"
                );
                assert_eq!(
                    s.masks[i].get_pixel(x as u32, y as u32).0[0],
                    255,
                    "mask {i} at ({x}, {y})"
                );
            }
            let outside = [
                (b[0] - 2.5, (b[1] + b[3]) / 2.0),
                (b[2] + 1.5, (b[1] + b[3]) / 2.0),
            ];
            for (x, y) in outside {
                if x >= 0.0 && (x as u32) < s.image.width() {
                    assert_eq!(
                        s.image.get_pixel(x as u32, y as u32).0,
                        [0, 0, 0],
                        "box {i}: ({x}, {y}) outside"
                    );
                    assert_eq!(s.masks[i].get_pixel(x as u32, y as u32).0[0], 0);
                }
            }
        }
    }

    #[test]
    fn keep_ratio_size_matches_mmdetection() {
        // 640x480 to (1333, 800): min(1333/640, 800/480) = 1.6667 -> 1066.67 x 800 -> 1067 x 800
        assert_eq!(keep_ratio_size((640, 480), [1333, 800]), (1067, 800));
        // 500x2000 (tall): min(1333/2000, 800/500) = 0.6665 -> 333.25 x 1333 -> 333 x 1333
        assert_eq!(keep_ratio_size((500, 2000), [1333, 800]), (333, 1333));
        // order of the scale pair does not matter
        assert_eq!(keep_ratio_size((640, 480), [800, 1333]), (1067, 800));
    }

    #[test]
    fn resize_keeps_boxes_on_their_paint() {
        let s = painted(160, 120, &[[10.0, 20.0, 60.0, 80.0], [100.0, 30.0, 150.0, 110.0]]);
        let r = resize(s.clone(), [400, 240], true); // factor min(400/160, 240/120) = 2 -> 320 x 240
        assert_eq!(r.image.dimensions(), (320, 240));
        assert_eq!(r.boxes[0], [20.0, 40.0, 120.0, 160.0]);
        assert_eq!(r.meta.scale, (2.0, 2.0));
        assert_boxes_frame_their_paint(&r, &s);
        let down = resize(s.clone(), [80, 60], true); // factor 0.5
        assert_eq!(down.boxes[1], [50.0, 15.0, 75.0, 55.0]);
    }

    #[test]
    fn flip_keeps_boxes_on_their_paint_and_twice_is_identity() {
        let s = painted(160, 120, &[[10.0, 20.0, 60.0, 80.0], [100.0, 30.0, 150.0, 110.0]]);
        let f = hflip(s.clone());
        // x1' = 160 - 60 = 100, x2' = 160 - 10 = 150
        assert_eq!(f.boxes[0], [100.0, 20.0, 150.0, 80.0]);
        assert!(f.meta.flipped);
        assert_boxes_frame_their_paint(&f, &s);
        let ff = hflip(f);
        assert_eq!(ff.boxes, s.boxes);
        assert_eq!(ff.image, s.image);
        assert_eq!(ff.masks, s.masks);
    }

    #[test]
    fn resize_then_flip_then_pad_keeps_boxes_on_their_paint() {
        let s = painted(150, 100, &[[20.0, 10.0, 70.0, 60.0]]);
        let t = hflip(resize(s.clone(), [300, 200], true));
        assert_boxes_frame_their_paint(&t, &s);
        let (w, h) = t.image.dimensions();
        let (pw, ph) = (round_up(w as usize, 32), round_up(h as usize, 32));
        assert_eq!((pw, ph), (320, 224)); // 300 -> 320, 200 -> 224
        let mut buf = vec![0.0; 3 * ph * pw];
        normalize_into(&t.image, [0.0; 3], [1.0; 3], &mut buf, ph, pw);
        let b = t.boxes[0];
        // inside the box (red channel of the paint = 60), and the padded area is zero
        let (cx, cy) = (((b[0] + b[2]) / 2.0) as usize, ((b[1] + b[3]) / 2.0) as usize);
        assert_eq!(buf[cy * pw + cx], 60.0);
        assert_eq!(buf[(ph - 1) * pw + pw - 1], 0.0);
    }

    #[test]
    fn normalize_uses_mean_and_std_per_channel() {
        let mut img = RgbImage::new(1, 1);
        img.put_pixel(0, 0, Rgb([130, 120, 110]));
        let mut buf = vec![9.0; 3 * 2 * 2];
        buf.iter_mut().for_each(|v| *v = 0.0);
        normalize_into(
            &img,
            [123.675, 116.28, 103.53],
            [58.395, 57.12, 57.375],
            &mut buf,
            2,
            2,
        );
        // (130 - 123.675) / 58.395 = 0.108314
        assert!((buf[0] - 0.108_314).abs() < 1e-5);
        assert!((buf[4] - (120.0 - 116.28) / 57.12).abs() < 1e-6);
        assert!((buf[8] - (110.0 - 103.53) / 57.375).abs() < 1e-6);
        assert_eq!(buf[1], 0.0);
    }

    #[test]
    fn empty_annotations_pass_through() {
        let s = painted(64, 48, &[]);
        let t = hflip(resize(s, [128, 96], true));
        assert!(t.boxes.is_empty() && t.masks.is_empty() && t.labels.is_empty());
        assert_eq!(t.image.dimensions(), (128, 96));
    }
}
