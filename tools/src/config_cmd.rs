//! `attndet config show CONFIG`: print the resolved config (bases merged, overrides applied, schema checked).

use std::path::PathBuf;

use attndet_detectors::config::{ExperimentConfig, load_typed, validate_experiment};
use clap::{Args, Subcommand};

use crate::errors::bad_input;

/// Subcommands of `attndet config`.
#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Print CONFIG fully resolved: `_base_` files merged, `--cfg-options` applied, every field type-checked.
    #[command(
        after_help = "Examples:\n  attndet config show configs/retinanet/retinanet_dca-se-r50_fpn_2x_coco.json\n  \
attndet config show configs/retinanet/retinanet_r50_fpn_1x_coco.json --cfg-options optimizer.lr=0.005 \
lr_config.step=8,11"
    )]
    Show(ShowArgs),
}

/// Arguments of `attndet config show`.
#[derive(Args, Debug)]
pub struct ShowArgs {
    /// The config file (JSON), e.g. configs/retinanet/retinanet_r50_fpn_1x_coco.json.
    pub config: PathBuf,
    /// Overrides `a.b.c=VALUE` (VALUE parsed as JSON when it is JSON, `8,11` as a list).
    #[arg(long = "cfg-options", value_name = "KEY=VALUE", num_args = 1..)]
    pub cfg_options: Vec<String>,
}

/// Load a config with overrides and range-check its values; any problem is bad input (exit code 2) naming the
/// file and JSON path.
pub fn load_config(
    path: &std::path::Path,
    overrides: &[String],
) -> anyhow::Result<(ExperimentConfig, serde_json::Value)> {
    let (cfg, resolved): (ExperimentConfig, _) =
        load_typed(path, overrides).map_err(|e| bad_input(e.to_string()))?;
    validate_experiment(&cfg, &path.display().to_string()).map_err(|e| bad_input(e.to_string()))?;
    Ok((cfg, resolved))
}

/// Run `attndet config ...`.
pub fn run(cmd: &ConfigCommand) -> anyhow::Result<()> {
    match cmd {
        ConfigCommand::Show(args) => {
            let (_, resolved) = load_config(&args.config, &args.cfg_options)?;
            println!("{}", serde_json::to_string_pretty(&resolved)?);
            Ok(())
        }
    }
}
