//! Helpers shared by several test files of this crate (each file is its own crate and uses what it needs).
#![allow(dead_code)]

pub mod stages;
