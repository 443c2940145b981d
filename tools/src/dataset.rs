//! `attndet dataset`: look at COCO datasets (stats, browse) and generate the synthetic shapes dataset.

use std::path::{Path, PathBuf};

use anyhow::Context;
use attndet_coco::draw::{Instance, draw_instances, palette};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

use crate::errors::bad_input;
use attndet_coco::CocoDataset;
use attndet_coco::synth::{self, SynthConfig};
use clap::Subcommand;
use serde_json::json;

/// `attndet dataset ...`
#[derive(Subcommand, Debug)]
pub enum DatasetCommand {
    /// Counts per category, object sizes (small < 32², medium < 96², large), crowd regions, images without
    /// annotations.
    #[command(
        after_help = "Examples:\n  attndet dataset stats data/coco/annotations/instances_val2017.json\n  \
attndet dataset stats data/shapes/annotations/instances_train.json --json"
    )]
    Stats {
        /// A COCO instances JSON file.
        #[arg(value_name = "ANN.json")]
        ann: PathBuf,
        /// Print one JSON object instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Generate the synthetic "shapes" instance-segmentation dataset (PNG images + COCO JSON), deterministic
    /// for a seed: OUT/{train,val}/*.png and OUT/annotations/instances_{train,val}.json.
    #[command(after_help = "Examples:\n  attndet dataset synth --out data/shapes\n  \
attndet dataset synth --out data/tiny --train 24 --val 8 --size 96 --seed 3")]
    Synth {
        /// Output directory (created).
        #[arg(long)]
        out: PathBuf,
        /// Number of training images.
        #[arg(long, default_value_t = 200)]
        train: usize,
        /// Number of validation images.
        #[arg(long, default_value_t = 50)]
        val: usize,
        /// Image side in pixels (square images, at least 32).
        #[arg(long, default_value_t = 128)]
        size: u32,
        /// Random seed; the same seed gives byte-identical files.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Most objects per image.
        #[arg(long, default_value_t = 4)]
        max_objects: usize,
    },
    /// Draw the annotations (masks, boxes, category labels) on the images and write them as PNGs to look at.
    #[command(
        after_help = "Examples:\n  attndet dataset browse data/shapes/annotations/instances_val.json --images \
data/shapes/val --out browse/\n  \
attndet dataset browse instances_val2017.json --images data/coco/val2017 --out browse/ --limit 20"
    )]
    Browse {
        /// A COCO instances JSON file.
        #[arg(value_name = "ANN.json")]
        ann: PathBuf,
        /// Directory holding the images (`file_name` is relative to it).
        #[arg(long)]
        images: PathBuf,
        /// Output directory (created); one `<file stem>.png` per image.
        #[arg(long)]
        out: PathBuf,
        /// Draw at most this many images (in file order).
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
}

/// Run `attndet dataset ...`.
pub fn run(cmd: &DatasetCommand) -> anyhow::Result<()> {
    match cmd {
        DatasetCommand::Stats { ann, json } => stats(ann, *json),
        DatasetCommand::Browse {
            ann,
            images,
            out,
            limit,
        } => browse(ann, images, out, *limit),
        DatasetCommand::Synth {
            out,
            train,
            val,
            size,
            seed,
            max_objects,
        } => {
            let cfg = SynthConfig {
                train: *train,
                val: *val,
                size: *size,
                seed: *seed,
                max_objects: *max_objects,
            };
            let t0 = std::time::Instant::now();
            let res = synth::generate(out, &cfg).context("generating the synthetic dataset")?;
            println!(
                "wrote {} train + {} val images ({}x{}, {} objects, {} categories) in {:.2}s",
                train,
                val,
                size,
                size,
                res.objects,
                synth::SHAPES.len(),
                t0.elapsed().as_secs_f64()
            );
            println!("  {}  ({})", res.train_ann.display(), res.train_images.display());
            println!("  {}  ({})", res.val_ann.display(), res.val_images.display());
            Ok(())
        }
    }
}

/// Size bucket of an object by its `area` field: COCO's small (< 32²), medium (< 96²) and large.
fn size_bucket(area: f64) -> usize {
    if area < 1024.0 {
        0
    } else if area < 9216.0 {
        1
    } else {
        2
    }
}

fn stats(path: &PathBuf, as_json: bool) -> anyhow::Result<()> {
    let ds = CocoDataset::load(path)?;
    let cats = ds.categories();
    let mut per_cat = vec![[0usize; 5]; cats.len()]; // instances, small, medium, large, crowd
    let mut images_per_cat = vec![std::collections::HashSet::new(); cats.len()];
    let mut sizes = [0usize; 3];
    let mut crowd = 0;
    for a in ds.annotations() {
        let k = ds.category_index(a.category_id).unwrap_or(0);
        let b = size_bucket(a.area);
        per_cat[k][0] += 1;
        per_cat[k][1 + b] += 1;
        sizes[b] += 1;
        if a.iscrowd != 0 {
            per_cat[k][4] += 1;
            crowd += 1;
        }
        images_per_cat[k].insert(a.image_id);
    }
    let empty_images = ds
        .images()
        .iter()
        .filter(|i| ds.annotations_of(i.id).next().is_none())
        .count();
    if as_json {
        let rows: Vec<_> = cats
            .iter()
            .enumerate()
            .map(|(k, c)| {
                json!({"id": c.id, "name": c.name, "instances": per_cat[k][0], "images": images_per_cat[k].len(),
                       "small": per_cat[k][1], "medium": per_cat[k][2], "large": per_cat[k][3], "crowd": per_cat[k][4]})
            })
            .collect();
        let out = json!({
            "file": path.display().to_string(), "images": ds.images().len(), "annotations": ds.annotations().len(),
            "categories": cats.len(), "crowd": crowd, "images_without_annotations": empty_images,
            "sizes": {"small": sizes[0], "medium": sizes[1], "large": sizes[2]}, "per_category": rows,
        });
        println!("{}", serde_json::to_string(&out)?);
        return Ok(());
    }
    println!("{}", path.display());
    println!(
        "{} images ({} without annotations), {} annotations ({} crowd), {} categories",
        ds.images().len(),
        empty_images,
        ds.annotations().len(),
        crowd,
        cats.len()
    );
    let total = ds.annotations().len().max(1) as f64;
    println!("\nobject sizes (by area):");
    for (label, n) in ["small  (< 32²)", "medium (< 96²)", "large"].iter().zip(sizes) {
        let bar = "#".repeat((n as f64 / total * 40.0).round() as usize);
        println!("  {label:<15} {n:>8} {:>5.1}%  {bar}", n as f64 / total * 100.0);
    }
    let w = cats.iter().map(|c| c.name.len()).max().unwrap_or(8).max(8);
    println!(
        "\n{:>6}  {:<w$}  {:>9}  {:>7}  {:>7}  {:>7}  {:>7}  {:>6}",
        "id", "category", "instances", "images", "small", "medium", "large", "crowd"
    );
    for (k, c) in cats.iter().enumerate() {
        let r = per_cat[k];
        println!(
            "{:>6}  {:<w$}  {:>9}  {:>7}  {:>7}  {:>7}  {:>7}  {:>6}",
            c.id,
            c.name,
            r[0],
            images_per_cat[k].len(),
            r[1],
            r[2],
            r[3],
            r[4]
        );
    }
    Ok(())
}

fn browse(ann: &Path, images: &Path, out: &Path, limit: usize) -> anyhow::Result<()> {
    let ds = CocoDataset::load(ann)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let todo: Vec<_> = ds.images().iter().take(limit).collect();
    let bar = ProgressBar::new(todo.len() as u64).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} images {msg}").expect("valid template"),
    );
    todo.par_iter().try_for_each(|img| -> anyhow::Result<()> {
        let path = images.join(&img.file_name);
        let mut canvas = image::open(&path)
            .map_err(|e| {
                bad_input(format!(
                    "{}: cannot read image {} of {}: {e}",
                    path.display(),
                    img.id,
                    ann.display()
                ))
            })?
            .to_rgb8();
        let mut instances = Vec::new();
        for a in ds.annotations_of(img.id) {
            let k = ds.category_index(a.category_id).unwrap_or(0);
            let name = ds.category(a.category_id).map(|c| c.name.as_str()).unwrap_or("?");
            let mask = if a.segmentation.is_some() {
                Some(ds.ann_to_rle(a)?)
            } else {
                None
            };
            let crowd = if a.iscrowd != 0 { " (crowd)" } else { "" };
            instances.push(Instance {
                bbox: [a.bbox[0], a.bbox[1], a.bbox[2], a.bbox[3]],
                mask,
                label: format!("{name}{crowd}"),
                colour: palette(k),
            });
        }
        draw_instances(&mut canvas, &instances);
        let stem = Path::new(&img.file_name)
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("image");
        let target = out.join(format!("{stem}.png"));
        canvas
            .save(&target)
            .with_context(|| format!("writing {}", target.display()))?;
        bar.inc(1);
        Ok(())
    })?;
    bar.finish_and_clear();
    println!("drew {} images into {}", todo.len(), out.display());
    Ok(())
}
