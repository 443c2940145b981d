//! What the attention learned, for `attndet classify --explain`: SDA's per-stage depth-attention weights
//! (averaged over channels) and DCA's connection weights with the previous block's contribution
//! `beta / (alpha + beta)` (DCANet's Fig. 5).

use burn::prelude::*;
use serde_json::{Value, json};

use crate::AnyBackbone;

/// The attention report of `model` on the input `x`, or `None` when the model has neither SDA nor DCA.
///
/// # Shapes
/// - `x`: `[N, 3, H, W]` (SDA weights are averaged over the batch and the channels)
pub fn explain<B: Backend>(model: &AnyBackbone<B>, x: Tensor<B, 4>) -> Option<Value> {
    let connections = match model {
        AnyBackbone::Sda(net) => {
            let (_, weights) = net.forward_explained(x);
            if weights.is_empty() {
                // A plain baseline (res2net50, pyconvresnet50): no depth attention.
                return None;
            }
            let stages: Vec<Vec<f32>> = weights
                .into_iter()
                .map(|w| {
                    let [_, k, _] = w.dims();
                    w.mean_dim(2)
                        .mean_dim(0)
                        .reshape([k])
                        .into_data()
                        .to_vec()
                        .unwrap_or_default()
                })
                .collect();
            return Some(json!({"depth_attention": stages}));
        }
        AnyBackbone::MobileNetV2(net) => net.dca_connections(),
        AnyBackbone::MnasNet(net) => net.dca_connections(),
        _ => return None,
    };
    // The first DCA block has no predecessor: its connection weights exist but are never used.
    let rows: Vec<Value> = connections
        .into_iter()
        .enumerate()
        .skip(1)
        .filter_map(|(i, c)| {
            c.map(|(a, b)| json!({"block": i, "alpha": a, "beta": b, "beta_ratio": b / (a + b)}))
        })
        .collect();
    (!rows.is_empty()).then(|| json!({ "dca_connections": rows }))
}
