//! Dense and RoI heads.

pub mod retina;
