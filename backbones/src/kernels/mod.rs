//! Multi-threaded f32 CPU kernels for inference on plain row-major buffers (no burn types).
//!
//! [`crate::fused`] routes the backbones' convolutions, pooling and residual sums here when the backend is
//! `Flex` (burn's CPU backend without autodiff); on that backend these layers otherwise dominate the forward
//! pass for reasons of layout and threading, not arithmetic (each module says which). Every kernel is tested
//! against its definition written out as plain loops.

pub mod conv;
pub mod conv_grad;
pub mod eltwise;
pub mod pool;
