//! `attndet swap CONFIG --backbones a,b,c`: the backbone-swapping experiment of the seed papers as one
//! command. The same detector config is trained and tested once per backbone ("arm"), each in its own work
//! dir `WORK_DIR/<backbone>`, then one comparison table is written (Markdown, JSON and a bar chart).
//!
//! Per arm, only the backbone changes: `model.backbone.name`, and `model.backbone.init_checkpoint` from
//! `--init` (the neck's input channels follow the backbone's feature levels by construction). Training and
//! testing are `attndet train` and `attndet test`'s own code paths. An arm is finished when its
//! `swap_arm.json` exists and is not run again; an arm interrupted while training resumes from its newest
//! checkpoint. `attndet swap --report WORK_DIR` rebuilds the table from the finished arms.

use std::path::{Path, PathBuf};

use anyhow::Context;
use attndet_detectors::models::{DetBackend, EvalKind};
use clap::Args;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::device::{BackendJob, DeviceArg, DeviceOpt};
use crate::errors::bad_input;
use crate::plot::{Figure, Panel, Series, Style, render, save};
use crate::train::{Prepared, TrainArgs, TrainJob, evaluate_val, load_checkpoint_model, load_split, prepare};

/// Arguments of `attndet swap`.
#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  attndet swap configs/retinanet/retinanet_r50_fpn_1x_coco.json \
--backbones resnet50,se_resnet50,dca_se_resnet50 --init checkpoints/ --work-dir work_dirs/swap\n  \
attndet swap configs/retinanet/retinanet_r18_fpn_synth_demo.json --backbones resnet18,se_resnet18 \
--cfg-options runner.max_epochs=2\n  attndet swap --report work_dirs/swap --json"
)]
pub struct SwapArgs {
    /// The detector config every arm shares.
    #[arg(required_unless_present = "report")]
    pub config: Option<PathBuf>,
    /// Backbones (zoo names), comma separated; the first is the baseline the others are compared with.
    #[arg(long, value_delimiter = ',', required_unless_present = "report")]
    pub backbones: Vec<String>,
    /// Initial backbone weights: a directory holding `<backbone>.pth` (or `.pth.tar`, `.pt`, `.safetensors`)
    /// for every arm, or a comma-separated list of files in `--backbones` order (`none` for random init)
    /// [default: the config's own init_checkpoint for an arm with the config's backbone, random otherwise].
    #[arg(long, value_name = "DIR_OR_LIST")]
    pub init: Option<String>,
    /// Parent of the arms' work dirs [default: work_dirs/<config name>_swap].
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Rebuild the comparison of the finished arms under this directory; trains nothing.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["config", "backbones", "init", "work_dir"])]
    pub report: Option<PathBuf>,
    /// Config overrides applied to every arm `a.b.c=VALUE` (e.g. runner.max_epochs=12).
    #[arg(long = "cfg-options", value_name = "KEY=VALUE", num_args = 1..)]
    pub cfg_options: Vec<String>,
    /// Training output: only the arms' start and end lines, no progress bars.
    #[arg(long)]
    pub quiet: bool,
    /// Print the comparison as one JSON object (the content of comparison.json).
    #[arg(long)]
    pub json: bool,
    /// The compute device of every arm.
    #[command(flatten)]
    pub device: DeviceOpt,
}

/// The outcome of one finished arm (`WORK_DIR/<backbone>/swap_arm.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArmResult {
    /// Backbone zoo name.
    pub backbone: String,
    /// The arm's work dir.
    pub work_dir: PathBuf,
    /// The checkpoint tested.
    pub checkpoint: PathBuf,
    /// Initial backbone weights, if any.
    pub init_checkpoint: Option<String>,
    /// Parameters of the whole detector.
    pub params: usize,
    /// MACs of one image at `input`.
    pub flops: u64,
    /// `[H, W]` the MACs are counted at (the config's test scale).
    pub input: [usize; 2],
    /// The 12 COCO box stats (AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl).
    pub bbox: Vec<f64>,
    /// The 12 COCO mask stats when the detector predicts masks.
    pub segm: Option<Vec<f64>>,
    /// Mean seconds per training iteration.
    pub s_per_iter: f64,
    /// Largest resident memory while training, MiB.
    pub memory_mb: f64,
    /// Training iterations logged.
    pub iterations: usize,
}

/// The plan of a swap (`WORK_DIR/swap.json`): the arms in order, so `--report` keeps the baseline first.
#[derive(Debug, Serialize, Deserialize)]
struct Plan {
    config: PathBuf,
    backbones: Vec<String>,
}

const ARM_FILE: &str = "swap_arm.json";
const PLAN_FILE: &str = "swap.json";

/// Write `value` as pretty JSON to `path` atomically.
fn write_json(path: &Path, value: &impl Serialize) -> anyhow::Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(value)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// The init checkpoint of each arm (`None`: keep the config's for its own backbone, random for others).
fn init_checkpoints(init: Option<&str>, backbones: &[String]) -> anyhow::Result<Vec<Option<Option<String>>>> {
    let Some(init) = init else {
        return Ok(vec![None; backbones.len()]);
    };
    let dir = Path::new(init);
    if dir.is_dir() {
        return backbones
            .iter()
            .map(|b| {
                ["pth", "pth.tar", "pt", "safetensors"]
                    .iter()
                    .map(|ext| dir.join(format!("{b}.{ext}")))
                    .find(|p| p.is_file())
                    .map(|p| Some(Some(p.display().to_string())))
                    .ok_or_else(|| {
                        bad_input(format!(
                            "--init {init}: no {b}.pth, {b}.pth.tar, {b}.pt or {b}.safetensors in the directory"
                        ))
                    })
            })
            .collect();
    }
    let list: Vec<&str> = init.split(',').map(str::trim).collect();
    if list.len() != backbones.len() {
        return Err(bad_input(format!(
            "--init {init}: not a directory, and a list of {} files for {} backbones",
            list.len(),
            backbones.len()
        )));
    }
    list.iter()
        .map(|p| {
            if *p == "none" {
                Ok(Some(None))
            } else if Path::new(p).is_file() {
                Ok(Some(Some(p.to_string())))
            } else {
                Err(bad_input(format!("--init: {p} is not a file")))
            }
        })
        .collect()
}

/// Mean s/iter, largest memory and count of the training lines of a work dir's `log.jsonl`.
fn training_speed(work_dir: &Path) -> (f64, f64, usize) {
    let text = std::fs::read_to_string(work_dir.join("log.jsonl")).unwrap_or_default();
    let (mut sum, mut mem, mut n) = (0.0, 0.0f64, 0usize);
    for v in text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
    {
        if v["mode"] == "train" {
            sum += v["time"].as_f64().unwrap_or(0.0);
            mem = mem.max(v["memory_mb"].as_f64().unwrap_or(0.0));
            n += 1;
        }
    }
    (if n > 0 { sum / n as f64 } else { 0.0 }, mem, n)
}

/// Testing one arm's newest checkpoint on the val split, as `attndet test` does.
struct TestArm<'a> {
    p: &'a Prepared,
    ckpt: &'a Path,
}

impl BackendJob for TestArm<'_> {
    type Output = (Vec<f64>, Option<Vec<f64>>);

    fn run<B: DetBackend>(self, device: &B::Device) -> anyhow::Result<Self::Output> {
        let model = load_checkpoint_model::<B>(&self.p.cfg, self.ckpt, device)?;
        let val = load_split(&self.p.cfg, false)?;
        if val.1.records.is_empty() {
            return Err(bad_input(format!(
                "data.val: {} has no image",
                self.p.cfg.data.val.ann_file
            )));
        }
        let kinds = crate::train::eval_kinds(&model, &self.p.cfg);
        let (evals, _) = evaluate_val(&model, &self.p.cfg, &val, &kinds, device, true)?;
        let stats = |k: EvalKind| evals.iter().find(|e| e.kind == k).map(|e| e.stats.clone());
        let bbox = stats(EvalKind::Bbox)
            .ok_or_else(|| bad_input("swap compares box AP: the detector evaluates no bbox"))?;
        Ok((bbox, stats(EvalKind::Segm)))
    }
}

/// Train (or resume) and test one arm; returns its result, also written to its `swap_arm.json`.
fn run_arm(
    args: &SwapArgs,
    config: &Path,
    backbone: &str,
    init: Option<Option<String>>,
    arm_dir: &Path,
    device: &DeviceArg,
) -> anyhow::Result<ArmResult> {
    let mut overrides = args.cfg_options.clone();
    overrides.push(format!("model.backbone.name={}", json!(backbone)));
    let base = prepare(config, &args.cfg_options, None)?;
    let own = base.cfg.model.backbone();
    let init = match init {
        Some(i) => i,
        // the config's init weights belong to its own backbone only
        None if own.name == backbone => own.init_checkpoint.clone(),
        None => None,
    };
    overrides.push(format!("model.backbone.init_checkpoint={}", json!(init)));
    let p = prepare(config, &overrides, None)?;
    let resume = attndet_detectors::engine::checkpoint::latest(arm_dir).map(|_| None);
    eprintln!(
        "swap: arm {backbone} in {}{}{}",
        arm_dir.display(),
        match &init {
            Some(i) => format!(", init {i}"),
            None => ", random init".into(),
        },
        if resume.is_some() { ", resuming" } else { "" }
    );
    let train_args = TrainArgs {
        config: config.to_path_buf(),
        work_dir: Some(arm_dir.to_path_buf()),
        resume,
        cfg_options: overrides,
        seed: None,
        auto_scale_lr: false,
        max_iters: None,
        quiet: args.quiet,
        amp: false,
        device: args.device.clone(),
    };
    let outcome = device.run(TrainJob {
        args: &train_args,
        prepared: &p,
    })?;
    let ckpt = outcome
        .last_checkpoint
        .or_else(|| attndet_detectors::engine::checkpoint::latest(arm_dir))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "arm {backbone}: training wrote no checkpoint in {}",
                arm_dir.display()
            )
        })?;
    let (bbox, segm) = device.run(TestArm { p: &p, ckpt: &ckpt })?;
    let (_, params, flops, input) = crate::models::detector_size(&p.cfg, config)?;
    let (s_per_iter, memory_mb, iterations) = training_speed(arm_dir);
    let result = ArmResult {
        backbone: backbone.into(),
        work_dir: arm_dir.to_path_buf(),
        checkpoint: ckpt,
        init_checkpoint: init,
        params,
        flops,
        input,
        bbox,
        segm,
        s_per_iter,
        memory_mb,
        iterations,
    };
    write_json(&arm_dir.join(ARM_FILE), &result)?;
    eprintln!("swap: arm {backbone} done: box AP {:.3}", result.bbox[0]);
    Ok(result)
}

/// The finished arms of a swap directory, in the plan's order (directory order without a plan).
pub fn finished_arms(dir: &Path) -> anyhow::Result<Vec<ArmResult>> {
    let order: Vec<String> = match std::fs::read_to_string(dir.join(PLAN_FILE)) {
        Ok(text) => {
            serde_json::from_str::<Plan>(&text)
                .map_err(|e| bad_input(format!("{}: {e}", dir.join(PLAN_FILE).display())))?
                .backbones
        }
        Err(_) => {
            let mut names: Vec<String> = std::fs::read_dir(dir)
                .map_err(|e| bad_input(format!("--report {}: {e}", dir.display())))?
                .filter_map(|e| e.ok())
                .filter(|e| e.path().join(ARM_FILE).is_file())
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect();
            names.sort();
            names
        }
    };
    let mut arms = Vec::new();
    for name in order {
        let path = dir.join(&name).join(ARM_FILE);
        if let Ok(text) = std::fs::read_to_string(&path) {
            arms.push(
                serde_json::from_str(&text).map_err(|e| bad_input(format!("{}: {e}", path.display())))?,
            );
        }
    }
    if arms.is_empty() {
        return Err(bad_input(format!(
            "{}: no finished arm (no */{ARM_FILE})",
            dir.display()
        )));
    }
    Ok(arms)
}

/// The comparison as JSON: each arm with its named stats and its differences to the first arm.
fn comparison_json(arms: &[ArmResult]) -> serde_json::Value {
    let base = &arms[0];
    let named = |s: &[f64]| {
        let mut m = serde_json::Map::new();
        for (n, v) in attndet_coco::eval::STAT_NAMES.iter().zip(s) {
            m.insert((*n).into(), json!(v));
        }
        m.insert("stats".into(), json!(s));
        serde_json::Value::Object(m)
    };
    let rows: Vec<serde_json::Value> = arms
        .iter()
        .map(|a| {
            json!({
                "backbone": a.backbone,
                "work_dir": a.work_dir,
                "checkpoint": a.checkpoint,
                "init_checkpoint": a.init_checkpoint,
                "params": a.params,
                "flops": a.flops,
                "input": a.input,
                "bbox": named(&a.bbox),
                "segm": a.segm.as_deref().map(named),
                "s_per_iter": a.s_per_iter,
                "memory_mb": a.memory_mb,
                "iterations": a.iterations,
                "delta": {
                    "bbox_AP": a.bbox[0] - base.bbox[0],
                    "segm_AP": match (&a.segm, &base.segm) {
                        (Some(s), Some(b)) => json!(s[0] - b[0]),
                        _ => serde_json::Value::Null,
                    },
                    "params": a.params as i64 - base.params as i64,
                    "flops": a.flops as i64 - base.flops as i64,
                },
            })
        })
        .collect();
    json!({"baseline": base.backbone, "arms": rows})
}

/// Stats are printed like the COCO summary, in points of AP (x100).
fn pts(v: f64) -> String {
    if v < 0.0 {
        "-".into()
    } else {
        format!("{:.1}", v * 100.0)
    }
}

/// The comparison as a Markdown table.
fn comparison_markdown(arms: &[ArmResult]) -> String {
    let base = &arms[0];
    let masks = arms.iter().any(|a| a.segm.is_some());
    let mut out = String::from("| backbone | params (M) | GFLOPs | AP | AP50 | AP75 | APs | APm | APl |");
    if masks {
        out.push_str(" mask AP |");
    }
    out.push_str(" s/iter | memory (MiB) | ΔAP |");
    if masks {
        out.push_str(" Δmask AP |");
    }
    out.push('\n');
    let cols = 12 + if masks { 2 } else { 0 };
    out.push_str(&format!("|{}\n", "---|".repeat(cols)));
    for a in arms {
        let mut row = format!(
            "| {} | {:.2} | {:.2} | {} |",
            a.backbone,
            a.params as f64 / 1e6,
            a.flops as f64 / 1e9,
            a.bbox[..6]
                .iter()
                .map(|v| pts(*v))
                .collect::<Vec<_>>()
                .join(" | ")
        );
        if masks {
            row.push_str(&format!(
                " {} |",
                a.segm.as_ref().map_or("-".into(), |s| pts(s[0]))
            ));
        }
        row.push_str(&format!(
            " {:.3} | {:.0} | {:+.1} |",
            a.s_per_iter,
            a.memory_mb,
            (a.bbox[0] - base.bbox[0]) * 100.0
        ));
        if masks {
            let d = match (&a.segm, &base.segm) {
                (Some(s), Some(b)) => format!("{:+.1}", (s[0] - b[0]) * 100.0),
                _ => "-".into(),
            };
            row.push_str(&format!(" {d} |"));
        }
        out.push_str(&row);
        out.push('\n');
    }
    out
}

/// A bar per arm (an area over `[i - 0.35, i + 0.35]`), named in the legend.
fn bars(
    arms: &[ArmResult],
    value: impl Fn(&ArmResult) -> Option<f64>,
    fmt: impl Fn(f64) -> String,
) -> Vec<Series> {
    arms.iter()
        .enumerate()
        .filter_map(|(i, a)| {
            let v = value(a)?;
            let x = (i + 1) as f64;
            Some(Series {
                name: format!("{}: {} {}", i + 1, a.backbone, fmt(v)),
                colour: attndet_coco::draw::palette(i),
                style: Style::Area,
                points: vec![(x - 0.35, v), (x + 0.35, v)],
            })
        })
        .collect()
}

/// The bar chart: box AP (and mask AP), parameters and s/iter per arm.
fn comparison_figure(arms: &[ArmResult], title: &str) -> Figure {
    let panel = |t: &str, y: &str, series: Vec<Series>| Panel {
        title: t.into(),
        x_label: "arm".into(),
        y_label: y.into(),
        series,
        x_integer: true,
        y_from_zero: true,
        legend_outside: true,
    };
    let mut panels = vec![panel(
        "box AP",
        "AP (x100)",
        bars(arms, |a| Some(a.bbox[0].max(0.0) * 100.0), |v| format!("{v:.1}")),
    )];
    if arms.iter().any(|a| a.segm.is_some()) {
        panels.push(panel(
            "mask AP",
            "AP (x100)",
            bars(
                arms,
                |a| a.segm.as_ref().map(|s| s[0].max(0.0) * 100.0),
                |v| format!("{v:.1}"),
            ),
        ));
    }
    panels.push(panel(
        "parameters",
        "M",
        bars(arms, |a| Some(a.params as f64 / 1e6), |v| format!("{v:.2} M")),
    ));
    panels.push(panel(
        "training speed",
        "s/iter",
        bars(arms, |a| Some(a.s_per_iter), |v| format!("{v:.3} s")),
    ));
    Figure {
        title: title.into(),
        panels,
        cols: 2,
        panel_w: 620,
        panel_h: 340,
    }
}

/// Write comparison.md, comparison.json and comparison.png into `dir` and print the table (or the JSON).
fn report(dir: &Path, arms: &[ArmResult], json_out: bool) -> anyhow::Result<()> {
    let md = comparison_markdown(arms);
    let doc = comparison_json(arms);
    std::fs::write(dir.join("comparison.md"), &md)
        .with_context(|| format!("writing {}", dir.join("comparison.md").display()))?;
    write_json(&dir.join("comparison.json"), &doc)?;
    let (img, _) = render(&comparison_figure(
        arms,
        &format!("backbone swap: {}", dir.display()),
    ));
    save(&img, &dir.join("comparison.png"))?;
    if json_out {
        println!("{doc}");
    } else {
        print!("{md}");
        println!("written: {}/comparison.{{md,json,png}}", dir.display());
    }
    Ok(())
}

/// Run `attndet swap`.
pub fn run(args: &SwapArgs, device: &DeviceArg) -> anyhow::Result<()> {
    if let Some(dir) = &args.report {
        let arms = finished_arms(dir)?;
        return report(dir, &arms, args.json);
    }
    let config = args
        .config
        .as_deref()
        .ok_or_else(|| bad_input("CONFIG is required"))?;
    if args.backbones.is_empty() {
        return Err(bad_input("--backbones: give at least one backbone"));
    }
    for (i, b) in args.backbones.iter().enumerate() {
        attndet_backbones::BackboneArch::parse(b).map_err(|e| bad_input(format!("--backbones: {e}")))?;
        if args.backbones[..i].contains(b) {
            return Err(bad_input(format!("--backbones: {b} is listed twice")));
        }
    }
    let inits = init_checkpoints(args.init.as_deref(), &args.backbones)?;
    // the config must load before any arm starts
    prepare(config, &args.cfg_options, None)?;
    device.check_usable()?;
    let dir = args.work_dir.clone().unwrap_or_else(|| {
        PathBuf::from("work_dirs").join(format!(
            "{}_swap",
            config
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_default()
        ))
    });
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    write_json(
        &dir.join(PLAN_FILE),
        &Plan {
            config: config.to_path_buf(),
            backbones: args.backbones.clone(),
        },
    )?;
    let mut arms = Vec::new();
    for (backbone, init) in args.backbones.iter().zip(inits) {
        let arm_dir = dir.join(backbone);
        let done = arm_dir.join(ARM_FILE);
        if let Ok(text) = std::fs::read_to_string(&done) {
            let arm: ArmResult =
                serde_json::from_str(&text).map_err(|e| bad_input(format!("{}: {e}", done.display())))?;
            eprintln!(
                "swap: arm {backbone} already finished ({}), not run again",
                done.display()
            );
            arms.push(arm);
            continue;
        }
        arms.push(run_arm(args, config, backbone, init, &arm_dir, device)?);
    }
    report(&dir, &arms, args.json)
}
