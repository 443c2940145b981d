//! Drawing detections and annotations on images so a person can look at them: box outlines, translucent
//! mask overlays and text labels (DejaVu Sans Bold, embedded, printable ASCII).
//!
//! Boxes are `[x, y, w, h]` in absolute pixels; masks are [`Rle`]s of the image's size.

use ab_glyph::{Font, FontRef, PxScale, ScaleFont};
use image::{Rgb, RgbImage};
use imageproc::drawing::{draw_filled_rect_mut, draw_hollow_rect_mut, draw_text_mut};
use imageproc::rect::Rect;

use crate::mask::Rle;

static FONT_BYTES: &[u8] = include_bytes!("../assets/DejaVuSans-Bold-ascii.ttf");

fn font() -> FontRef<'static> {
    // The embedded font is a valid TrueType file (checked by the tests).
    FontRef::try_from_slice(FONT_BYTES).expect("embedded font parses")
}

/// A distinct, saturated colour for index `i` (category or instance), stable across runs.
pub fn palette(i: usize) -> [u8; 3] {
    const P: [[u8; 3]; 12] = [
        [230, 25, 75],
        [60, 180, 75],
        [255, 225, 25],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
        [210, 245, 60],
        [250, 190, 212],
        [0, 128, 128],
        [170, 110, 40],
    ];
    P[i % P.len()]
}

/// One thing to draw: a box, optionally a mask, and a label such as `"cat 0.93"`.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    /// Box `[x, y, w, h]` in pixels.
    pub bbox: [f64; 4],
    /// Mask of the image's size, if any.
    pub mask: Option<Rle>,
    /// Text drawn above the box's top-left corner (empty: none).
    pub label: String,
    /// Outline, mask and label-background colour.
    pub colour: [u8; 3],
}

/// Outline a box `[x, y, w, h]` with `thickness` pixels (inward), clipped to the image.
pub fn draw_box(img: &mut RgbImage, bbox: [f64; 4], colour: [u8; 3], thickness: u32) {
    let (x0, y0) = (bbox[0].round() as i32, bbox[1].round() as i32);
    let (w, h) = (bbox[2].round().max(1.0) as u32, bbox[3].round().max(1.0) as u32);
    for t in 0..thickness.max(1) {
        let (tw, th) = (w.saturating_sub(2 * t), h.saturating_sub(2 * t));
        if tw == 0 || th == 0 {
            break;
        }
        draw_hollow_rect_mut(
            img,
            Rect::at(x0 + t as i32, y0 + t as i32).of_size(tw, th),
            Rgb(colour),
        );
    }
}

/// Blend `colour` over the mask's pixels with opacity `alpha` (0..=1). A mask of another size is skipped.
pub fn overlay_mask(img: &mut RgbImage, mask: &Rle, colour: [u8; 3], alpha: f32) {
    if mask.h != img.height() || mask.w != img.width() {
        return;
    }
    let h = mask.h as usize;
    let n = h * mask.w as usize;
    let mut pos = 0usize;
    for (j, &c) in mask.counts.iter().enumerate() {
        let end = (pos + c as usize).min(n);
        if j % 2 == 1 {
            for p in pos..end {
                let px = img.get_pixel_mut((p / h) as u32, (p % h) as u32);
                for (v, &c) in px.0.iter_mut().zip(&colour) {
                    *v = (*v as f32 * (1.0 - alpha) + c as f32 * alpha).round() as u8;
                }
            }
        }
        pos = end;
    }
}

/// Width and line height in pixels of `text` set in the embedded font at size `px` (the line height is the
/// font's ascent plus descent, the same for every text, so lines of labels align).
pub fn text_size(px: f32, text: &str) -> (u32, u32) {
    let font = font();
    let (w, _) = imageproc::drawing::text_size(PxScale::from(px), &font, text);
    let scaled = font.as_scaled(PxScale::from(px));
    (w, (scaled.ascent() - scaled.descent()).ceil() as u32)
}

/// Width in pixels of `text` set in the embedded font at size `px`.
pub fn text_width(px: f32, text: &str) -> u32 {
    text_size(px, text).0
}

/// Draw `text` in `colour` with its line box's top-left corner at (x, y), font size `px` pixels, blended
/// (anti-aliased) over what is there; parts outside the image are clipped. No background is drawn.
pub fn draw_text(img: &mut RgbImage, x: i32, y: i32, px: f32, colour: [u8; 3], text: &str) {
    if text.is_empty() {
        return;
    }
    draw_text_mut(img, Rgb(colour), x, y, PxScale::from(px), &font(), text);
}

/// Draw `text` at (x, y) (top-left) in white on a filled `background` box; `height` is the font size in pixels.
/// The label is moved inside the image when it would stick out.
pub fn draw_label(img: &mut RgbImage, x: i32, y: i32, text: &str, background: [u8; 3], height: f32) {
    if text.is_empty() {
        return;
    }
    let font = font();
    let scale = PxScale::from(height);
    let (tw, th) = imageproc::drawing::text_size(scale, &font, text);
    let (bw, bh) = (tw + 4, th.max(height as u32) + 2);
    let x = x.clamp(0, (img.width() as i32 - bw as i32).max(0));
    let y = y.clamp(0, (img.height() as i32 - bh as i32).max(0));
    draw_filled_rect_mut(img, Rect::at(x, y).of_size(bw, bh), Rgb(background));
    // Dark text on light backgrounds, white on dark ones.
    let luma = 0.299 * background[0] as f32 + 0.587 * background[1] as f32 + 0.114 * background[2] as f32;
    let fg = if luma > 150.0 {
        Rgb([0, 0, 0])
    } else {
        Rgb([255, 255, 255])
    };
    draw_text_mut(img, fg, x + 2, y, scale, &font, text);
}

/// Enlarge a small image by an integer factor (nearest neighbour, so pixels stay sharp squares) until its
/// shorter side is at least `min_side`, so boxes and labels drawn on it stay readable; returns the image
/// and the factor (1 when it is already large enough) by which coordinates must be multiplied.
pub fn enlarge_small(img: RgbImage, min_side: u32) -> (RgbImage, u32) {
    let short = img.width().min(img.height());
    let factor = if short == 0 {
        1
    } else {
        min_side.div_ceil(short).max(1)
    };
    if factor == 1 {
        return (img, 1);
    }
    let (w, h) = (img.width() * factor, img.height() * factor);
    let big = RgbImage::from_fn(w, h, |x, y| *img.get_pixel(x / factor, y / factor));
    (big, factor)
}

/// Draw instances in order: all masks first (so outlines and labels stay readable), then boxes, then labels
/// above each box's top-left corner.
pub fn draw_instances(img: &mut RgbImage, instances: &[Instance]) {
    for inst in instances {
        if let Some(m) = &inst.mask {
            overlay_mask(img, m, inst.colour, 0.45);
        }
    }
    let thickness = if img.width().max(img.height()) >= 400 {
        2
    } else {
        1
    };
    for inst in instances {
        draw_box(img, inst.bbox, inst.colour, thickness);
    }
    let size = (img.height().max(img.width()) as f32 / 40.0).clamp(10.0, 18.0);
    for inst in instances {
        let y = inst.bbox[1].round() as i32 - size as i32 - 2;
        draw_label(
            img,
            inst.bbox[0].round() as i32,
            y,
            &inst.label,
            inst.colour,
            size,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mask::fr_bbox;

    #[test]
    fn small_images_are_enlarged_by_an_integer_factor() {
        let mut img = RgbImage::new(64, 48);
        img.put_pixel(3, 2, Rgb([9, 8, 7]));
        // shorter side 48 -> ceil(256 / 48) = 6: 384 x 288, pixel (3, 2) covers (18..24, 12..18)
        let (big, k) = enlarge_small(img.clone(), 256);
        assert_eq!((k, big.width(), big.height()), (6, 384, 288));
        assert_eq!(big.get_pixel(18, 12).0, [9, 8, 7]);
        assert_eq!(big.get_pixel(23, 17).0, [9, 8, 7]);
        assert_eq!(big.get_pixel(24, 17).0, [0, 0, 0]);
        let (same, k) = enlarge_small(img, 48);
        assert_eq!((k, same.width()), (1, 64));
        let (empty, k) = enlarge_small(RgbImage::new(0, 0), 256);
        assert_eq!((k, empty.width()), (1, 0));
    }

    #[test]
    fn box_outline_is_drawn_on_its_border_only() {
        let mut img = RgbImage::new(10, 10);
        draw_box(&mut img, [2.0, 3.0, 4.0, 5.0], [255, 0, 0], 1);
        // Corners of the 4x5 box at (2, 3): (2,3) and (5,7) are on the outline, (3,4) inside is untouched.
        assert_eq!(img.get_pixel(2, 3).0, [255, 0, 0]);
        assert_eq!(img.get_pixel(5, 7).0, [255, 0, 0]);
        assert_eq!(img.get_pixel(3, 4).0, [0, 0, 0]);
        assert_eq!(img.get_pixel(6, 3).0, [0, 0, 0]);
    }

    #[test]
    fn mask_overlay_blends_exactly_the_mask() {
        let mut img = RgbImage::from_pixel(6, 6, Rgb([100, 100, 100]));
        let m = fr_bbox(&[1.0, 1.0, 2.0, 2.0], 6, 6);
        overlay_mask(&mut img, &m, [200, 0, 100], 0.5);
        // 100 * 0.5 + 200 * 0.5 = 150; 100 * 0.5 + 0 = 50; 100 * 0.5 + 100 * 0.5 = 100.
        assert_eq!(img.get_pixel(1, 1).0, [150, 50, 100]);
        assert_eq!(img.get_pixel(2, 2).0, [150, 50, 100]);
        assert_eq!(img.get_pixel(3, 3).0, [100, 100, 100]);
        let painted = img.pixels().filter(|p| p.0 != [100, 100, 100]).count();
        assert_eq!(painted as u32, m.area());
    }

    #[test]
    fn label_draws_text_pixels_and_empty_is_noop() {
        let mut img = RgbImage::new(80, 30);
        draw_label(&mut img, 5, 5, "", [0, 0, 255], 14.0);
        assert!(img.pixels().all(|p| p.0 == [0, 0, 0]));
        draw_label(&mut img, 5, 5, "cat 0.93", [0, 0, 255], 14.0);
        let blue = img.pixels().filter(|p| p.0 == [0, 0, 255]).count();
        let text = img.pixels().filter(|p| p.0[0] > 128 && p.0[1] > 128).count();
        assert!(blue > 100 && text > 20, "background {blue}, text {text}");
        draw_instances(&mut img, &[]);
    }

    #[test]
    fn plain_text_is_drawn_inside_its_measured_box() {
        let mut img = RgbImage::from_pixel(120, 40, Rgb([255, 255, 255]));
        let (w, h) = text_size(16.0, "AP 0.5");
        assert!(w > 30 && w < 80 && (16..=22).contains(&h), "{w} x {h}");
        assert_eq!(text_width(16.0, ""), 0);
        assert!(text_width(16.0, "AP 0.50") > w);
        draw_text(&mut img, 10, 5, 16.0, [0, 0, 0], "AP 0.5");
        let dark: Vec<(u32, u32)> = img
            .enumerate_pixels()
            .filter(|(_, _, p)| p.0[0] < 128)
            .map(|(x, y, _)| (x, y))
            .collect();
        assert!(dark.len() > 30, "{} dark pixels", dark.len());
        assert!(
            dark.iter()
                .all(|&(x, y)| x >= 10 && x < 10 + w + 2 && y >= 5 && y < 5 + h),
            "text outside its box"
        );
    }
}
