//! TensorBoard event files (`log_config.tensorboard = true`): the scalars of `log.jsonl` (losses, lr, gradient
//! norm, times, memory, every evaluation figure) in `WORK_DIR/tf_logs/events.out.tfevents.<seconds>.<host>`,
//! where `tensorboard --logdir WORK_DIR/tf_logs` reads them, as with mmdetection's TensorBoard logger hook.
//!
//! The format is small and stable, so it is written here rather than through a crate (the Rust TensorBoard
//! writers on crates.io are unmaintained and pull in a protobuf toolchain): a TFRecord file, each record
//! `u64 length | u32 masked CRC-32C of the length | data | u32 masked CRC-32C of the data` (little endian), each
//! data a serialized `tensorflow.Event` protobuf. The first event carries `file_version = "brain.Event:2"`;
//! every other carries one `Summary.Value { tag, simple_value }`. Fields used (numbers from TensorFlow's
//! `event.proto` and `summary.proto`): `Event.wall_time = 1` (double), `Event.step = 2` (int64),
//! `Event.file_version = 3` (string), `Event.summary = 5`; `Summary.value = 1`; `Value.tag = 1` (string),
//! `Value.simple_value = 2` (float).

use std::cell::Cell;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::evaluate::PROPOSAL_STAT_NAMES;
use super::log::{EvalRecord, IterRecord};
use crate::models::EvalKind;

/// CRC-32C (Castagnoli; reflected polynomial 0x82F63B78), bytewise with a table built at compile time.
pub fn crc32c(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 == 1 {
                    (c >> 1) ^ 0x82F6_3B78
                } else {
                    c >> 1
                };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    !data
        .iter()
        .fold(!0u32, |c, &b| TABLE[((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8))
}

/// TFRecord's masked CRC: the CRC rotated right by 15 bits plus a constant (so that a CRC of CRCs is not
/// trivially zero).
fn masked_crc(data: &[u8]) -> u32 {
    let c = crc32c(data);
    c.rotate_right(15).wrapping_add(0xA282_EAD8)
}

/// One TFRecord around `data`.
pub fn tfrecord(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
    out
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7F) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A length-delimited protobuf field (wire type 2).
fn bytes_field(field: u64, data: &[u8], out: &mut Vec<u8>) {
    varint(field << 3 | 2, out);
    varint(data.len() as u64, out);
    out.extend_from_slice(data);
}

/// The head of an `Event`: `wall_time` (fixed64) and `step` (varint).
fn event_head(wall_time: f64, step: u64) -> Vec<u8> {
    let mut e = vec![1 << 3 | 1];
    e.extend_from_slice(&wall_time.to_le_bytes());
    varint(2 << 3, &mut e);
    varint(step, &mut e);
    e
}

/// The `Event` that opens a file.
pub fn file_version_event(wall_time: f64) -> Vec<u8> {
    let mut e = event_head(wall_time, 0);
    bytes_field(3, b"brain.Event:2", &mut e);
    e
}

/// An `Event` with one scalar `Summary.Value`.
pub fn scalar_event(wall_time: f64, step: u64, tag: &str, value: f32) -> Vec<u8> {
    let mut v = Vec::new();
    bytes_field(1, tag.as_bytes(), &mut v);
    varint(2 << 3 | 5, &mut v); // fixed32
    v.extend_from_slice(&value.to_le_bytes());
    let mut summary = Vec::new();
    bytes_field(1, &v, &mut summary);
    let mut e = event_head(wall_time, step);
    bytes_field(5, &summary, &mut e);
    e
}

/// The tags and values of one training record: `train/loss`, each term, `train/lr`, `train/grad_norm`,
/// `train/time`, `train/data_time`, `train/memory_mb`.
pub fn train_scalars(r: &IterRecord) -> Vec<(String, f64)> {
    let mut s = vec![("train/loss".to_string(), r.loss)];
    s.extend(r.terms.iter().map(|(n, v)| (format!("train/{n}"), *v)));
    s.push(("train/lr".into(), r.lr));
    if let Some(g) = r.grad_norm {
        s.push(("train/grad_norm".into(), g));
    }
    s.push(("train/time".into(), r.time));
    s.push(("train/data_time".into(), r.data_time));
    s.push(("train/memory_mb".into(), r.memory_mb));
    s
}

/// Names of the 12 COCO stats, in order, as the tags say them (`bbox_mAP`, `segm_mAP_50`, ...).
const COCO_STAT_NAMES: [&str; 12] = [
    "mAP", "mAP_50", "mAP_75", "mAP_s", "mAP_m", "mAP_l", "AR@1", "AR@10", "AR@100", "AR_s@100", "AR_m@100",
    "AR_l@100",
];

/// The tags and values of one evaluation: `val/bbox_mAP`, `val/segm_mAP_50`, `val/proposal_AR@1000`, ...
pub fn val_scalars(r: &EvalRecord) -> Vec<(String, f64)> {
    r.stats
        .iter()
        .flat_map(|(kind, stats)| {
            let names: &[&str] = match kind {
                EvalKind::Proposal => &PROPOSAL_STAT_NAMES,
                _ => &COCO_STAT_NAMES,
            };
            names
                .iter()
                .zip(stats)
                .map(move |(n, v)| (format!("val/{}_{n}", kind.name()), *v))
        })
        .collect()
}

/// Appends scalar events to one event file of a run.
#[derive(Debug)]
pub struct EventWriter {
    path: PathBuf,
    /// The newest training step written: evaluations are placed there, as mmdetection places them.
    last_step: Cell<u64>,
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl EventWriter {
    /// A new event file in `dir` (created), opened with its `file_version` event. Each run (a resumed one
    /// too) writes its own file; TensorBoard reads all files of a directory as one run.
    pub fn create(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let wall = now();
        let host = std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty() && !h.contains('/'))
            .unwrap_or_else(|| "localhost".into());
        let path = dir.join(format!(
            "events.out.tfevents.{}.{host}.{}",
            wall as u64,
            std::process::id()
        ));
        let w = Self {
            path,
            last_step: Cell::new(0),
        };
        w.append(&[file_version_event(wall)])?;
        Ok(w)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn append(&self, events: &[Vec<u8>]) -> std::io::Result<()> {
        let bytes: Vec<u8> = events.iter().flat_map(|e| tfrecord(e)).collect();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        f.write_all(&bytes)
    }

    fn scalars(&self, step: u64, scalars: &[(String, f64)]) -> std::io::Result<()> {
        let wall = now();
        let events: Vec<Vec<u8>> = scalars
            .iter()
            .filter(|(_, v)| v.is_finite())
            .map(|(tag, v)| scalar_event(wall, step, tag, *v as f32))
            .collect();
        self.append(&events)
    }

    /// A training record's scalars at its global iteration.
    pub fn train(&self, r: &IterRecord) -> std::io::Result<()> {
        self.last_step.set(r.global_iter as u64);
        self.scalars(r.global_iter as u64, &train_scalars(r))
    }

    /// An evaluation's figures at the newest training step.
    pub fn val(&self, r: &EvalRecord) -> std::io::Result<()> {
        self.scalars(self.last_step.get(), &val_scalars(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The check value of CRC-32C (RFC 3720, B.4: the bytes "123456789" give 0xE3069283) and iSCSI's
    /// 32 zero bytes (0x8A9136AA, RFC 3720 B.4).
    #[test]
    fn crc32c_check_values() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[]), 0);
    }

    /// A scalar event by hand: wall time 1.0 (tag 0x09 + 00 00 00 00 00 00 F0 3F), step 3 (0x10 0x03), summary
    /// (0x2A, 11 bytes) holding one value (0x0A, 9 bytes): tag "ab" (0x0A 0x02 'a' 'b'), simple value 0.5
    /// (0x15 + 00 00 00 3F).
    #[test]
    fn scalar_event_bytes_by_hand() {
        let e = scalar_event(1.0, 3, "ab", 0.5);
        let expected: Vec<u8> = [
            &[0x09, 0, 0, 0, 0, 0, 0, 0xF0, 0x3F][..],
            &[0x10, 0x03],
            &[0x2A, 11, 0x0A, 9, 0x0A, 2, b'a', b'b', 0x15, 0, 0, 0, 0x3F],
        ]
        .concat();
        assert_eq!(e, expected);
        // a step above 127 takes two varint bytes: 300 = 0b10_0101100 -> AC 02
        assert_eq!(&scalar_event(1.0, 300, "ab", 0.5)[9..12], &[0x10, 0xAC, 0x02]);
        let v = file_version_event(0.0);
        assert_eq!(&v[11..], b"\x1a\x0dbrain.Event:2");
    }

    /// A record: the length and its masked CRC, the data and its masked CRC; the masking by its definition
    /// (`((crc >> 15) | (crc << 17)) + 0xa282ead8`) on the CRC of the length bytes.
    #[test]
    fn tfrecord_framing() {
        let r = tfrecord(b"xyz");
        assert_eq!(r.len(), 8 + 4 + 3 + 4);
        assert_eq!(&r[..8], &3u64.to_le_bytes());
        let c = crc32c(&3u64.to_le_bytes());
        // the definition as TFRecord writes it, to check the code's `rotate_right`
        #[allow(clippy::manual_rotate)]
        let masked = ((c >> 15) | (c << 17)).wrapping_add(0xa282_ead8);
        assert_eq!(&r[8..12], &masked.to_le_bytes());
        assert_eq!(&r[12..15], b"xyz");
        // an empty record still has both checksums
        assert_eq!(tfrecord(&[]).len(), 16);
    }

    #[test]
    fn tags_of_train_and_val_records() {
        let r = IterRecord {
            epoch: 1,
            iter: 1,
            iters_per_epoch: 1,
            global_iter: 7,
            lr: 0.01,
            loss: 2.0,
            terms: vec![("loss_cls".into(), 1.5), ("loss_bbox".into(), 0.5)],
            grad_norm: None,
            time: 1.0,
            data_time: 0.1,
            memory_mb: 10.0,
        };
        let tags: Vec<String> = train_scalars(&r).into_iter().map(|(t, _)| t).collect();
        assert_eq!(
            tags,
            [
                "train/loss",
                "train/loss_cls",
                "train/loss_bbox",
                "train/lr",
                "train/time",
                "train/data_time",
                "train/memory_mb"
            ]
        );
        let v = EvalRecord {
            epoch: 1,
            stats: [
                (EvalKind::Bbox, (0..12).map(f64::from).collect()),
                (EvalKind::Proposal, vec![0.5; 6]),
            ]
            .into(),
        };
        let s = val_scalars(&v);
        assert_eq!(s.len(), 18);
        assert_eq!(s[1], ("val/bbox_mAP_50".to_string(), 1.0));
        assert_eq!(s[11], ("val/bbox_AR_l@100".to_string(), 11.0));
        assert_eq!(s[14].0, "val/proposal_AR@1000");
        assert!(
            val_scalars(&EvalRecord {
                epoch: 1,
                stats: Default::default()
            })
            .is_empty()
        );
    }

    /// The file: one record per event, the first the file version; evaluations at the last training step.
    #[test]
    fn writer_appends_records() {
        let dir = std::env::temp_dir().join(format!("attndet-tb-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let w = EventWriter::create(&dir).unwrap();
        let r = IterRecord {
            epoch: 1,
            iter: 2,
            iters_per_epoch: 2,
            global_iter: 2,
            lr: 0.01,
            loss: 1.0,
            terms: vec![],
            grad_norm: Some(f64::NAN), // not finite: left out
            time: 1.0,
            data_time: 0.0,
            memory_mb: 1.0,
        };
        w.train(&r).unwrap();
        w.val(&EvalRecord {
            epoch: 1,
            stats: [(EvalKind::Segm, vec![0.25; 12])].into(),
        })
        .unwrap();
        let bytes = std::fs::read(w.path()).unwrap();
        // walk the records: 1 version + 5 train scalars (loss, lr, time, data_time, memory) + 12 val
        let (mut at, mut n, mut steps) = (0usize, 0, Vec::new());
        while at < bytes.len() {
            let len = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
            let data = &bytes[at + 12..at + 12 + len];
            let crc = u32::from_le_bytes(bytes[at + 12 + len..at + 16 + len].try_into().unwrap());
            assert_eq!(crc, masked_crc(data));
            steps.push(data[10]); // the step's varint after the 9 bytes of wall time and the 0x10 tag
            at += 16 + len;
            n += 1;
        }
        assert_eq!(n, 1 + 5 + 12);
        assert_eq!(steps[0], 0);
        assert!(steps[1..].iter().all(|&s| s == 2), "{steps:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
