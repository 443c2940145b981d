//! `attndet benchmark CONFIG CKPT`: inference speed (images/s, ms per image) over the val split, split into
//! stages: data (decode, transforms, batching, upload), backbone, neck, heads and post-processing, as
//! mmdetection's `tools/analysis_tools/benchmark.py` measures the whole (batch 1, warm-up images not counted).
//!
//! The stages are timed by the detectors' own timing marks (`attndet_detectors::models::timing`), which wait
//! for the device at each stage's end while a benchmark records them and do nothing otherwise.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use attndet_detectors::data::EpochLoader;
use attndet_detectors::engine::evaluate::test_loader_options;
use attndet_detectors::engine::log::resident_memory_mb;
use attndet_detectors::engine::trainer::batch_tensor;
use attndet_detectors::models::timing::{Recording, STAGES};
use attndet_detectors::models::{DetBackend, Detector};
use clap::Args;
use serde_json::json;

use crate::device::{BackendJob, DeviceArg, DeviceOpt};
use crate::errors::bad_input;
use crate::train::{Prepared, load_checkpoint_model, load_split, prepare};

/// Arguments of `attndet benchmark`.
#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  attndet benchmark configs/retinanet/retinanet_r18_fpn_synth_demo.json \
work_dirs/demo/latest\n  attndet benchmark CONFIG work_dirs/x/best --images 200 --warmup 10 --json\n  \
attndet benchmark CONFIG CKPT --device cuda:0 --batch-size 4"
)]
pub struct BenchmarkArgs {
    /// The config the model was trained with (JSON).
    pub config: PathBuf,
    /// A checkpoint directory, a work dir (its newest checkpoint), or a whole mmdetection checkpoint (`.pth`).
    pub checkpoint: PathBuf,
    /// Images timed (after the warm-up); fewer when the val split is smaller.
    #[arg(long, default_value_t = 50)]
    pub images: usize,
    /// Images run first and not timed (allocator, caches, autotuning).
    #[arg(long, default_value_t = 5)]
    pub warmup: usize,
    /// Images per forward pass (the reference uses 1).
    #[arg(long, default_value_t = 1)]
    pub batch_size: usize,
    /// Print one JSON object: {"images", "batch_size", "images_per_s", "ms_per_image", "stages": {"data",
    /// "backbone", "neck", "heads", "post_processing": ms per image}, "memory_mb"}.
    #[arg(long)]
    pub json: bool,
    /// Config overrides `a.b.c=VALUE` (e.g. data.val.ann_file=...).
    #[arg(long = "cfg-options", value_name = "KEY=VALUE", num_args = 1..)]
    pub cfg_options: Vec<String>,
    /// The compute device.
    #[command(flatten)]
    pub device: DeviceOpt,
}

/// Run `attndet benchmark`.
pub fn run(args: &BenchmarkArgs, device: &DeviceArg) -> anyhow::Result<()> {
    if args.images == 0 || args.batch_size == 0 {
        return Err(bad_input("--images and --batch-size must be at least 1"));
    }
    let p = prepare(&args.config, &args.cfg_options, None)?;
    device.run(Job { args, p: &p })
}

struct Job<'a> {
    args: &'a BenchmarkArgs,
    p: &'a Prepared,
}

impl BackendJob for Job<'_> {
    type Output = ();

    fn run<B: DetBackend>(self, device: &B::Device) -> anyhow::Result<()> {
        let (args, cfg) = (self.args, &self.p.cfg);
        let model = load_checkpoint_model::<B>(cfg, &args.checkpoint, device)?;
        let (_, val) = load_split(cfg, false)?;
        if val.records.is_empty() {
            return Err(bad_input(format!(
                "data.val: {} has no image",
                cfg.data.val.ann_file
            )));
        }
        let warmup = args.warmup.min(val.records.len().saturating_sub(1));
        let total = (warmup + args.images).min(val.records.len());
        let records: Vec<_> = val.records.iter().take(total).cloned().collect();
        let mut opts = test_loader_options(cfg);
        opts.batch_size = args.batch_size;
        let mut done = 0usize;
        let mut timed = 0usize;
        let mut data = Duration::ZERO;
        let mut wall = Duration::ZERO;
        let mut rec: Option<Recording> = None;
        let mut loader = EpochLoader::start(Arc::new(records), &opts, 0, 0);
        loop {
            let t0 = Instant::now();
            let Some(batch) = loader.next() else { break };
            let batch = batch?;
            let n = batch.samples.len();
            let metas: Vec<_> = batch.samples.iter().map(|s| s.meta.clone()).collect();
            let images = batch_tensor::<B>(&batch, device);
            // timing starts with the first batch after the warm-up
            if done >= warmup && rec.is_none() {
                rec = Some(Recording::start());
            }
            let t1 = Instant::now();
            if let Some(r) = &rec {
                r.restart_clock();
            }
            model.predict(images, &metas)?;
            if rec.is_some() {
                data += t1 - t0;
                wall += t0.elapsed();
                timed += n;
            }
            done += n;
        }
        let stages = rec.as_ref().map(|r| r.totals()).unwrap_or_default();
        let timed_f = timed.max(1) as f64;
        let ms = |d: Duration| d.as_secs_f64() * 1e3 / timed_f;
        let ips = if wall > Duration::ZERO {
            timed as f64 / wall.as_secs_f64()
        } else {
            0.0
        };
        let memory = resident_memory_mb();
        if args.json {
            let mut st = serde_json::Map::new();
            st.insert("data".into(), json!(ms(data)));
            for ((_, name), d) in STAGES.iter().zip(stages) {
                st.insert((*name).into(), json!(ms(d)));
            }
            let doc = json!({
                "config": args.config,
                "checkpoint": args.checkpoint,
                "images": timed,
                "warmup": done - timed,
                "batch_size": args.batch_size,
                "images_per_s": ips,
                "ms_per_image": ms(wall),
                "stages": st,
                "memory_mb": memory,
            });
            println!("{doc}");
            return Ok(());
        }
        println!(
            "{} on {} val images (batch {}, {} warm-up images not timed)",
            args.checkpoint.display(),
            timed,
            args.batch_size,
            done - timed
        );
        println!("{:<16} {:>10} {:>7}", "stage", "ms/image", "share");
        let share = |d: Duration| 100.0 * d.as_secs_f64() / wall.as_secs_f64().max(1e-12);
        println!("{:<16} {:>10.2} {:>6.1}%", "data", ms(data), share(data));
        for ((_, name), d) in STAGES.iter().zip(stages) {
            println!("{:<16} {:>10.2} {:>6.1}%", name, ms(d), share(d));
        }
        println!("{:<16} {:>10.2}", "total", ms(wall));
        println!("{ips:.2} images/s, resident memory {memory:.0} MiB");
        Ok(())
    }
}
