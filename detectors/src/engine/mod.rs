//! The training engine's parts: learning-rate schedule, gradient processing, checkpoints, logs and the loop.

pub mod checkpoint;
pub mod grads;
pub mod schedule;
