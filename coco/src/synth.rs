//! The synthetic "shapes" instance-segmentation dataset: circles, squares, triangles, ellipses and stars of
//! random colour, size and rotation on textured backgrounds, written as PNG images plus COCO JSON.
//!
//! Everything is exact: each object's polygon is stored with 2 decimals, its mask is that polygon rasterized
//! by pycocotools' rules ([`fr_poly`]), the painted pixels are exactly that mask, and `area` is its pixel count.
//! Objects may overlap (at most a quarter of the smaller one is covered); annotations are amodal (an occluded
//! part still belongs to its object), like the painted order is: later objects are drawn on top.
//!
//! Deterministic for a seed: every image draws from its own ChaCha8 stream (seed, split, index), so the
//! output does not depend on thread scheduling.

use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde_json::json;

use crate::annotations::{Annotation, Category, CocoJson, Image, Segmentation};
use crate::dataset::write_json_atomic;
use crate::error::CocoError;
use crate::mask::{Rle, fr_poly};

/// The shape classes, in category-id order (ids start at 1).
pub const SHAPES: [&str; 5] = ["circle", "square", "triangle", "ellipse", "star"];

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthConfig {
    /// Number of training images.
    pub train: usize,
    /// Number of validation images.
    pub val: usize,
    /// Image side in pixels (images are square), at least 32.
    pub size: u32,
    /// Random seed: the same seed gives byte-identical output.
    pub seed: u64,
    /// Most objects per image (at least 1 per image is placed).
    pub max_objects: usize,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            train: 200,
            val: 50,
            size: 128,
            seed: 0,
            max_objects: 4,
        }
    }
}

/// Largest image side [`generate`] accepts (pixels): 4096 x 4096 images are 48 MB each before encoding.
pub const MAX_SIZE: u32 = 4096;
/// Most images per split [`generate`] accepts.
pub const MAX_IMAGES: usize = 1_000_000;
/// Most objects per image [`generate`] accepts (placement gives up after 50 attempts anyway).
pub const MAX_OBJECTS: usize = 50;

/// Paths of what [`generate`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthOutput {
    /// `OUT/annotations/instances_train.json`.
    pub train_ann: PathBuf,
    /// `OUT/train/` (PNG images).
    pub train_images: PathBuf,
    /// `OUT/annotations/instances_val.json`.
    pub val_ann: PathBuf,
    /// `OUT/val/` (PNG images).
    pub val_images: PathBuf,
    /// Objects generated (train + val).
    pub objects: usize,
}

/// Generate the dataset under `out`: `train/*.png`, `val/*.png`, `annotations/instances_{train,val}.json`.
pub fn generate(out: &Path, cfg: &SynthConfig) -> Result<SynthOutput, CocoError> {
    if cfg.size < 32 {
        return Err(CocoError::invalid(
            "synth",
            "size",
            format!("{} is too small (at least 32 pixels)", cfg.size),
        ));
    }
    if cfg.size > MAX_SIZE {
        return Err(CocoError::invalid(
            "synth",
            "size",
            format!("{} is too large (at most {MAX_SIZE} pixels)", cfg.size),
        ));
    }
    if cfg.max_objects == 0 || cfg.max_objects > MAX_OBJECTS {
        return Err(CocoError::invalid(
            "synth",
            "max_objects",
            format!("{} is out of range (1 to {MAX_OBJECTS})", cfg.max_objects),
        ));
    }
    for (split, n) in [("train", cfg.train), ("val", cfg.val)] {
        if n > MAX_IMAGES {
            return Err(CocoError::invalid(
                "synth",
                split,
                format!("{n} images is too many (at most {MAX_IMAGES} per split)"),
            ));
        }
    }
    let werr = |path: &Path| {
        let path = path.to_owned();
        move |error| CocoError::Write { path, error }
    };
    let ann_dir = out.join("annotations");
    std::fs::create_dir_all(&ann_dir).map_err(werr(&ann_dir))?;
    let mut objects = 0;
    let mut paths = Vec::new();
    for (split, n, tag) in [("train", cfg.train, 1u64), ("val", cfg.val, 2u64)] {
        let img_dir = out.join(split);
        std::fs::create_dir_all(&img_dir).map_err(werr(&img_dir))?;
        let per_image: Vec<(Image, Vec<Annotation>)> = (0..n)
            .into_par_iter()
            .map(|i| {
                let seed = cfg.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (tag << 56) ^ i as u64;
                let (img, anns, pixels) = render_image(cfg, ChaCha8Rng::seed_from_u64(seed), i as u64 + 1);
                let path = img_dir.join(&img.file_name);
                pixels.save(&path).map_err(|e| CocoError::Write {
                    path: path.clone(),
                    error: std::io::Error::other(e),
                })?;
                Ok((img, anns))
            })
            .collect::<Result<_, CocoError>>()?;
        let mut json = CocoJson {
            info: Some(json!({
                "description": format!("attndet synthetic shapes, {split} split"),
                "seed": cfg.seed, "size": cfg.size,
            })),
            licenses: Some(json!([])),
            images: Vec::with_capacity(n),
            annotations: Vec::new(),
            categories: SHAPES
                .iter()
                .enumerate()
                .map(|(k, name)| Category {
                    id: k as u64 + 1,
                    name: (*name).into(),
                    supercategory: Some("shape".into()),
                })
                .collect(),
        };
        for (img, anns) in per_image {
            json.images.push(img);
            for mut a in anns {
                a.id = json.annotations.len() as u64 + 1;
                json.annotations.push(a);
            }
        }
        objects += json.annotations.len();
        let ann_path = ann_dir.join(format!("instances_{split}.json"));
        write_json_atomic(&ann_path, &json)?;
        paths.push((ann_path, img_dir));
    }
    let (val_ann, val_images) = paths.pop().unwrap_or_default();
    let (train_ann, train_images) = paths.pop().unwrap_or_default();
    Ok(SynthOutput {
        train_ann,
        train_images,
        val_ann,
        val_images,
        objects,
    })
}

/// One shape's polygon (vertices rounded to 0.01 so the JSON holds exactly what was rasterized).
fn shape_polygon(kind: usize, cx: f64, cy: f64, r: f64, rot: f64) -> Vec<f64> {
    let ring = |n: usize, radius: &dyn Fn(usize) -> (f64, f64)| -> Vec<f64> {
        let mut v = Vec::with_capacity(2 * n);
        for j in 0..n {
            let a = j as f64 / n as f64 * std::f64::consts::TAU;
            let (rx, ry) = radius(j);
            let (x, y) = (rx * a.cos(), ry * a.sin());
            let (xr, yr) = (x * rot.cos() - y * rot.sin(), x * rot.sin() + y * rot.cos());
            v.push(((cx + xr) * 100.0).round() / 100.0);
            v.push(((cy + yr) * 100.0).round() / 100.0);
        }
        v
    };
    match kind {
        0 => ring(32, &|_| (r, r)),
        1 => ring(4, &|_| (r, r)),
        2 => ring(3, &|_| (r, r)),
        3 => ring(32, &|_| (r, r * 0.55)),
        _ => ring(10, &|j| if j % 2 == 0 { (r, r) } else { (r * 0.45, r * 0.45) }),
    }
}

type Rendered = (Image, Vec<Annotation>, image::RgbImage);

fn render_image(cfg: &SynthConfig, mut rng: ChaCha8Rng, image_id: u64) -> Rendered {
    let s = cfg.size;
    let mut img = background(&mut rng, s);
    let bg_mean = mean_colour(&img);
    let n_obj = rng.random_range(1..=cfg.max_objects);
    let mut placed: Vec<(Rle, Vec<f64>, usize)> = Vec::new();
    let mut attempts = 0;
    while placed.len() < n_obj && attempts < 50 {
        attempts += 1;
        let kind = rng.random_range(0..SHAPES.len());
        let r = rng.random_range(s as f64 * 0.1..s as f64 * 0.25);
        let cx = rng.random_range(r..s as f64 - r);
        let cy = rng.random_range(r..s as f64 - r);
        let rot = rng.random_range(0.0..std::f64::consts::TAU);
        let poly = shape_polygon(kind, cx, cy, r, rot);
        let rle = fr_poly(&poly, s, s);
        let area = rle.area();
        if area < 16 {
            continue;
        }
        let too_much_overlap = placed.iter().any(|(other, _, _)| {
            let inter = crate::mask::merge(&[rle.clone(), other.clone()], true)
                .map(|m| m.area())
                .unwrap_or(u32::MAX);
            inter as f64 > 0.25 * area.min(other.area()) as f64
        });
        if too_much_overlap {
            continue;
        }
        placed.push((rle, poly, kind));
    }
    let mut anns = Vec::with_capacity(placed.len());
    for (rle, poly, kind) in placed {
        let colour = shape_colour(&mut rng, bg_mean);
        paint(&mut img, &rle, colour, &mut rng);
        let xs = poly.iter().step_by(2);
        let ys = poly.iter().skip(1).step_by(2);
        let (x0, x1) = xs.fold((f64::MAX, f64::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        let (y0, y1) = ys.fold((f64::MAX, f64::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        let round = |v: f64| (v * 100.0).round() / 100.0;
        anns.push(Annotation {
            id: 0,
            image_id,
            category_id: kind as u64 + 1,
            bbox: vec![x0, y0, round(x1 - x0), round(y1 - y0)],
            area: rle.area() as f64,
            iscrowd: 0,
            segmentation: Some(Segmentation::Polygons(vec![poly])),
        });
    }
    let meta = Image {
        id: image_id,
        width: s,
        height: s,
        file_name: format!("{image_id:06}.png"),
        extra: Default::default(),
    };
    (meta, anns, img)
}

fn background(rng: &mut ChaCha8Rng, s: u32) -> image::RgbImage {
    let c0: [f64; 3] = std::array::from_fn(|_| rng.random_range(30.0..225.0));
    let c1: [f64; 3] = std::array::from_fn(|c| (c0[c] + rng.random_range(-50.0..50.0)).clamp(0.0, 255.0));
    let style = rng.random_range(0..3);
    let angle = rng.random_range(0.0..std::f64::consts::PI);
    let freq = rng.random_range(0.08..0.4);
    let cell = rng.random_range(4..12u32);
    let (ca, sa) = (angle.cos(), angle.sin());
    let mut img = image::RgbImage::new(s, s);
    for (x, y, px) in img.enumerate_pixels_mut() {
        let (xf, yf) = (x as f64, y as f64);
        let t = match style {
            0 => (xf * ca + yf * sa) / (s as f64 * 1.5) + 0.3,
            1 => 0.5 + 0.5 * ((xf * ca + yf * sa) * freq).sin(),
            _ => ((x / cell + y / cell) % 2) as f64,
        };
        let noise = rng.random_range(-10.0..10.0);
        *px = image::Rgb(std::array::from_fn(|c| {
            (c0[c] + (c1[c] - c0[c]) * t + noise).clamp(0.0, 255.0) as u8
        }));
    }
    img
}

fn mean_colour(img: &image::RgbImage) -> [f64; 3] {
    let mut m = [0.0; 3];
    for px in img.pixels() {
        for (acc, &v) in m.iter_mut().zip(&px.0) {
            *acc += v as f64;
        }
    }
    let n = (img.width() * img.height()).max(1) as f64;
    m.map(|v| v / n)
}

/// A colour clearly different from the background (sum of channel differences > 150).
fn shape_colour(rng: &mut ChaCha8Rng, bg: [f64; 3]) -> [f64; 3] {
    loop {
        let c: [f64; 3] = std::array::from_fn(|_| rng.random_range(0.0..255.0));
        if (0..3).map(|i| (c[i] - bg[i]).abs()).sum::<f64>() > 150.0 {
            return c;
        }
    }
}

/// Paint exactly the mask's pixels, with a little noise so shapes are not perfectly flat.
fn paint(img: &mut image::RgbImage, rle: &Rle, colour: [f64; 3], rng: &mut ChaCha8Rng) {
    let h = rle.h as usize;
    let mut pos = 0usize;
    for (j, &c) in rle.counts.iter().enumerate() {
        if j % 2 == 1 {
            for p in pos..pos + c as usize {
                let (x, y) = ((p / h) as u32, (p % h) as u32);
                let noise = rng.random_range(-8.0..8.0);
                img.put_pixel(
                    x,
                    y,
                    image::Rgb(colour.map(|v| (v + noise).clamp(0.0, 255.0) as u8)),
                );
            }
        }
        pos += c as usize;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::CocoDataset;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("attndet-synth-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn deterministic_valid_and_exact() {
        let cfg = SynthConfig {
            train: 3,
            val: 2,
            size: 64,
            seed: 7,
            max_objects: 3,
        };
        let (a, b) = (tmp("a"), tmp("b"));
        let out = generate(&a, &cfg).unwrap();
        generate(&b, &cfg).unwrap();
        for rel in [
            "annotations/instances_train.json",
            "annotations/instances_val.json",
            "train/000001.png",
            "val/000002.png",
        ] {
            assert_eq!(
                std::fs::read(a.join(rel)).unwrap(),
                std::fs::read(b.join(rel)).unwrap(),
                "{rel} differs"
            );
        }
        let ds = CocoDataset::load(&out.train_ann).unwrap();
        assert_eq!(ds.images().len(), 3);
        assert_eq!(ds.categories().len(), SHAPES.len());
        assert!(!ds.annotations().is_empty());
        let png = image::open(out.train_images.join("000001.png"))
            .unwrap()
            .to_rgb8();
        assert_eq!(png.dimensions(), (64, 64));
        for ann in ds.annotations() {
            // The stored area is the pixel count of the stored polygon's mask (what pycocotools computes).
            let rle = ds.ann_to_rle(ann).unwrap();
            assert_eq!(rle.area() as f64, ann.area);
            assert!(ann.bbox[0] >= 0.0 && ann.bbox[0] + ann.bbox[2] <= 64.0);
        }
        let other = generate(
            &tmp("c"),
            &SynthConfig {
                seed: 8,
                ..cfg.clone()
            },
        )
        .unwrap();
        assert_ne!(
            std::fs::read(&other.train_ann).unwrap(),
            std::fs::read(&out.train_ann).unwrap()
        );
        for d in [a, b, tmp("c")] {
            let _ = std::fs::remove_dir_all(d);
        }
    }

    #[test]
    fn empty_splits_and_bad_size() {
        let d = tmp("empty");
        let out = generate(
            &d,
            &SynthConfig {
                train: 0,
                val: 0,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(out.objects, 0);
        assert!(CocoDataset::load(&out.val_ann).unwrap().images().is_empty());
        assert!(
            generate(
                &d,
                &SynthConfig {
                    size: 8,
                    ..Default::default()
                }
            )
            .is_err()
        );
        // sizes and counts that would overflow or exhaust memory are refused before anything is written
        for (cfg, field) in [
            (
                SynthConfig {
                    size: u32::MAX,
                    ..Default::default()
                },
                "size",
            ),
            (
                SynthConfig {
                    size: MAX_SIZE + 1,
                    ..Default::default()
                },
                "size",
            ),
            (
                SynthConfig {
                    train: usize::MAX,
                    ..Default::default()
                },
                "train",
            ),
            (
                SynthConfig {
                    val: MAX_IMAGES + 1,
                    ..Default::default()
                },
                "val",
            ),
            (
                SynthConfig {
                    max_objects: usize::MAX,
                    ..Default::default()
                },
                "max_objects",
            ),
        ] {
            let big = tmp("big");
            let err = generate(&big, &cfg).unwrap_err();
            assert!(err.is_bad_input() && err.to_string().contains(field), "{err}");
            assert!(!big.exists(), "nothing written for {field}");
        }
        let _ = std::fs::remove_dir_all(d);
    }
}
