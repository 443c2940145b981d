//! The JSON-lines training log (`log.jsonl` in the work dir): one object per logged iteration
//! (`"mode": "train"`), per evaluation (`"mode": "val"`) and per message the user was shown (`"mode": "event"`:
//! saved, resumed, best, removed checkpoints, the scaled learning rate, what the training split left out), so
//! that a run's log holds everything its terminal showed. `attndet plot` reads it back.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One logged training iteration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IterRecord {
    /// Epoch (1-based, as printed).
    pub epoch: usize,
    /// Iteration inside the epoch (1-based).
    pub iter: usize,
    /// Iterations per epoch.
    pub iters_per_epoch: usize,
    /// Iterations done over the whole run.
    pub global_iter: usize,
    /// Learning rate of this step.
    pub lr: f64,
    /// Total loss.
    pub loss: f64,
    /// The loss terms.
    pub terms: Vec<(String, f64)>,
    /// Global gradient norm before clipping (when clipping is on).
    pub grad_norm: Option<f64>,
    /// Seconds of this iteration (data + compute).
    pub time: f64,
    /// Seconds spent waiting for data.
    pub data_time: f64,
    /// Resident memory of the process, MiB.
    pub memory_mb: f64,
}

/// One evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    /// Epoch evaluated (1-based).
    pub epoch: usize,
    /// The stats of each evaluated kind: for bbox and segm the 12 COCO summary stats (AP, AP50, AP75, APs, APm,
    /// APl, AR1, AR10, AR100, ARs, ARm, ARl), for proposals AR@100, AR@300, AR@1000, AR_s/m/l@1000.
    pub stats: crate::engine::evaluate::EvalResults,
}

/// A message the user was shown during the run, at the point of the run it was shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Epochs finished when it happened.
    pub epoch: usize,
    /// Iterations done over the whole run when it happened.
    pub global_iter: usize,
    /// The message, as printed.
    pub message: String,
}

/// A line of the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum LogLine {
    /// Training iteration.
    Train(IterRecord),
    /// Validation.
    Val(EvalRecord),
    /// A message shown to the user.
    Event(EventRecord),
}

/// Appends lines to `log.jsonl`, and their scalars to a TensorBoard event file when one is open.
#[derive(Debug)]
pub struct JsonLog {
    path: PathBuf,
    tensorboard: Option<super::tensorboard::EventWriter>,
}

impl JsonLog {
    /// The log of `work_dir`.
    pub fn new(work_dir: &Path) -> Self {
        Self {
            path: work_dir.join("log.jsonl"),
            tensorboard: None,
        }
    }

    /// The log of `work_dir`, its scalars also written to a new event file in `WORK_DIR/tf_logs/`.
    pub fn with_tensorboard(work_dir: &Path) -> std::io::Result<Self> {
        let writer = super::tensorboard::EventWriter::create(&work_dir.join("tf_logs"))?;
        Ok(Self {
            path: work_dir.join("log.jsonl"),
            tensorboard: Some(writer),
        })
    }

    /// The TensorBoard event file, when one is written.
    pub fn tensorboard_file(&self) -> Option<&Path> {
        self.tensorboard.as_ref().map(|w| w.path())
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append one line.
    pub fn append(&self, line: &LogLine) -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        writeln!(
            f,
            "{}",
            serde_json::to_string(line).map_err(std::io::Error::other)?
        )?;
        if let Some(tb) = &self.tensorboard {
            match line {
                LogLine::Train(r) => tb.train(r),
                LogLine::Val(r) => tb.val(r),
                LogLine::Event(_) => Ok(()),
            }
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", tb.path().display())))?;
        }
        Ok(())
    }
}

/// Read a log; malformed lines are skipped (a crash can cut the last line).
pub fn read_log(path: &Path) -> std::io::Result<Vec<LogLine>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// Resident memory of this process in MiB (Linux `/proc/self/status`; 0 elsewhere).
pub fn resident_memory_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_bad_lines_are_skipped() {
        let dir = std::env::temp_dir().join(format!("attndet-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = JsonLog::new(&dir);
        let _ = std::fs::remove_file(log.path());
        let it = IterRecord {
            epoch: 1,
            iter: 2,
            iters_per_epoch: 10,
            global_iter: 2,
            lr: 0.01,
            loss: 1.5,
            terms: vec![("loss_cls".into(), 1.0), ("loss_bbox".into(), 0.5)],
            grad_norm: Some(3.0),
            time: 0.1,
            data_time: 0.01,
            memory_mb: 100.0,
        };
        log.append(&LogLine::Train(it.clone())).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(log.path())
            .unwrap()
            .write_all(b"{\"mode\": \"tr")
            .unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(log.path())
            .unwrap()
            .write_all(b"\n")
            .unwrap();
        log.append(&LogLine::Val(EvalRecord {
            epoch: 1,
            stats: [(crate::models::EvalKind::Bbox, vec![0.5; 12])].into(),
        }))
        .unwrap();
        let event = LogLine::Event(EventRecord {
            epoch: 1,
            global_iter: 10,
            message: "saved /tmp/x/epoch_1".into(),
        });
        log.append(&event).unwrap();
        let lines = read_log(log.path()).unwrap();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], LogLine::Train(it));
        assert_eq!(lines[2], event);
        let text = std::fs::read_to_string(log.path()).unwrap();
        assert!(
            text.lines().last().unwrap().contains(r#""mode":"event""#),
            "{text}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn empty_log_reads_as_no_lines() {
        let dir = std::env::temp_dir().join(format!("attndet-log-empty-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("log.jsonl"), "").unwrap();
        assert!(read_log(&dir.join("log.jsonl")).unwrap().is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }
}
