//! Parameters and FLOPs of a detector per part (backbone, neck, heads) for one input size, in the
//! convention of mmdetection's `tools/analysis_tools/get_flops.py` (ptflops-style counting: multiply-accumulates
//! of convolutions (plus bias) and fully connected layers, 2 per element for BatchNorm, 1 per element for ReLU
//! and pooling inputs; RoIAlign, NMS, upsampling and element-wise sums free). The second stage is counted
//! for the test-time number of proposals (`test_cfg.rpn.max_per_img`), as that script does with a full set
//! of proposals. The backbone is counted without its classifier (`avgpool`, `fc`, `classifier`).

use attndet_backbones::cost::{Chw, CostCounter, parameter_count};
use attndet_backbones::{AnyBackbone, Backbone};
use burn::prelude::*;

use super::AnyDetector;
use crate::necks::Fpn;
use crate::roi_heads::AnyRoiHead;

/// Rows of a backbone's cost that belong to its classification head, not to a detector.
const CLASSIFIER_ROWS: [&str; 3] = ["avgpool", "fc", "classifier"];

/// The cost of one part of a detector.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PartCost {
    /// `backbone`, `neck`, `rpn_head`, `roi_head` or `bbox_head`.
    pub part: &'static str,
    /// Parameters.
    pub params: usize,
    /// Multiply-accumulates for one image.
    pub flops: u64,
}

fn backbone_cost<B: Backend>(backbone: &AnyBackbone<B>, [h, w]: [usize; 2]) -> (PartCost, Vec<Chw>) {
    let report = backbone.cost(h, w);
    let (mut params, mut flops) = (0, 0);
    for row in &report.rows {
        let first = row.name.split('.').next().unwrap_or("");
        if !CLASSIFIER_ROWS.contains(&first) {
            params += row.params;
            flops += row.flops;
        }
    }
    // every level of the zoo's backbones is ceil(size / stride) (stride-2 layers with "same" padding)
    let levels = backbone
        .feature_specs()
        .iter()
        .map(|s| [s.channels, h.div_ceil(s.stride), w.div_ceil(s.stride)])
        .collect();
    (
        PartCost {
            part: "backbone",
            params,
            flops,
        },
        levels,
    )
}

fn part(name: &'static str, counter: CostCounter) -> PartCost {
    PartCost {
        part: name,
        params: counter.rows().iter().map(|r| r.params).sum(),
        flops: counter.flops(),
    }
}

fn neck_cost<B: Backend>(neck: &Fpn<B>, inputs: &[Chw]) -> (PartCost, Vec<Chw>) {
    let mut c = CostCounter::new();
    let levels = neck.count_flops(&mut c, inputs);
    (part("neck", c), levels)
}

/// Parameters and MACs of each part of `model` for one `3 x h x w` image; `rois`: proposals the second
/// stage sees.
pub fn detector_cost<B: Backend>(model: &AnyDetector<B>, hw: [usize; 2], rois: usize) -> Vec<PartCost> {
    match model {
        AnyDetector::RetinaNet(m) => {
            let (b, feats) = backbone_cost(&m.backbone, hw);
            let (n, levels) = neck_cost(&m.neck, &feats);
            let mut c = CostCounter::new();
            m.bbox_head.count_flops(&mut c, &levels);
            vec![b, n, part("bbox_head", c)]
        }
        AnyDetector::Rpn(m) => {
            let (b, feats) = backbone_cost(&m.backbone, hw);
            let (n, levels) = neck_cost(&m.neck, &feats);
            let mut c = CostCounter::new();
            m.rpn_head.count_flops(&mut c, &levels);
            vec![b, n, part("rpn_head", c)]
        }
        AnyDetector::TwoStage(m) => {
            let (b, feats) = backbone_cost(&m.backbone, hw);
            let (n, levels) = neck_cost(&m.neck, &feats);
            let mut c = CostCounter::new();
            m.rpn_head.count_flops(&mut c, &levels);
            let rpn = part("rpn_head", c);
            let mut c = CostCounter::new();
            match &m.roi_head {
                AnyRoiHead::Standard(h) => h.bbox_head.count_flops(&mut c, rois),
                // every stage sees the same number of RoIs
                AnyRoiHead::Cascade(h) => h.bbox_head.iter().for_each(|b| b.count_flops(&mut c, rois)),
            }
            let mut roi = part("roi_head", c);
            // parameters counted from the module itself: a layer never called would be missed by the walk
            roi.params = parameter_count(&m.roi_head);
            vec![b, n, rpn, roi]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ExperimentConfig, load_typed};
    use burn::backend::Flex;

    /// mmdetection's Faster R-CNN R50-FPN, counted against independent figures:
    /// - torchvision's `fasterrcnn_resnet50_fpn` has 41,755,286 parameters (`sum(p.numel())`, torchvision
    ///   0.2x) with 91 classes and FrozenBatchNorm (whose affine tensors are buffers). Ours has BatchNorm
    ///   parameters (2 x the 26,560 BN channels of ResNet-50 = 53,120) and 81 classes (fc_cls 10 x 1,025 =
    ///   10,250 and fc_reg 44 x 1,025 = 45,100 fewer): 41,753,056.
    /// - the RPN head by hand: 3x3 conv 256 -> 256 (589,824 + 256), cls 1x1 256 -> 3 (768 + 3), reg 256 -> 12
    ///   (3,072 + 12) = 593,935.
    /// - the RPN's first level by hand at 800 x 1333 (P2 200 x 334 = 66,800 positions): conv 589,824 + bias
    ///   256 + ReLU 256 MACs per position, cls 771, reg 3,084: 66,800 x 594,191.
    #[test]
    fn faster_rcnn_r50_parts_match_independent_counts() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../configs/faster_rcnn/faster_rcnn_r50_fpn_1x_coco.json");
        let (cfg, _): (ExperimentConfig, _) = load_typed(&path, &[]).unwrap();
        let model = AnyDetector::<Flex>::from_config(&cfg.model, &Default::default()).unwrap();
        let parts = detector_cost(&model, [800, 1333], 1000);
        let total: usize = parts.iter().map(|p| p.params).sum();
        // 91 -> 81 classes: fc_cls loses 10 x (1024 + 1) = 10,250, fc_reg (364 -> 320 outputs) 44 x 1025 = 45,100
        assert_eq!(total, 41_755_286 + 53_120 - 10_250 - 45_100);
        let rpn = parts.iter().find(|p| p.part == "rpn_head").unwrap();
        assert_eq!(rpn.params, 593_935);
        let mut c = CostCounter::new();
        let AnyDetector::TwoStage(m) = &model else {
            panic!("a FasterRCNN config builds a TwoStage")
        };
        m.rpn_head.count_flops(&mut c, &[[256, 200, 334]]);
        assert_eq!(c.flops(), 66_800 * (589_824 + 256 + 256 + 771 + 3_084));
        // no proposals: the second stage costs nothing but keeps its parameters
        let none = detector_cost(&model, [800, 1333], 0);
        assert_eq!(none[3].flops, 0);
        assert_eq!(none[3].params, parts[3].params);
    }

    /// Cascade R-CNN R50-FPN: the Faster R-CNN trunk, and three box heads with class-agnostic deltas. By
    /// hand, a stage's head: shared fcs 12,544 x 1,024 + 1,024 = 12,846,080 and 1,024 x 1,024 + 1,024 =
    /// 1,049,600, fc_cls 1,024 x 81 + 81 = 83,025, fc_reg 1,024 x 4 + 4 = 4,100: 13,982,805. The three
    /// stages see the same RoIs, so the RoI head's MACs are three times one stage's.
    #[test]
    fn cascade_rcnn_r50_roi_head_is_three_class_agnostic_stages() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../configs/cascade_rcnn/cascade_rcnn_r50_fpn_1x_coco.json");
        let (cfg, _): (ExperimentConfig, _) = load_typed(&path, &[]).unwrap();
        let model = AnyDetector::<Flex>::from_config(&cfg.model, &Default::default()).unwrap();
        let parts = detector_cost(&model, [800, 1333], 1000);
        let roi = parts.iter().find(|p| p.part == "roi_head").unwrap();
        assert_eq!(roi.params, 3 * 13_982_805);
        let AnyDetector::TwoStage(m) = &model else {
            panic!("a CascadeRCNN config builds a TwoStage")
        };
        let AnyRoiHead::Cascade(h) = &m.roi_head else {
            panic!("a CascadeRCNN config builds the cascade head")
        };
        let mut c = CostCounter::new();
        h.bbox_head[0].count_flops(&mut c, 1000);
        assert_eq!(roi.flops, 3 * c.flops());
        let total: usize = parts.iter().map(|p| p.params).sum();
        // the Faster R-CNN total (see above) less its class-specific head (fc_reg 1,024 x 320 + 320) plus three
        // stages
        let faster = 41_755_286 + 53_120 - 10_250 - 45_100;
        let faster_head = 12_846_080 + 1_049_600 + 83_025 + 328_000;
        assert_eq!(total, faster - faster_head + 3 * 13_982_805);
    }
}
