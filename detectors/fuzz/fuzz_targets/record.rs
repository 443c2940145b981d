//! Our own checkpoints (`model.mpk`, burn's named MessagePack, read by `engine::checkpoint::load_model` for
//! `--resume`, `test` and `infer`): the first byte picks raw bytes (even) or edits of a valid record of the
//! tiny module (odd: triples `(position lo, position hi, byte)`, position `0xffff` truncating instead), so
//! that mutations reach burn's reader past the format. Each loads with the module's shapes or is refused
//! with an error (the strict shape check runs before burn reads the record).
#![no_main]

use std::sync::OnceLock;

use attndet_detectors::engine::checkpoint::{TrainState, load_model, record_shapes, save_model};
use attndet_detectors_fuzz::{FuzzBackend as B, Tiny, scratch, shapes};
use libfuzzer_sys::fuzz_target;

fn valid_record() -> &'static [u8] {
    static VALID: OnceLock<Vec<u8>> = OnceLock::new();
    VALID.get_or_init(|| {
        let dir = scratch("record").join("valid");
        let state = TrainState {
            epoch: 1,
            global_iter: 1,
            seed: 0,
            base_lr: 0.01,
            best: None,
            config: serde_json::json!({}),
            classes: vec!["a".into()],
        };
        save_model(&dir, &Tiny::<B>::new(&Default::default()), &state).expect("a valid record");
        std::fs::read(dir.join("model.mpk")).expect("the valid record")
    })
}

fn edited(edits: &[u8]) -> Vec<u8> {
    let mut bytes = valid_record().to_vec();
    for e in edits.chunks_exact(3) {
        let pos = usize::from(u16::from_le_bytes([e[0], e[1]]));
        if pos == 0xffff {
            bytes.truncate(bytes.len() * usize::from(e[2]) / 256);
        } else if !bytes.is_empty() {
            let n = bytes.len();
            bytes[pos % n] = e[2];
        }
    }
    bytes
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let bytes = if mode % 2 == 0 {
        rest.to_vec()
    } else {
        edited(rest)
    };
    let dir = scratch("record").join("input");
    std::fs::create_dir_all(&dir).expect("the input dir");
    let file = dir.join("model.mpk");
    std::fs::write(&file, &bytes).expect("the input written");
    let _ = record_shapes(&file);
    let device = Default::default();
    let fresh = Tiny::<B>::new(&device);
    let want = shapes(&fresh);
    if let Ok(model) = load_model::<B, _>(&dir, fresh, &device) {
        assert_eq!(shapes(&model), want, "a loaded record has other shapes");
    }
});
