//! Dense and RoI heads.

pub mod dense;
pub mod retina;
pub mod rpn;
