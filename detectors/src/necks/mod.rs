//! Necks: multi-level feature fusion between a backbone and the heads.

mod fpn;

pub use fpn::{ExtraConvs, Fpn, FpnConfig};
