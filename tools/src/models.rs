//! `attndet models`: the zoo, every backbone name the zoo builds and every detector config under a configs
//! directory, with parameters and FLOPs.
//!
//! The backbone list is generated from each family's building blocks (depths, attention prefixes, widths) and
//! kept only where [`BackboneArch::parse`] accepts the name, so it cannot list a model that does not build.
//! Counting needs shapes only: backbones are built lazily and their weights are never created.

use std::path::{Path, PathBuf};

use attndet_backbones::BackboneArch;
use attndet_backbones::cost::parameter_count;
use attndet_backbones::mnasnet::{MnasAttention, WIDTHS};
use attndet_backbones::mobilenet_v2::MobileAttention;
use attndet_detectors::config::ExperimentConfig;
use attndet_detectors::models::AnyDetector;
use attndet_detectors::models::cost::detector_cost;
use burn::backend::Flex;
use clap::Args;
use serde::Serialize;

use crate::errors::bad_input;

/// Arguments of `attndet models`.
#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  attndet models\n  attndet models --configs configs --json\n  \
attndet models --backbones-only --filter dca_"
)]
pub struct ModelsArgs {
    /// Directory searched (recursively) for detector configs; `_base_` directories are skipped.
    #[arg(long, default_value = "configs")]
    pub configs: PathBuf,
    /// List only the backbones.
    #[arg(long)]
    pub backbones_only: bool,
    /// Keep only names (backbones) and paths (configs) containing this text.
    #[arg(long)]
    pub filter: Option<String>,
    /// Print one JSON object `{"backbones": [...], "detectors": [...]}` instead of the tables.
    #[arg(long)]
    pub json: bool,
}

/// One backbone of the zoo.
#[derive(Debug, Serialize)]
pub struct BackboneRow {
    /// Zoo name (`--model`, `model.backbone.name`).
    pub name: String,
    /// Family: `ResNet`, `MobileNetV2`, `Sda`, `MnasNet`.
    pub family: &'static str,
    /// Parameters with the 1000-class ImageNet head.
    pub params: usize,
    /// MACs at 3x224x224 (ptflops convention, as `attndet flops`).
    pub flops: u64,
}

/// One detector config.
#[derive(Debug, Serialize)]
pub struct DetectorRow {
    /// Path of the config file.
    pub config: PathBuf,
    /// Detector type (`RetinaNet`, `FasterRCNN`, `MaskRCNN`, `RPN`).
    pub detector: String,
    /// Backbone zoo name.
    pub backbone: String,
    /// Object classes.
    pub num_classes: usize,
    /// Parameters of the whole detector (backbone without its classifier).
    pub params: usize,
    /// MACs at the config's test scale (as `attndet flops CONFIG`).
    pub flops: u64,
    /// `[H, W]` the FLOPs are counted at.
    pub input: [usize; 2],
}

/// Every name the zoo accepts, in family order (ResNet family, MobileNetV2, SDA, MnasNet).
pub fn backbone_names() -> Vec<String> {
    let mut names = Vec::new();
    // ResNet: [dca_][attention_]resnet{depth}; ECA with its default kernels (other `_kABCD` are accepted too).
    for dca in ["", "dca_"] {
        for attention in ["", "se_", "eca_", "cbam_", "gc_", "sk_", "ge_"] {
            for depth in [18, 34, 50, 101, 152] {
                names.push(format!("{dca}{attention}resnet{depth}"));
            }
        }
    }
    for a in MobileAttention::ALL {
        names.push(format!("{}mobilenet_v2", a.prefix()));
    }
    for n in [
        "res2net50",
        "pyconvresnet50",
        "sda_resnet86",
        "sda_se_resnet86",
        "sda_res2net86",
        "sda_pyconvresnet86",
    ] {
        names.push(n.into());
    }
    for a in MnasAttention::ALL {
        for (w, _) in WIDTHS {
            names.push(format!("{}mnasnet{w}", a.prefix()));
        }
    }
    // keep what the zoo builds (e.g. DCA-SK needs a bottleneck depth)
    names.retain(|n| BackboneArch::parse(n).is_ok());
    names
}

fn family(arch: &BackboneArch) -> &'static str {
    match arch {
        BackboneArch::ResNet(_) => "ResNet",
        BackboneArch::MobileNetV2(_) => "MobileNetV2",
        BackboneArch::Sda(_) => "Sda",
        BackboneArch::MnasNet(_) => "MnasNet",
    }
}

/// Parameters and 224x224 MACs of every zoo backbone whose name contains `filter`.
pub fn backbone_rows(filter: Option<&str>) -> anyhow::Result<Vec<BackboneRow>> {
    backbone_names()
        .into_iter()
        .filter(|n| filter.is_none_or(|f| n.contains(f)))
        .map(|name| {
            let arch = BackboneArch::parse(&name)?;
            let model = arch.build_lazy::<Flex>(&Default::default())?;
            Ok(BackboneRow {
                family: family(&arch),
                params: parameter_count(&model),
                flops: model.cost(224, 224).flops,
                name,
            })
        })
        .collect()
}

/// The detector configs under `dir` (recursively, `_base_` skipped), sorted by path.
pub fn config_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "_base_") {
                    walk(&path, out)?;
                }
            } else if path.extension().is_some_and(|e| e == "json") {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, &mut out).map_err(|e| bad_input(format!("--configs {}: {e}", dir.display())))?;
    out.sort();
    Ok(out)
}

/// Parameters and test-scale MACs of a config's detector, and the `[H, W]` counted at: the detector is built
/// with random weights (its `init_checkpoint` is not read: only the architecture matters).
pub fn detector_size(
    cfg: &ExperimentConfig,
    source: &Path,
) -> anyhow::Result<(AnyDetector<Flex>, usize, u64, [usize; 2])> {
    let mut model_cfg = cfg.model.clone();
    model_cfg.backbone_mut().init_checkpoint = None;
    let scale = cfg.data.pipeline.img_scale;
    let hw = [scale[0].min(scale[1]), scale[0].max(scale[1])];
    let rois = model_cfg.test_proposals();
    let model = AnyDetector::<Flex>::from_config(&model_cfg, &Default::default())
        .map_err(|e| bad_input(format!("{}: {e}", source.display())))?;
    let parts = detector_cost(&model, hw, rois);
    let params = parts.iter().map(|p| p.params).sum();
    let flops = parts.iter().map(|p| p.flops).sum();
    Ok((model, params, flops, hw))
}

/// One config's row (see [`detector_size`]).
pub fn detector_row(path: &Path) -> anyhow::Result<DetectorRow> {
    let (cfg, _) = crate::config_cmd::load_config(path, &[])?;
    let (model, params, flops, input) = detector_size(&cfg, path)?;
    Ok(DetectorRow {
        config: path.to_path_buf(),
        detector: model.type_name().into(),
        backbone: cfg.model.backbone().name.clone(),
        num_classes: cfg.model.num_classes(),
        params,
        flops,
        input,
    })
}

/// `12.345 M` style, for the tables.
fn short(v: f64) -> String {
    if v >= 1e9 {
        format!("{:.2} G", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.2} M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.2} K", v / 1e3)
    } else {
        format!("{v}")
    }
}

/// Run `attndet models`.
pub fn run(args: &ModelsArgs) -> anyhow::Result<()> {
    let filter = args.filter.as_deref();
    let backbones = backbone_rows(filter)?;
    let detectors = if args.backbones_only {
        Vec::new()
    } else {
        config_files(&args.configs)?
            .into_iter()
            .filter(|p| filter.is_none_or(|f| p.to_string_lossy().contains(f)))
            .map(|p| detector_row(&p))
            .collect::<anyhow::Result<Vec<_>>>()?
    };
    if args.json {
        let doc = serde_json::json!({"backbones": backbones, "detectors": detectors});
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    let w = backbones.iter().map(|b| b.name.len()).max().unwrap_or(8).max(8);
    println!(
        "{} backbones (params with the 1000-class head, MACs at 3x224x224)",
        backbones.len()
    );
    println!(
        "{:<w$}  {:<11}  {:>10}  {:>10}",
        "backbone", "family", "params", "MACs"
    );
    for b in &backbones {
        println!(
            "{:<w$}  {:<11}  {:>10}  {:>10}",
            b.name,
            b.family,
            short(b.params as f64),
            short(b.flops as f64)
        );
    }
    if args.backbones_only {
        return Ok(());
    }
    println!();
    let w = detectors
        .iter()
        .map(|d| d.config.display().to_string().len())
        .max()
        .unwrap_or(6)
        .max(6);
    println!(
        "{} detector configs under {} (MACs at the test scale)",
        detectors.len(),
        args.configs.display()
    );
    println!(
        "{:<w$}  {:<10}  {:<18}  {:>7}  {:>10}  {:>10}  {:>10}",
        "config", "detector", "backbone", "classes", "params", "MACs", "input"
    );
    for d in &detectors {
        println!(
            "{:<w$}  {:<10}  {:<18}  {:>7}  {:>10}  {:>10}  {:>10}",
            d.config.display().to_string(),
            d.detector,
            d.backbone,
            d.num_classes,
            short(d.params as f64),
            short(d.flops as f64),
            format!("{}x{}", d.input[0], d.input[1])
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cover_the_families_and_all_build() {
        let names = backbone_names();
        for n in [
            "resnet50",
            "dca_se_resnet50",
            "eca_resnet101",
            "mobilenet_v2",
            "sda_resnet86",
            "mnasnet1_0",
        ] {
            assert!(names.contains(&n.to_string()), "{n}");
        }
        // DCA-SK has no basic-block version in the reference code
        assert!(!names.contains(&"dca_sk_resnet18".to_string()));
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len(), "no duplicates");
    }

    #[test]
    fn resnet50_has_torchvision_parameter_count() {
        // torchvision.models.resnet50(): sum(p.numel() for p in m.parameters()) = 25_557_032
        let rows = backbone_rows(Some("resnet50")).unwrap();
        let r = rows.iter().find(|r| r.name == "resnet50").unwrap();
        assert_eq!(r.params, 25_557_032);
        assert!(backbone_rows(Some("no-such-model")).unwrap().is_empty());
    }
}
