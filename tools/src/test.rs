//! `attndet test CONFIG CKPT`: run a trained detector over the val split, write COCO results, print the COCO
//! table (or `--json`).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::device::DeviceArg;
use crate::errors::bad_input;
use attndet_detectors::engine::evaluate::summary_text;
use attndet_detectors::models::EvalKind;

use crate::train::{eval_kinds, evaluate_val, load_checkpoint_model, load_split, prepare};

/// Arguments of `attndet test`.
#[derive(Args, Debug)]
pub struct TestArgs {
    /// The config the model was trained with (JSON).
    pub config: PathBuf,
    /// A checkpoint directory (WORK_DIR/epoch_N, WORK_DIR/best), a work dir (its newest checkpoint), or a whole
    /// mmdetection detector checkpoint (`.pth`, read strictly; see `attndet convert --help`).
    pub checkpoint: PathBuf,
    /// Write the detections as a COCO results file (JSON list of {image_id, category_id, bbox, score}); with
    /// several kinds evaluated, one file each, named FILE's stem + `.KIND.json`.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// What to evaluate: `bbox`, `segm`, `proposal` (several allowed: `--eval bbox segm`) [default: what the
    /// detector predicts: bbox, or proposal for an RPN].
    #[arg(long, num_args = 1.., value_name = "KIND")]
    pub eval: Vec<EvalKind>,
    /// Print one JSON object `{"bbox": {"stats": [12 numbers]}, ...}` instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Draw the detections (score >= --show-score-thr) on the val images into this directory.
    #[arg(long)]
    pub show_dir: Option<PathBuf>,
    /// Minimum score of a drawn detection.
    #[arg(long, default_value_t = 0.3)]
    pub show_score_thr: f32,
    /// Config overrides `a.b.c=VALUE` (e.g. data.val.ann_file=...).
    #[arg(long = "cfg-options", value_name = "KEY=VALUE", num_args = 1..)]
    pub cfg_options: Vec<String>,
    /// Mixed precision (f16 compute, f32 master weights, loss scaling): refused in this version, with the reason
    /// (burn 0.21 offers no autocast; see the README's GPU section).
    #[arg(long)]
    pub amp: bool,
}

/// Run `attndet test`.
pub fn run(args: &TestArgs, device: &DeviceArg) -> anyhow::Result<()> {
    if args.amp {
        return Err(crate::device::amp_refused(device));
    }
    device.check_usable()?;
    let p = prepare(&args.config, &args.cfg_options, None)?;
    device.run(TestJob { args, prepared: &p })
}

struct TestJob<'a> {
    args: &'a TestArgs,
    prepared: &'a crate::train::Prepared,
}

impl crate::device::BackendJob for TestJob<'_> {
    type Output = ();

    fn run<B: attndet_detectors::models::DetBackend>(self, device: &B::Device) -> anyhow::Result<()> {
        run_on::<B>(self.args, self.prepared, device)
    }
}

fn run_on<B: attndet_detectors::models::DetBackend>(
    args: &TestArgs,
    p: &crate::train::Prepared,
    device: &B::Device,
) -> anyhow::Result<()> {
    let model = load_checkpoint_model::<B>(&p.cfg, &args.checkpoint, device)?;
    let val = load_split(&p.cfg, false)?;
    if val.1.records.is_empty() {
        return Err(bad_input(format!(
            "data.val: {} has no image",
            p.cfg.data.val.ann_file
        )));
    }
    let started = std::time::Instant::now();
    let kinds = if args.eval.is_empty() {
        eval_kinds(&model, &p.cfg)
    } else {
        args.eval.clone()
    };
    let (evals, preds) = evaluate_val(&model, &p.cfg, &val, &kinds, device, args.json)?;
    if let Some(dir) = &args.show_dir {
        let files: std::collections::HashMap<u64, &std::path::Path> = val
            .1
            .records
            .iter()
            .map(|r| (r.image_id, r.file.as_path()))
            .collect();
        for (id, d) in &preds {
            save_drawn(files[id], d, &val.1.category_names, args.show_score_thr, dir)?;
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
            "images": val.1.records.len(),
            "detections": detections,
            "seconds": started.elapsed().as_secs_f64(),
        });
        for e in &evals {
            v[e.kind.name()] = serde_json::json!({ "stats": e.stats });
        }
        println!("{v}");
    } else {
        for e in &evals {
            println!(
                "{} evaluation of {} on {} images ({} detections)",
                e.kind,
                args.checkpoint.display(),
                val.1.records.len(),
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
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let name = file
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "image.png".into());
    let out = out_dir.join(name);
    img.save(&out)
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(out)
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
