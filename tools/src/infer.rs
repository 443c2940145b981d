//! `attndet infer [CONFIG] CKPT IMAGE|DIR|GLOB...`: detections on arbitrary images, as JSON and drawn on the
//! images. A checkpoint of ours carries its config and class names; a config given is checked against it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use attndet_detectors::data::DetRecord;
use attndet_detectors::engine::evaluate::{predict_records, test_loader_options};
use clap::Args;

use crate::device::{DeviceArg, DeviceOpt};
use crate::errors::bad_input;

/// Arguments of `attndet infer`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
attndet infer work_dirs/r50/best photos/ --show-dir out/          # a directory: its images\n  \
attndet infer work_dirs/r50/best 'shots/*/img_*.jpg' --out dets.json --show-dir out/\n  \
attndet infer configs/retinanet/retinanet_r50_fpn_1x_coco.json retinanet_r50_fpn_1x_coco.pth img.jpg")]
pub struct InferArgs {
    /// `[CONFIG] CKPT IMAGE...`: the config (optional: a checkpoint of ours records its own; recognised as a
    /// `.json` file; when given it is checked against the checkpoint's), the checkpoint (a checkpoint
    /// directory, a work dir, or a whole mmdetection or torchvision `.pth`, which
    /// needs CONFIG), then the images: files (PNG,
    /// JPEG, ...), directories (their image files, not recursive) or glob patterns (`'dir/*.jpg'`, quoted so
    /// that attndet expands them).
    #[arg(required = true, value_name = "[CONFIG] CKPT IMAGE")]
    pub paths: Vec<PathBuf>,
    /// Write the detections as JSON: one entry per image with boxes `[x1, y1, x2, y2]` in its pixels.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Draw the detections on the images into this directory. A drawing has its image's file name; inputs
    /// from several directories keep their paths below the directories' deepest common one (`a/x.png` and
    /// `b/x.png` become DIR/a/x.png and DIR/b/x.png), so no drawing overwrites another.
    #[arg(long)]
    pub show_dir: Option<PathBuf>,
    /// Keep detections with at least this score.
    #[arg(long, default_value_t = 0.3)]
    pub score_thr: f32,
    /// Config overrides `a.b.c=VALUE`, applied to CONFIG or the checkpoint's.
    #[arg(long = "cfg-options", value_name = "KEY=VALUE", num_args = 1..)]
    pub cfg_options: Vec<String>,
    /// The compute device.
    #[command(flatten)]
    pub device: DeviceOpt,
}

/// The positional arguments split: `(config, checkpoint, image arguments)`.
fn split_paths(paths: &[PathBuf]) -> anyhow::Result<(Option<&Path>, &Path, &[PathBuf])> {
    let is_config = |p: &Path| p.is_file() && p.extension().is_some_and(|e| e == "json");
    let (config, rest) = match paths.first() {
        Some(first) if is_config(first) => (Some(first.as_path()), &paths[1..]),
        _ => (None, paths),
    };
    match rest {
        [ckpt, images @ ..] if !images.is_empty() => Ok((config, ckpt.as_path(), images)),
        _ => Err(bad_input(
            "infer: expected [CONFIG] CKPT IMAGE...: a checkpoint and at least one image, directory or glob",
        )),
    }
}

/// Expand the image arguments: a file as it is, a directory to its image files (sorted; not recursive), a
/// glob pattern to its matches (sorted). The same file named twice is kept once.
pub fn expand_images(args: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let is_image = |p: &Path| p.is_file() && image::ImageFormat::from_path(p).is_ok();
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    let mut push = |p: PathBuf, out: &mut Vec<PathBuf>| {
        let key = p.canonicalize().unwrap_or_else(|_| p.clone());
        if seen.insert(key) {
            out.push(p);
        }
    };
    for a in args {
        if a.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(a)
                .with_context(|| format!("reading {}", a.display()))
                .map_err(|e| bad_input(format!("{e:#}")))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| is_image(p))
                .collect();
            if files.is_empty() {
                return Err(bad_input(format!(
                    "{}: a directory without image files",
                    a.display()
                )));
            }
            files.sort();
            files.into_iter().for_each(|f| push(f, &mut out));
        } else if a.exists() {
            push(a.clone(), &mut out);
        } else {
            let text = a.to_string_lossy();
            if !text.contains(['*', '?', '[']) {
                return Err(bad_input(format!(
                    "image {}: no such file or directory",
                    a.display()
                )));
            }
            let matches = glob::glob(&text).map_err(|e| bad_input(format!("pattern {text}: {e}")))?;
            let mut files: Vec<PathBuf> = matches.filter_map(Result::ok).filter(|p| is_image(p)).collect();
            if files.is_empty() {
                return Err(bad_input(format!("pattern {text}: matches no image file")));
            }
            files.sort();
            files.into_iter().for_each(|f| push(f, &mut out));
        }
    }
    Ok(out)
}

/// Where the drawing of each image goes below the show dir: its path relative to the deepest directory
/// common to all images (just the file name when they share one directory). Distinct files get distinct
/// names, so no drawing overwrites another.
pub fn drawing_names(images: &[PathBuf]) -> Vec<PathBuf> {
    let absolute: Vec<PathBuf> = images
        .iter()
        .map(|p| p.canonicalize().unwrap_or_else(|_| p.clone()))
        .collect();
    let mut common: Option<PathBuf> = None;
    for p in &absolute {
        let parent = p.parent().map(Path::to_path_buf).unwrap_or_default();
        common = Some(match common {
            None => parent,
            Some(c) => {
                let shared: PathBuf = c
                    .components()
                    .zip(parent.components())
                    .take_while(|(a, b)| a == b)
                    .map(|(a, _)| a)
                    .collect();
                shared
            }
        });
    }
    let common = common.unwrap_or_default();
    absolute
        .iter()
        .map(|p| {
            let rel = p.strip_prefix(&common).unwrap_or(p);
            // a root or prefix component (`/`, `C:`) cannot be joined below the show dir
            rel.components()
                .filter(|c| matches!(c, std::path::Component::Normal(_)))
                .collect()
        })
        .collect()
}

/// Run `attndet infer`.
pub fn run(args: &InferArgs, device: &DeviceArg) -> anyhow::Result<()> {
    device.check_usable()?;
    device.run(InferJob { args })
}

struct InferJob<'a> {
    args: &'a InferArgs,
}

impl crate::device::BackendJob for InferJob<'_> {
    type Output = ();

    fn run<B: attndet_detectors::models::DetBackend>(self, device: &B::Device) -> anyhow::Result<()> {
        run_on::<B>(self.args, device)
    }
}

fn run_on<B: attndet_detectors::models::DetBackend>(
    args: &InferArgs,
    device: &B::Device,
) -> anyhow::Result<()> {
    let (config, ckpt, image_args) = split_paths(&args.paths)?;
    let images = expand_images(image_args)?;
    let drawings = drawing_names(&images);
    let mut records = Vec::with_capacity(images.len());
    for (i, file) in images.iter().enumerate() {
        let size =
            image::image_dimensions(file).map_err(|e| bad_input(format!("image {}: {e}", file.display())))?;
        records.push(DetRecord {
            image_id: i as u64,
            file: file.clone(),
            size,
            boxes: vec![],
            labels: vec![],
            ignore: vec![],
            ann_ids: vec![],
            masks: vec![],
        });
    }
    let loaded = crate::ckpt::load::<B>(config, ckpt, &args.cfg_options, device)?;
    let (model, p) = (&loaded.model, &loaded.prepared);
    // the checkpoint's class names, else the val annotations'; label indices when neither is known
    let names = &loaded.classes;
    let mut opts = test_loader_options(&p.cfg);
    opts.skip_bad_images = false;
    let preds = predict_records(model, Arc::new(records), &opts, device, &mut |_, _| {})?;
    let mut out = Vec::with_capacity(preds.len());
    for (id, d) in &preds {
        let file = &images[*id as usize];
        let dets: Vec<serde_json::Value> = d
            .boxes
            .iter()
            .zip(&d.scores)
            .zip(&d.labels)
            .enumerate()
            .filter(|(_, ((_, s), _))| **s >= args.score_thr)
            .map(|(i, ((b, s), l))| {
                let mut v = serde_json::json!({"bbox": b, "score": s, "label": l, "category": names.get(*l).cloned().unwrap_or_else(|| l.to_string())});
                if let Some(m) = d.masks.as_ref().and_then(|m| m.get(i)) {
                    // COCO compressed RLE: {"size": [h, w], "counts": "..."}
                    v["segmentation"] = serde_json::json!({
                        "size": [m.h, m.w],
                        "counts": attndet_coco::mask::rle_to_string(m),
                    });
                }
                v
            })
            .collect();
        let mut entry = serde_json::json!({"file": file, "detections": dets});
        if let Some(dir) = &args.show_dir {
            let drawing = dir.join(&drawings[*id as usize]);
            crate::test::save_drawn_to(file, d, names, args.score_thr, &drawing)?;
            entry["drawing"] = serde_json::json!(drawing);
        }
        println!("{}: {} detections", file.display(), dets.len());
        out.push(entry);
    }
    if let Some(path) = &args.out {
        let text = serde_json::to_string_pretty(&out)?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text)
            .and_then(|_| std::fs::rename(&tmp, path))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
