//! `attndet convert`: a reference checkpoint (PyTorch `.pth`/`.pth.tar`, or PyTorch-named safetensors) to our
//! safetensors weights, strictly checked against the architecture.

use std::path::PathBuf;

use anyhow::Context;
use attndet_backbones::BackboneArch;
use burn::backend::Flex;
use clap::Args;

/// Arguments of `attndet convert`.
#[derive(Args, Debug)]
#[command(
    long_about = "Convert released weights into attndet's safetensors format.\n\n\
The input is a PyTorch checkpoint (.pth or .pth.tar: a bare state_dict or a dict holding `state_dict`, keys \
with or without DataParallel's `module.` prefix; torchvision ResNet files load unchanged), a safetensors file \
with PyTorch naming, or one of our own files. Every tensor of the architecture must be present with its shape \
and every tensor of the file must be used: otherwise the missing, unexpected and mis-shaped keys are listed and \
the exit code is 2. The output is written atomically.\n\n\
Example:\n  attndet convert --model dca_se_resnet50 --from dca_se_resnet50.pth.tar --out dca_se_resnet50.safetensors"
)]
pub struct ConvertArgs {
    /// Zoo name of the checkpoint's architecture.
    #[arg(long)]
    pub model: String,
    /// Checkpoint to read.
    #[arg(long = "from", value_name = "FILE.pth")]
    pub from: PathBuf,
    /// safetensors file to write.
    #[arg(long, value_name = "FILE.safetensors")]
    pub out: PathBuf,
}

/// Run `attndet convert`.
pub fn run(args: &ConvertArgs) -> anyhow::Result<()> {
    let arch = BackboneArch::parse(&args.model)?;
    let mut model = arch.build_lazy::<Flex>(&Default::default())?;
    let summary = model.load_weights(&arch, &args.from)?;
    model
        .save_weights(&args.out)
        .with_context(|| format!("converting {}", args.from.display()))?;
    eprintln!(
        "{}: {} tensors from {} written to {}",
        arch.name(),
        summary.applied,
        args.from.display(),
        args.out.display()
    );
    Ok(())
}
