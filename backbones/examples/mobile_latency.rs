//! CPU forward latency of zoo backbones (classification forward, batch 1), for `bench/backbones/mobile_latency.py`.
//!
//! `cargo run --example mobile_latency -- --size 224 --iters 10 --warmup 2 mobilenet_v2 sda_resnet86`
//! prints one JSON line per model: `{"model", "size", "iters", "median_ms", "min_ms"}`. Threads: set
//! `RAYON_NUM_THREADS` (burn's Flex backend uses rayon's global pool).

use std::time::Instant;

use attndet_backbones::{BackboneArch, Classifier};
use burn::backend::Flex;
use burn::prelude::*;

type B = Flex;

fn main() {
    let mut size = 224;
    let mut iters = 10;
    let mut warmup = 2;
    let mut models = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut number = |flag: &str| -> usize {
            let value = args
                .next()
                .unwrap_or_else(|| fail(&format!("{flag} needs a value")));
            value
                .parse()
                .unwrap_or_else(|_| fail(&format!("{flag}: not a number: {value}")))
        };
        match arg.as_str() {
            "--size" => size = number("--size"),
            "--iters" => iters = number("--iters").max(1),
            "--warmup" => warmup = number("--warmup"),
            name => models.push(name.to_string()),
        }
    }
    if models.is_empty() {
        fail("usage: mobile_latency [--size N] [--iters N] [--warmup N] MODEL...");
    }
    let device = Default::default();
    for name in models {
        let arch = BackboneArch::parse(&name).unwrap_or_else(|e| fail(&e.to_string()));
        let model = arch.build::<B>(&device).unwrap_or_else(|e| fail(&e.to_string()));
        let x = Tensor::<B, 4>::ones([1, 3, size, size], &device) * 0.5;
        let mut times = Vec::with_capacity(iters);
        for i in 0..warmup + iters {
            let start = Instant::now();
            let logits = model.forward_logits(x.clone());
            // Reading the result back waits for the computation.
            let _ = logits.into_data();
            if i >= warmup {
                times.push(start.elapsed().as_secs_f64() * 1e3);
            }
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        println!(
            "{}",
            serde_json::json!({"model": name, "size": size, "iters": iters, "median_ms": median, "min_ms": times[0]})
        );
    }
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(2);
}
