//! Optional wall-clock timing of inference per stage (backbone, neck, heads, post-processing), for
//! `attndet benchmark`. The detectors call [`mark`] at the end of each stage; while no [`Recording`] is
//! active on the thread it does nothing, so the models are not slowed down nor changed. While recording,
//! `mark` first waits for the device's queued work ([`Backend::sync`]), so each stage is charged for its own
//! kernels even on asynchronous backends.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use burn::prelude::Backend;

/// A stage of inference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Backbone features.
    Backbone = 0,
    /// The neck (FPN).
    Neck = 1,
    /// Dense heads (RetinaNet head, RPN head) and the RoI head.
    Heads = 2,
    /// Decoding, score filtering, NMS, mapping back to the image (and proposal selection).
    PostProcess = 3,
}

/// The stages in order, with their names.
pub const STAGES: [(Stage, &str); 4] = [
    (Stage::Backbone, "backbone"),
    (Stage::Neck, "neck"),
    (Stage::Heads, "heads"),
    (Stage::PostProcess, "post_processing"),
];

struct Recorder {
    last: Instant,
    totals: [Duration; 4],
}

thread_local! {
    static RECORDER: RefCell<Option<Recorder>> = const { RefCell::new(None) };
}

/// Timing of the stages run on this thread while it lives (one at a time; a new one restarts the totals).
pub struct Recording(());

impl Recording {
    /// Start timing on this thread.
    pub fn start() -> Self {
        RECORDER.with(|r| {
            *r.borrow_mut() = Some(Recorder {
                last: Instant::now(),
                totals: [Duration::ZERO; 4],
            })
        });
        Recording(())
    }

    /// Restart the clock of the current stage (call right before a forward pass, after loading data).
    pub fn restart_clock(&self) {
        RECORDER.with(|r| {
            if let Some(rec) = r.borrow_mut().as_mut() {
                rec.last = Instant::now();
            }
        });
    }

    /// Time spent so far in each stage, in [`STAGES`] order.
    pub fn totals(&self) -> [Duration; 4] {
        RECORDER.with(|r| r.borrow().as_ref().map(|rec| rec.totals).unwrap_or_default())
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        RECORDER.with(|r| *r.borrow_mut() = None);
    }
}

/// The end of `stage`: charge it the time since the previous mark (nothing unless recording).
pub fn mark<B: Backend>(stage: Stage, device: &B::Device) {
    let active = RECORDER.with(|r| r.borrow().is_some());
    if !active {
        return;
    }
    // a failed sync leaves the time in the next stage; timing must never fail inference
    let _ = B::sync(device);
    RECORDER.with(|r| {
        if let Some(rec) = r.borrow_mut().as_mut() {
            let now = Instant::now();
            rec.totals[stage as usize] += now - rec.last;
            rec.last = now;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    #[test]
    fn marks_count_only_while_recording() {
        let device = Default::default();
        mark::<Flex>(Stage::Neck, &device);
        let rec = Recording::start();
        std::thread::sleep(Duration::from_millis(20));
        mark::<Flex>(Stage::Backbone, &device);
        mark::<Flex>(Stage::Heads, &device);
        let t = rec.totals();
        assert!(t[0] >= Duration::from_millis(20), "{t:?}");
        assert!(t[2] < Duration::from_millis(20), "{t:?}");
        assert_eq!(t[1], Duration::ZERO);
        drop(rec);
        mark::<Flex>(Stage::Neck, &device);
        assert_eq!(Recording::start().totals(), [Duration::ZERO; 4]);
    }
}
