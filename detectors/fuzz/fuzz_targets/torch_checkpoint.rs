//! PyTorch and safetensors checkpoints (`load_any`, the path of `--load-from`, `convert` and the backbone
//! zoo): the first byte picks the file kind (even: `.pth`, read by burn-store's pickle reader; odd:
//! `.safetensors`, PyTorch-named or ours) and the fit (bit 1: a backbone inside a detector checkpoint, the
//! classifier optional), the rest is the file. Each loads strictly into the tiny module, leaving its tensor
//! shapes as they were, or is refused with an error.
#![no_main]

use attndet_backbones::checkpoint::{Fit, load_any};
use attndet_detectors_fuzz::{FuzzBackend as B, Tiny, scratch, shapes};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, file)) = data.split_first() else {
        return;
    };
    let name = if kind % 2 == 0 {
        "input.pth"
    } else {
        "input.safetensors"
    };
    let path = scratch("torch_checkpoint").join(name);
    std::fs::write(&path, file).expect("the input written");
    let fit = if kind & 2 == 0 {
        Fit::STRICT
    } else {
        Fit {
            optional: &["fc."],
            detector: true,
        }
    };
    let device = Default::default();
    let mut model = Tiny::<B>::new(&device);
    let before = shapes(&model);
    if load_any(&mut model, &path, &[], "tiny", &fit).is_ok() {
        assert_eq!(
            shapes(&model),
            before,
            "a strict load changed the module's shapes"
        );
    }
});
