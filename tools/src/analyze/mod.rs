//! `attndet analyze`: mmdetection's result-analysis tools on a COCO results file: the confusion matrix
//! (`confusion`), the COCO error breakdown (`errors`) and the best and worst images (`results`).

pub mod coco_errors;
pub mod confusion;
pub mod results;

use std::path::{Path, PathBuf};

use attndet_coco::{CocoDataset, Detection, load_results};
use clap::{Args, Subcommand};

use crate::errors::bad_input;

/// Subcommands of `attndet analyze`.
#[derive(Subcommand, Debug)]
pub enum AnalyzeCommand {
    /// Confusion matrix of a results file (rows: ground truth, columns: predictions, plus background): table,
    /// PNG and `--json`.
    Confusion(confusion::ConfusionArgs),
    /// The COCO error breakdown (C75, C50, Loc, Sim, Oth, BG, FN) per category and overall, as stacked
    /// precision-recall figures and a table.
    Errors(coco_errors::ErrorsArgs),
    /// The best and worst images by per-image AP, ground truth drawn beside the predictions.
    Results(results::ResultsArgs),
}

/// Run `attndet analyze ...`.
pub fn run(cmd: &AnalyzeCommand) -> anyhow::Result<()> {
    match cmd {
        AnalyzeCommand::Confusion(args) => confusion::run(args),
        AnalyzeCommand::Errors(args) => coco_errors::run(args),
        AnalyzeCommand::Results(args) => results::run(args),
    }
}

/// Where the ground truth comes from: a config's val split, or `--ann` instead.
#[derive(Args, Debug)]
pub struct GroundTruthArgs {
    /// The config the results were produced with, or the checkpoint (a checkpoint directory or a work dir)
    /// whose recorded config it is: its val split (`data.data_root` + `data.val.ann_file`) is the ground truth
    /// and its categories the class names.
    #[arg(value_name = "CONFIG|CKPT")]
    pub config: PathBuf,
    /// The detections: a COCO results file (`attndet test --out`), a JSON list of {image_id, category_id,
    /// bbox: [x, y, w, h], score} (and `segmentation` for segm).
    pub results: PathBuf,
    /// Use this COCO annotation file as the ground truth instead of the config's val split.
    #[arg(long, value_name = "GT.json")]
    pub ann: Option<PathBuf>,
    /// Config overrides `a.b.c=VALUE` (e.g. data.val.ann_file=...).
    #[arg(long = "cfg-options", value_name = "KEY=VALUE", num_args = 1..)]
    pub cfg_options: Vec<String>,
}

impl GroundTruthArgs {
    /// The ground-truth annotation file.
    pub fn ann_file(&self) -> anyhow::Result<PathBuf> {
        if let Some(ann) = &self.ann {
            return Ok(ann.clone());
        }
        let cfg = crate::ckpt::config_of(&self.config, &self.cfg_options)?.cfg;
        Ok(Path::new(&cfg.data.data_root).join(&cfg.data.val.ann_file))
    }

    /// The ground truth and the detections (pycocotools' `loadRes` rules).
    pub fn load(&self) -> anyhow::Result<(CocoDataset, Vec<Detection>)> {
        let ann = self.ann_file()?;
        let gt = CocoDataset::load(&ann).map_err(|e| bad_input(format!("ground truth: {e}")))?;
        let dets = load_results(&self.results, &gt)?;
        Ok((gt, dets))
    }
}
