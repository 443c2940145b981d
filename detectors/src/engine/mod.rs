//! The training engine's parts: learning-rate schedule, gradient processing, checkpoints, logs and the loop.

pub mod checkpoint;
pub mod distributed;
pub mod evaluate;
pub mod grads;
pub mod internode;
pub mod lock;
pub mod log;
pub mod schedule;
pub mod tensorboard;
pub mod trainer;
