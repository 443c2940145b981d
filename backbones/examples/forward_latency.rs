//! Forward latency of a ResNet-family backbone on the CPU (Flex), for `bench/backbones/bench.py`.
//!
//! ```text
//! RAYON_NUM_THREADS=2 cargo run --release -p attndet-backbones --example forward_latency -- \
//!     resnet50 224 224 [iters] [warmup]
//! ```
//! Prints one JSON line: the median wall time of the whole classification forward (ms) and of its parts (stem,
//! layer1..4, head), timed separately (Flex executes eagerly, so part timings add up to the whole).

use std::time::Instant;

use attndet_backbones::fused::conv_bn_act;
use attndet_backbones::layers::{Activation, gap, stem_max_pool};
use attndet_backbones::resnet::attention::Carry;
use attndet_backbones::{AnyBackbone, BackboneArch, Classifier, NormMode};
use burn::backend::Flex;
use burn::prelude::*;

type B = Flex;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let name = args.first().map(String::as_str).unwrap_or("resnet50");
    let h: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(224);
    let w: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(224);
    let iters: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(5);
    let warmup: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(1);
    let device = Default::default();
    let arch = BackboneArch::parse(name).unwrap_or_else(|e| panic!("{e}"));
    let model = arch.build::<B>(&device).unwrap_or_else(|e| panic!("{e}"));
    let AnyBackbone::ResNet(net) = &model else {
        panic!("{name} is not a ResNet")
    };
    let x = Tensor::<B, 4>::random(
        [1, 3, h, w],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        &device,
    );

    let mut total = Vec::new();
    let mut parts = vec![Vec::new(); 6];
    for i in 0..warmup + iters {
        let t0 = Instant::now();
        let logits = model.forward_logits(x.clone());
        let _ = logits.into_data();
        let whole = t0.elapsed().as_secs_f64() * 1e3;

        // The same forward, part by part.
        let mode = NormMode::Auto;
        let mut times = Vec::new();
        let t = Instant::now();
        let y = conv_bn_act(&net.conv1, Some(&net.bn1), x.clone(), mode, Activation::Relu);
        let mut y = stem_max_pool(y);
        let _ = y.clone().into_data();
        times.push(t.elapsed().as_secs_f64() * 1e3);
        let mut carry = Carry::empty();
        for stage in [&net.layer1, &net.layer2, &net.layer3, &net.layer4] {
            let t = Instant::now();
            for block in stage {
                (y, carry) = block.forward(y, carry, mode);
            }
            let _ = y.clone().into_data();
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let t = Instant::now();
        let [n, c, _, _] = y.dims();
        let _ = net.fc.forward(gap(y).reshape([n, c])).into_data();
        times.push(t.elapsed().as_secs_f64() * 1e3);
        if i >= warmup {
            total.push(whole);
            for (p, t) in parts.iter_mut().zip(times) {
                p.push(t);
            }
        }
    }
    let parts: Vec<f64> = parts.into_iter().map(median).collect();
    println!(
        "{}",
        serde_json::json!({
            "model": name, "input": [1, 3, h, w], "threads": rayon_threads(), "iters": iters,
            "ms": median(total),
            "parts_ms": {"stem": parts[0], "layer1": parts[1], "layer2": parts[2], "layer3": parts[3],
                         "layer4": parts[4], "head": parts[5]},
        })
    );
}

fn rayon_threads() -> Option<usize> {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
}
