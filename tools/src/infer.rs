//! `attndet infer CONFIG CKPT IMAGE...`: detections on arbitrary images, as JSON and drawn on the images.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use attndet_detectors::data::DetRecord;
use attndet_detectors::engine::evaluate::{predict_records, test_loader_options};
use clap::Args;

use crate::device::DeviceArg;
use crate::errors::bad_input;
use crate::train::{load_checkpoint_model, load_split, prepare};

/// Arguments of `attndet infer`.
#[derive(Args, Debug)]
pub struct InferArgs {
    /// The config the model was trained with (JSON).
    pub config: PathBuf,
    /// A checkpoint directory (WORK_DIR/epoch_N, WORK_DIR/best), a work dir (its newest checkpoint), or a whole
    /// mmdetection or torchvision detector checkpoint (`.pth`, read strictly; see `attndet convert --help`).
    pub checkpoint: PathBuf,
    /// Images (PNG or JPEG).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// Write the detections as JSON: one entry per image with boxes `[x1, y1, x2, y2]` in its pixels.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Draw the detections on the images into this directory.
    #[arg(long)]
    pub show_dir: Option<PathBuf>,
    /// Keep detections with at least this score.
    #[arg(long, default_value_t = 0.3)]
    pub score_thr: f32,
    /// Config overrides `a.b.c=VALUE`.
    #[arg(long = "cfg-options", value_name = "KEY=VALUE", num_args = 1..)]
    pub cfg_options: Vec<String>,
}

/// Run `attndet infer`.
pub fn run(args: &InferArgs, device: &DeviceArg) -> anyhow::Result<()> {
    device.check_usable()?;
    let p = prepare(&args.config, &args.cfg_options, None)?;
    device.run(InferJob { args, prepared: &p })
}

struct InferJob<'a> {
    args: &'a InferArgs,
    prepared: &'a crate::train::Prepared,
}

impl crate::device::BackendJob for InferJob<'_> {
    type Output = ();

    fn run<B: attndet_detectors::models::DetBackend>(self, device: &B::Device) -> anyhow::Result<()> {
        run_on::<B>(self.args, self.prepared, device)
    }
}

fn run_on<B: attndet_detectors::models::DetBackend>(
    args: &InferArgs,
    p: &crate::train::Prepared,
    device: &B::Device,
) -> anyhow::Result<()> {
    let mut records = Vec::with_capacity(args.images.len());
    for (i, file) in args.images.iter().enumerate() {
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
    let model = load_checkpoint_model::<B>(&p.cfg, &args.checkpoint, device)?;
    // class names from the val annotations when they can be read; label indices otherwise
    let names: Vec<String> = load_split(&p.cfg, false)
        .map(|(_, d)| d.category_names)
        .unwrap_or_default();
    let mut opts = test_loader_options(&p.cfg);
    opts.skip_bad_images = false;
    let preds = predict_records(&model, Arc::new(records), &opts, device, &mut |_, _| {})?;
    let mut out = Vec::with_capacity(preds.len());
    for (id, d) in &preds {
        let file = &args.images[*id as usize];
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
        if let Some(dir) = &args.show_dir {
            crate::test::save_drawn(file, d, &names, args.score_thr, dir)?;
        }
        println!("{}: {} detections", file.display(), dets.len());
        out.push(serde_json::json!({"file": file, "detections": dets}));
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
