//! `attndet test [CONFIG] CKPT`: run a trained detector over the val split, write COCO results, print the COCO
//! table (or `--json`). A checkpoint of ours carries its config; a config given is checked against it.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::device::{DeviceArg, DeviceOpt};
use crate::errors::bad_input;
use attndet_detectors::engine::evaluate::summary_text;
use attndet_detectors::models::EvalKind;

use crate::train::{eval_kinds, evaluate_val, evaluated_images, load_split};

/// Arguments of `attndet test`.
#[derive(Args, Debug)]
#[command(
    allow_missing_positional = true,
    after_help = "Examples:\n  \
attndet test work_dirs/r50/best --json                      # the checkpoint's own config\n  \
attndet test configs/retinanet/retinanet_r50_fpn_1x_coco.json work_dirs/r50/epoch_12 --out results.json\n  \
attndet test work_dirs/mask --eval bbox segm --cfg-options data.data_root=data/coco"
)]
pub struct TestArgs {
    /// The config (JSON) [default: the one the checkpoint records]. When given, it is compared with the
    /// checkpoint's: a difference that changes the model's tensors is an error naming the fields (exit 2),
    /// any other difference applies with a warning naming them.
    pub config: Option<PathBuf>,
    /// A checkpoint directory (WORK_DIR/epoch_N, WORK_DIR/best), a work dir (its newest checkpoint), or a whole
    /// mmdetection or torchvision detector checkpoint (`.pth`, read strictly, needs CONFIG; see `attndet convert
    /// --help`).
    pub checkpoint: PathBuf,
    /// Write the detections as a COCO results file (JSON list of {image_id, category_id, bbox, score}); with
    /// several kinds evaluated, one file each, named FILE's stem + `.KIND.json`.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// What to evaluate: `bbox`, `segm`, `proposal` (several allowed: `--eval bbox segm`) [default: what the
    /// detector predicts: bbox, or proposal for an RPN].
    #[arg(long, num_args = 1.., value_name = "KIND")]
    pub eval: Vec<EvalKind>,
    /// Print one JSON object instead of the table: `{"images", "skipped_images", "detections", "seconds",
    /// "bbox": {"iou_type", "stats": [12 numbers], "AP", "AP50", ..., "ARl"}, ...}` (the object of each kind is
    /// what `attndet eval --json` prints).
    #[arg(long)]
    pub json: bool,
    /// Draw the detections (score >= --show-score-thr) on the val images into this directory.
    #[arg(long)]
    pub show_dir: Option<PathBuf>,
    /// Minimum score of a drawn detection.
    #[arg(long, default_value_t = 0.3)]
    pub show_score_thr: f32,
    /// With --show-dir: draw the ground truth on the left of each image, the detections on the right.
    #[arg(long, requires = "show_dir")]
    pub show_gt: bool,
    /// Config overrides `a.b.c=VALUE` (e.g. data.val.ann_file=...), applied to CONFIG or the checkpoint's.
    #[arg(long = "cfg-options", value_name = "KEY=VALUE", num_args = 1..)]
    pub cfg_options: Vec<String>,
    /// Mixed precision (f16 compute, f32 master weights, loss scaling): refused in this version, with the reason
    /// (burn 0.21 offers no autocast; see the README's GPU section).
    #[arg(long)]
    pub amp: bool,
    /// The compute device.
    #[command(flatten)]
    pub device: DeviceOpt,
}

/// Run `attndet test`.
pub fn run(args: &TestArgs, device: &DeviceArg) -> anyhow::Result<()> {
    if args.amp {
        return Err(crate::device::amp_refused(device));
    }
    device.check_usable()?;
    device.run(TestJob { args })
}

struct TestJob<'a> {
    args: &'a TestArgs,
}

impl crate::device::BackendJob for TestJob<'_> {
    type Output = ();

    fn run<B: attndet_detectors::models::DetBackend>(self, device: &B::Device) -> anyhow::Result<()> {
        run_on::<B>(self.args, device)
    }
}

fn run_on<B: attndet_detectors::models::DetBackend>(
    args: &TestArgs,
    device: &B::Device,
) -> anyhow::Result<()> {
    let loaded = crate::ckpt::load::<B>(
        args.config.as_deref(),
        &args.checkpoint,
        &args.cfg_options,
        device,
    )?;
    let (model, p) = (&loaded.model, &loaded.prepared);
    let val = load_split(&p.cfg, false)?;
    if val.1.records.is_empty() {
        return Err(bad_input(format!(
            "data.val: {} has no image",
            p.cfg.data.val.ann_file
        )));
    }
    let started = std::time::Instant::now();
    let kinds = if args.eval.is_empty() {
        eval_kinds(model, &p.cfg)
    } else {
        args.eval.clone()
    };
    let (evals, preds) = evaluate_val(model, &p.cfg, &val, &kinds, device, args.json)?;
    let (images, skipped_note) = evaluated_images(val.1.records.len(), preds.len());
    if let Some(dir) = &args.show_dir {
        let files: std::collections::HashMap<u64, &std::path::Path> = val
            .1
            .records
            .iter()
            .map(|r| (r.image_id, r.file.as_path()))
            .collect();
        for (id, d) in &preds {
            if args.show_gt {
                crate::analyze::results::save_beside_ground_truth(
                    &val.0,
                    &val.1.category_ids,
                    (*id, d),
                    files[id],
                    args.show_score_thr as f64,
                    dir,
                )?;
            } else {
                save_drawn(files[id], d, &val.1.category_names, args.show_score_thr, dir)?;
            }
        }
    }
    if let Some(out) = &args.out {
        for e in &evals {
            let path = results_path(out, e.kind, evals.len());
            attndet_coco::write_results(&path, &e.results)
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    let detections: usize = preds.iter().map(|(_, d)| d.len()).sum();
    if args.json {
        let mut v = serde_json::json!({
            "images": images,
            "skipped_images": val.1.records.len() - images,
            "detections": detections,
            "seconds": started.elapsed().as_secs_f64(),
        });
        for e in &evals {
            v[e.kind.name()] = crate::eval::kind_stats_json(e.kind, &e.stats);
        }
        println!("{v}");
    } else {
        for e in &evals {
            println!(
                "{} evaluation of {} on {images} images{skipped_note} ({} detections)",
                e.kind,
                loaded.path.display(),
                detections
            );
            print!("{}", summary_text(e));
        }
    }
    Ok(())
}

/// Where the results of `kind` go: `out` itself when one kind is evaluated, else `out`'s stem + `.KIND.json`.
pub(crate) fn results_path(out: &std::path::Path, kind: EvalKind, kinds: usize) -> PathBuf {
    if kinds <= 1 {
        return out.to_path_buf();
    }
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "results".into());
    out.with_file_name(format!("{stem}.{kind}.json"))
}

/// Draw `dets` (boxes at least `score_thr`) on the image `file` and save it under `out_dir` with the same file
/// name. Returns the written path.
pub fn save_drawn(
    file: &std::path::Path,
    dets: &attndet_detectors::models::Detections,
    names: &[String],
    score_thr: f32,
    out_dir: &std::path::Path,
) -> anyhow::Result<PathBuf> {
    let name = file
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "image.png".into());
    let out = out_dir.join(name);
    save_drawn_to(file, dets, names, score_thr, &out)?;
    Ok(out)
}

/// Draw `dets` (boxes at least `score_thr`) on the image `file` and save the drawing as `out` (its directory
/// is created).
pub fn save_drawn_to(
    file: &std::path::Path,
    dets: &attndet_detectors::models::Detections,
    names: &[String],
    score_thr: f32,
    out: &std::path::Path,
) -> anyhow::Result<()> {
    use attndet_coco::draw::{Instance, draw_instances, enlarge_small, palette};
    let img = image::open(file)
        .with_context(|| format!("reading {}", file.display()))?
        .to_rgb8();
    // small images (the demo's are 64 px) are enlarged so the labels do not cover the objects
    let (mut img, k) = enlarge_small(img, 320);
    let k = k as f64;
    let instances: Vec<Instance> = dets
        .boxes
        .iter()
        .zip(&dets.scores)
        .zip(&dets.labels)
        .enumerate()
        .filter(|(_, ((_, s), _))| **s >= score_thr)
        .map(|(i, ((b, s), &l))| Instance {
            bbox: [
                b[0] as f64 * k,
                b[1] as f64 * k,
                (b[2] - b[0]) as f64 * k,
                (b[3] - b[1]) as f64 * k,
            ],
            mask: dets
                .masks
                .as_ref()
                .and_then(|m| m.get(i))
                .map(|m| enlarge_rle(m, k as u32)),
            label: format!(
                "{} {s:.2}",
                names.get(l).cloned().unwrap_or_else(|| l.to_string())
            ),
            colour: palette(l),
        })
        .collect();
    draw_instances(&mut img, &instances);
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    img.save(out)
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

/// A mask enlarged by an integer factor (nearest), to match an image enlarged by [`enlarge_small`].
fn enlarge_rle(m: &attndet_coco::Rle, k: u32) -> attndet_coco::Rle {
    if k <= 1 {
        return m.clone();
    }
    let bits = m.decode_row_major().unwrap_or_default();
    let (w, h) = (m.w as usize, m.h as usize);
    let (kw, kh) = (w * k as usize, h * k as usize);
    let big: Vec<u8> = (0..kh * kw)
        .map(|p| {
            let (y, x) = (p / kw / k as usize, p % kw / k as usize);
            bits.get(y * w + x).copied().unwrap_or(0)
        })
        .collect();
    attndet_coco::Rle::encode_row_major(&big, kh as u32, kw as u32).unwrap_or_default()
}
