//! `attndet classify`: ImageNet classification of images with a backbone's head.

use std::path::{Path, PathBuf};

use anyhow::Context;
use attndet_backbones::{BackboneArch, Classifier};
use attndet_detectors::data::loader::MAX_IMAGE_PIXELS;
use burn::prelude::*;
use burn::tensor::activation::softmax;
use clap::Args;
use image::imageops::FilterType;
use serde_json::{Value, json};

use crate::device::DeviceArg;

/// ImageNet channel means (RGB, on [0, 1] values).
const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations.
const STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Arguments of `attndet classify`.
#[derive(Args, Debug)]
#[command(
    long_about = "Classify images with an ImageNet model of the zoo.\n\n\
Preprocessing as torchvision's evaluation transform: RGB; the shorter side resized to 256 (bilinear, \
antialiased) and the centre 224x224 cropped, unless --no-resize (the image is used as it is); values scaled to \
[0, 1] and normalised with mean 0.485/0.456/0.406 and std 0.229/0.224/0.225.\n\n\
Prints the top-k classes (softmax probability and logit) of each image. Class names come from --labels (one per \
line, in class-index order); without it classes are named by index (class_0 .. class_999). With --json, \
stdout is one JSON document: for one image an object {\"image\", \"logits\" (all), \"top\": [{\"index\", \
\"label\", \"prob\", \"logit\"}]}, for several images a list of such objects.",
    after_help = "Examples:\n  \
attndet classify --model resnet50 --checkpoint resnet50.pth --topk 5 cat.jpg dog.png\n  \
attndet classify --model dca_se_resnet50 --checkpoint dca_se_resnet50.pth.tar --labels imagenet.txt --json cat.jpg\n  \
attndet classify --model sda_resnet86 --checkpoint sda_resnet86.safetensors --explain cat.jpg"
)]
pub struct ClassifyArgs {
    /// Zoo name of the model, e.g. resnet50, dca_se_resnet50.
    #[arg(long)]
    pub model: String,
    /// Weights: a PyTorch checkpoint (.pth, .pth.tar) or a safetensors file.
    #[arg(long, value_name = "FILE")]
    pub checkpoint: PathBuf,
    /// Feed the image at its own size (no resize, no crop).
    #[arg(long)]
    pub no_resize: bool,
    /// Number of classes shown per image.
    #[arg(long, default_value_t = 5)]
    pub topk: usize,
    /// Class names, one per line, in class-index order.
    #[arg(long, value_name = "FILE")]
    pub labels: Option<PathBuf>,
    /// Print one JSON document on stdout instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Also show what the attention learned: SDA's depth-attention weights per stage (mean over channels),
    /// DCA's connection weights alpha/beta and the previous block's share beta/(alpha+beta) (JSON: "explain").
    #[arg(long)]
    pub explain: bool,
    /// Images (PNG or JPEG).
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
    /// The compute device.
    #[command(flatten)]
    pub device: crate::device::DeviceOpt,
}

/// torchvision's `Compose([Resize(256), CenterCrop(224)])` on a PIL image: the shorter side becomes 256 (the
/// longer one `int(256 * long / short)`) with antialiased bilinear resampling (a triangle filter whose support
/// grows with the downscale factor, as PIL's), then the centre 224x224, offsets `int(round((size - 224) / 2))` with Python's
/// half-to-even rounding.
/// Within one grey level of torchvision's output (test below). The image must not be empty.
fn resize_center_crop(img: &image::RgbImage) -> image::RgbImage {
    let (w, h) = img.dimensions();
    let (nw, nh) = if w <= h {
        (256, (256.0 * h as f64 / w as f64) as u32)
    } else {
        ((256.0 * w as f64 / h as f64) as u32, 256)
    };
    let resized = image::imageops::resize(img, nw, nh, FilterType::Triangle);
    // Python's round() rounds halves to even: (293 - 224) / 2 = 34.5 gives 34, not 35.
    let left = ((nw as f64 - 224.0) / 2.0).round_ties_even() as u32;
    let top = ((nh as f64 - 224.0) / 2.0).round_ties_even() as u32;
    image::imageops::crop_imm(&resized, left, top, 224, 224).to_image()
}

/// Decode and preprocess one image into a normalised `[3, H, W]` buffer (channel-major).
pub fn preprocess(path: &Path, resize: bool) -> anyhow::Result<(Vec<f32>, [usize; 2])> {
    // the loader's decoder: refuses images over MAX_IMAGE_PIXELS before allocating them
    let img = attndet_detectors::data::loader::decode(path)
        .map_err(|e| crate::errors::bad_input(format!("cannot read image: {e}")))?;
    let img = if resize {
        let (w, h) = img.dimensions();
        if w == 0 || h == 0 {
            return Err(crate::errors::bad_input(format!(
                "image {} is empty",
                path.display()
            )));
        }
        // the shorter side becomes 256: an extreme aspect ratio would make the intermediate image enormous
        let (short, long) = (u64::from(w.min(h)), u64::from(w.max(h)));
        if 256 * 256 * long / short > MAX_IMAGE_PIXELS {
            return Err(crate::errors::bad_input(format!(
                "image {}: {w}x{h} is too elongated to resize its shorter side to 256 (use --no-resize)",
                path.display()
            )));
        }
        resize_center_crop(&img)
    } else {
        img
    };
    let (w, h) = (img.width() as usize, img.height() as usize);
    if w == 0 || h == 0 {
        return Err(crate::errors::bad_input(format!(
            "image {} is empty",
            path.display()
        )));
    }
    let mut data = vec![0f32; 3 * h * w];
    for (x, y, p) in img.enumerate_pixels() {
        for c in 0..3 {
            let v = f32::from(p[c]) / 255.0;
            data[c * h * w + y as usize * w + x as usize] = (v - MEAN[c]) / STD[c];
        }
    }
    Ok((data, [h, w]))
}

fn labels(path: Option<&Path>, classes: usize) -> anyhow::Result<Vec<String>> {
    let Some(path) = path else {
        return Ok((0..classes).map(|i| format!("class_{i}")).collect());
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| crate::errors::bad_input(format!("cannot read labels {}: {e}", path.display())))?;
    let names: Vec<String> = text
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    if names.len() != classes {
        return Err(crate::errors::bad_input(format!(
            "labels {}: {} names for a {classes}-class model",
            path.display(),
            names.len()
        )));
    }
    Ok(names)
}

/// Run `attndet classify` on `device`.
pub fn run(args: &ClassifyArgs, device: &DeviceArg) -> anyhow::Result<()> {
    device.run(ClassifyJob(args))
}

struct ClassifyJob<'a>(&'a ClassifyArgs);

impl crate::device::BackendJob for ClassifyJob<'_> {
    type Output = ();

    fn run<B: Backend>(self, device: &B::Device) -> anyhow::Result<()> {
        run_on::<B>(self.0, device)
    }
}

fn run_on<B: Backend>(args: &ClassifyArgs, device: &B::Device) -> anyhow::Result<()> {
    if args.topk == 0 {
        return Err(crate::errors::bad_input("--topk must be at least 1"));
    }
    let arch = BackboneArch::parse(&args.model)?;
    let mut model = arch.build_lazy::<B>(device)?;
    model
        .load_weights(&arch, &args.checkpoint)
        .with_context(|| format!("loading {} weights", arch.name()))?;
    let classes = model.num_classes();
    let names = labels(args.labels.as_deref(), classes)?;
    let k = args.topk.min(classes);
    let progress = indicatif::ProgressBar::new(args.images.len() as u64);
    if args.json || args.images.len() < 2 {
        progress.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut docs = Vec::new();
    for path in &args.images {
        let (data, [h, w]) = preprocess(path, !args.no_resize)?;
        let x = Tensor::<B, 4>::from_data(TensorData::new(data, [1, 3, h, w]), device);
        let explained = if args.explain {
            attndet_backbones::sda::explain::explain(&model, x.clone())
        } else {
            None
        };
        let logits = model.forward_logits(x);
        let probs: Vec<f32> = softmax(logits.clone(), 1).into_data().to_vec()?;
        let logits: Vec<f32> = logits.into_data().to_vec()?;
        let mut order: Vec<usize> = (0..classes).collect();
        order.sort_by(|a, b| logits[*b].total_cmp(&logits[*a]).then(a.cmp(b)));
        let top: Vec<Value> = order[..k]
            .iter()
            .map(|&i| json!({"index": i, "label": names[i], "prob": probs[i], "logit": logits[i]}))
            .collect();
        if !args.json {
            progress.suspend(|| {
                println!("{}", path.display());
                println!(
                    "  {:>4}  {:>5}  {:<24}  {:>8}  {:>9}",
                    "rank", "class", "label", "prob", "logit"
                );
                for (rank, &i) in order[..k].iter().enumerate() {
                    println!(
                        "  {:>4}  {:>5}  {:<24}  {:>8.4}  {:>9.4}",
                        rank + 1,
                        i,
                        names[i],
                        probs[i],
                        logits[i]
                    );
                }
            });
        }
        if args.explain && !args.json {
            match &explained {
                Some(report) => progress.suspend(|| println!("  explain: {report}")),
                None => {
                    progress.suspend(|| println!("  explain: {} has no SDA or DCA attention", arch.name()))
                }
            }
        }
        let mut doc = json!({"image": path.display().to_string(), "logits": logits, "top": top});
        if let Some(report) = explained {
            doc["explain"] = report;
        }
        docs.push(doc);
        progress.inc(1);
    }
    progress.finish_and_clear();
    if args.json {
        let doc = if docs.len() == 1 {
            docs.remove(0)
        } else {
            Value::Array(docs)
        };
        println!("{}", serde_json::to_string(&doc)?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test images of `tools/scripts/classify_resize_fixture.py`: R a horizontal ramp, G a vertical one,
    /// B a 16-pixel checkerboard of 20 and 220.
    fn pattern(w: u32, h: u32) -> image::RgbImage {
        image::RgbImage::from_fn(w, h, |x, y| {
            let b = if (x / 16 + y / 16) % 2 == 0 { 20 } else { 220 };
            image::Rgb([(x * 255 / (w - 1)) as u8, (y * 255 / (h - 1)) as u8, b])
        })
    }

    /// Against torchvision 0.29 / PIL 13 (`python3 tools/scripts/classify_resize_fixture.py --out
    /// tools/tests/fixtures`): a downscale (333x290 -> 293x256, whose crop offset 34.5 rounds to even) and an
    /// upscale (120x90 -> 341x256). PIL resamples in 8-bit fixed point, so a value may be off by one grey level
    /// (measured: 37 and 20 of the 150,528 values, by exactly one); a wrong filter, size or crop offset is off
    /// by tens of levels along the checkerboard's edges.
    #[test]
    fn resize_and_crop_match_torchvision() {
        for (name, w, h) in [("resize_down", 333, 290), ("resize_up", 120, 90)] {
            let path = format!(
                "{}/tests/fixtures/classify_{name}.png",
                env!("CARGO_MANIFEST_DIR")
            );
            let want = image::open(&path).unwrap().to_rgb8();
            let got = resize_center_crop(&pattern(w, h));
            assert_eq!(got.dimensions(), want.dimensions());
            let diffs: Vec<i32> = got
                .as_raw()
                .iter()
                .zip(want.as_raw())
                .map(|(&a, &b)| (i32::from(a) - i32::from(b)).abs())
                .collect();
            let max = diffs.iter().max().copied().unwrap_or(0);
            let mean = diffs.iter().sum::<i32>() as f64 / diffs.len() as f64;
            assert!(max <= 1 && mean <= 0.01, "{name}: max {max}, mean {mean:.4}");
        }
    }
}
