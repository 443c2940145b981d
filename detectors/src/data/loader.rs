//! Batches from a list of image records: seeded epoch order (optionally grouped by aspect ratio), worker
//! threads that decode and transform, a bounded prefetch queue, and delivery in a fixed order, so that a run
//! is reproducible from `(seed, epoch)` whatever the thread timing.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::transforms::{self, ImageMeta, Sample};
use crate::config::PipelineConfig;
use crate::structures::{GroundTruth, RleMask};

/// One image of a dataset and its annotations in contiguous label space.
#[derive(Debug, Clone, PartialEq)]
pub struct DetRecord {
    /// COCO image id.
    pub image_id: u64,
    /// Image file.
    pub file: PathBuf,
    /// `(width, height)` from the annotation file.
    pub size: (u32, u32),
    /// Boxes `[x1, y1, x2, y2]` in pixels.
    pub boxes: Vec<[f32; 4]>,
    /// 0-based class index of each box.
    pub labels: Vec<usize>,
    /// Crowd regions `[x1, y1, x2, y2]`.
    pub ignore: Vec<[f32; 4]>,
    /// Annotation id of each box (named in errors).
    pub ann_ids: Vec<u64>,
    /// Instance mask of each box as annotated (polygons or RLE), when the dataset has them; rasterized by the
    /// loader's workers only for detectors with a mask branch.
    pub masks: Vec<Option<attndet_coco::Segmentation>>,
}

/// A batch: images stacked and padded, with per-image metadata and annotations.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Pixels, `[N, 3, H, W]` row-major, normalised, zero-padded at the bottom/right.
    pub images: Vec<f32>,
    /// `[N, 3, H, W]`.
    pub shape: [usize; 4],
    /// Per image: metadata, boxes, labels, ignore regions (after the transforms).
    pub samples: Vec<BatchItem>,
}

/// One image of a batch without its pixels.
#[derive(Debug, Clone)]
pub struct BatchItem {
    /// Metadata (sizes, scale, flip).
    pub meta: ImageMeta,
    /// Ground truth in the transformed image.
    pub gt: GroundTruth,
    /// Seed of the model's random choices for this image (see [`Sample::seed`]).
    pub seed: u64,
}

/// An image that cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
#[error("image {file}: {message}")]
pub struct ImageError {
    /// The file.
    pub file: PathBuf,
    /// What went wrong (missing, not decodable).
    pub message: String,
    /// The loader itself failed while preparing this image's batch (a worker panicked or stopped): a bug,
    /// not bad input, and never skipped by `skip_bad_images`.
    pub loader_failure: bool,
}

impl ImageError {
    /// A problem of the image itself (missing, unreadable, inconsistent with its annotation).
    pub fn bad_image(file: &std::path::Path, message: impl Into<String>) -> Self {
        Self {
            file: file.to_path_buf(),
            message: message.into(),
            loader_failure: false,
        }
    }
}

/// How to batch and transform.
#[derive(Debug, Clone)]
pub struct LoaderOptions {
    /// Images per batch.
    pub batch_size: usize,
    /// Worker threads.
    pub num_workers: usize,
    /// Batches kept ready ahead of the consumer.
    pub prefetch: usize,
    /// Shuffle (training) or keep the dataset order (evaluation).
    pub shuffle: bool,
    /// Batch only images of the same orientation (landscape / portrait) together.
    pub group_by_aspect_ratio: bool,
    /// Skip (and count) unreadable images instead of failing.
    pub skip_bad_images: bool,
    /// Flip probability (0 for evaluation).
    pub flip_prob: f64,
    /// Transforms.
    pub pipeline: PipelineConfig,
    /// Seed of the run.
    pub seed: u64,
    /// Rasterize the instance masks into the batch (Mask R-CNN's ground truth).
    pub with_masks: bool,
}

/// A seeded RNG for one purpose of one epoch: the stream depends only on `(seed, epoch, salt)`.
pub fn epoch_rng(seed: u64, epoch: usize, salt: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(epoch as u64 + 1));
    rng.set_stream(salt);
    rng
}

/// The batches of one epoch as lists of record indices.
///
/// Without shuffling: dataset order, chunked. With shuffling: each orientation group (or the whole set) is
/// shuffled and chunked, then the batches are shuffled (mmdetection's group sampler, seeded by the epoch).
pub fn epoch_batches(records: &[DetRecord], opts: &LoaderOptions, epoch: usize) -> Vec<Vec<usize>> {
    let bs = opts.batch_size.max(1);
    let all: Vec<usize> = (0..records.len()).collect();
    if !opts.shuffle {
        return all.chunks(bs).map(<[usize]>::to_vec).collect();
    }
    let mut rng = epoch_rng(opts.seed, epoch, 1);
    let groups: Vec<Vec<usize>> = if opts.group_by_aspect_ratio {
        let (wide, tall): (Vec<usize>, Vec<usize>) = all
            .into_iter()
            .partition(|&i| records[i].size.0 >= records[i].size.1);
        vec![wide, tall]
    } else {
        vec![all]
    };
    let mut batches = Vec::new();
    for mut g in groups {
        g.shuffle(&mut rng);
        batches.extend(g.chunks(bs).map(<[usize]>::to_vec));
    }
    batches.shuffle(&mut rng);
    batches
}

/// Largest image the loader decodes, in pixels (width x height): 100 megapixels. A file declaring more (a
/// decompression bomb, or a corrupt header) is refused before any pixel buffer is allocated.
pub const MAX_IMAGE_PIXELS: u64 = 100_000_000;

/// Decode one image file into RGB; an error names the file. Images over [`MAX_IMAGE_PIXELS`] are refused.
pub fn decode(file: &std::path::Path) -> Result<image::RgbImage, ImageError> {
    decode_with_limit(file, MAX_IMAGE_PIXELS)
}

/// [`decode`] with another pixel limit.
pub fn decode_with_limit(file: &std::path::Path, max_pixels: u64) -> Result<image::RgbImage, ImageError> {
    let bytes = std::fs::read(file).map_err(|e| ImageError::bad_image(file, e.to_string()))?;
    decode_bytes(&bytes, file, max_pixels)
}

/// Decode an image file's bytes into RGB, refusing more than `max_pixels` before decoding; `file` names the
/// image in errors (the fuzz target `image_decode` calls this on arbitrary bytes).
pub fn decode_bytes(
    bytes: &[u8],
    file: &std::path::Path,
    max_pixels: u64,
) -> Result<image::RgbImage, ImageError> {
    let cannot = |e: &dyn std::fmt::Display| ImageError::bad_image(file, format!("cannot decode: {e}"));
    let reader = || {
        image::ImageReader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| cannot(&e))
    };
    // the header alone gives the size: check it before the decoder allocates anything
    let (w, h) = reader()?.into_dimensions().map_err(|e| cannot(&e))?;
    let pixels = u64::from(w) * u64::from(h);
    if pixels > max_pixels {
        return Err(ImageError::bad_image(
            file,
            format!("declares {w}x{h} = {pixels} pixels, more than the {max_pixels} accepted"),
        ));
    }
    let mut reader = reader()?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(w);
    limits.max_image_height = Some(h);
    reader.limits(limits);
    Ok(reader.decode().map_err(|e| cannot(&e))?.to_rgb8())
}

/// Load and transform one record. `flip` decides the horizontal flip.
pub fn load_sample(
    r: &DetRecord,
    pipeline: &PipelineConfig,
    flip: bool,
    with_masks: bool,
) -> Result<Sample, ImageError> {
    let image = decode(&r.file)?;
    let size = image.dimensions();
    if size != r.size {
        // boxes are in the annotated size: training on another size would silently misplace every box
        return Err(ImageError::bad_image(
            &r.file,
            format!(
                "decoded size {}x{} differs from the annotated width x height {}x{}",
                size.0, size.1, r.size.0, r.size.1
            ),
        ));
    }
    let masks = if with_masks {
        rasterize_masks(r, size)?
    } else {
        Vec::new()
    };
    let s = Sample {
        image,
        boxes: r.boxes.clone(),
        labels: r.labels.clone(),
        ignore: r.ignore.clone(),
        masks,
        seed: 0,
        meta: ImageMeta {
            image_id: r.image_id,
            file: r.file.clone(),
            ori_size: size,
            img_size: size,
            scale: (1.0, 1.0),
            flipped: false,
            pad_size: size,
        },
    };
    let s = transforms::resize(s, pipeline.img_scale, pipeline.keep_ratio);
    Ok(if flip { transforms::hflip(s) } else { s })
}

/// The instance masks of a record as `0 / 255` bitmaps of the decoded image's `(width, height)`: polygons
/// rasterized and merged, RLEs decoded, as pycocotools' `annToMask`. An instance without a mask, or one that
/// does not decode or whose RLE size is not the image's, is an error naming the file and the annotation id.
pub fn rasterize_masks(r: &DetRecord, (w, h): (u32, u32)) -> Result<Vec<image::GrayImage>, ImageError> {
    let err = |i: usize, message: String| {
        let id = r
            .ann_ids
            .get(i)
            .map(|id| id.to_string())
            .unwrap_or_else(|| "?".into());
        ImageError::bad_image(&r.file, format!("annotation {id}: {message}"))
    };
    (0..r.boxes.len())
        .map(|i| {
            let seg = r
                .masks
                .get(i)
                .and_then(Option::as_ref)
                .ok_or_else(|| err(i, "has no segmentation, but the detector trains masks".into()))?;
            let rle = seg
                .to_rle(h, w)
                .map_err(|e| err(i, format!("segmentation: {e}")))?;
            if (rle.h, rle.w) != (h, w) {
                return Err(err(
                    i,
                    format!("RLE of size {}x{} (h x w) on an image of {h}x{w}", rle.h, rle.w),
                ));
            }
            let bits = rle
                .decode_row_major()
                .map_err(|e| err(i, format!("segmentation: {e}")))?;
            image::GrayImage::from_raw(
                w,
                h,
                bits.into_iter().map(|b| if b > 0 { 255 } else { 0 }).collect(),
            )
            .ok_or_else(|| err(i, "mask buffer of the wrong size".into()))
        })
        .collect()
}

/// Stack samples into a batch padded to the largest size, rounded up to `pad_size_divisor`.
pub fn collate(samples: Vec<Sample>, pipeline: &PipelineConfig, with_masks: bool) -> Batch {
    collate_padded(samples, pipeline, with_masks, (0, 0))
}

/// [`collate`], padded to at least `(min_h, min_w)` (a replica's share of a global batch is padded as the
/// whole global batch is, so that it sees the same pixels).
pub fn collate_padded(
    samples: Vec<Sample>,
    pipeline: &PipelineConfig,
    with_masks: bool,
    (min_h, min_w): (usize, usize),
) -> Batch {
    let ph = samples
        .iter()
        .map(|s| s.image.height() as usize)
        .max()
        .unwrap_or(0)
        .max(min_h);
    let pw = samples
        .iter()
        .map(|s| s.image.width() as usize)
        .max()
        .unwrap_or(0)
        .max(min_w);
    let (ph, pw) = (
        transforms::round_up(ph, pipeline.pad_size_divisor),
        transforms::round_up(pw, pipeline.pad_size_divisor),
    );
    let per = 3 * ph * pw;
    let mut images = vec![0.0f32; samples.len() * per];
    let mut items = Vec::with_capacity(samples.len());
    for (i, mut s) in samples.into_iter().enumerate() {
        let (w, h) = s.meta.img_size;
        let d = pipeline.pad_size_divisor;
        s.meta.pad_size = (
            transforms::round_up(w as usize, d) as u32,
            transforms::round_up(h as usize, d) as u32,
        );
        transforms::normalize_into(
            &s.image,
            pipeline.mean,
            pipeline.std,
            &mut images[i * per..(i + 1) * per],
            ph,
            pw,
        );
        // masks leave the worker run-length encoded: a batch holds no full-size bitmaps
        let masks = with_masks.then(|| {
            s.masks
                .iter()
                .map(|m| {
                    let bits: Vec<bool> = m.as_raw().iter().map(|&v| v > 127).collect();
                    RleMask::encode(&bits, [m.height() as usize, m.width() as usize])
                })
                .collect()
        });
        items.push(BatchItem {
            meta: s.meta,
            gt: GroundTruth {
                boxes: s.boxes,
                labels: s.labels,
                ignore: s.ignore,
                masks,
            },
            seed: s.seed,
        });
    }
    Batch {
        shape: [items.len(), 3, ph, pw],
        images,
        samples: items,
    }
}

/// One replica's share of every global batch (data-parallel training): the loader's `batch_size` is the
/// global batch, and replica `index` gets its images at positions `index * per_replica ..` of each (fewer, or
/// none, in a short last batch), padded to the size of the whole global batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// The replica (0-based, over all nodes).
    pub index: usize,
    /// Images per replica.
    pub per_replica: usize,
}

impl Shard {
    /// This replica's positions of a global batch.
    pub fn of<'a>(&self, global: &'a [usize]) -> &'a [usize] {
        let start = (self.index * self.per_replica).min(global.len());
        let end = (start + self.per_replica).min(global.len());
        &global[start..end]
    }
}

/// The padded `(height, width)` of a batch of `indices`, from the annotated sizes (which the loader checks
/// against the decoded ones) without decoding anything.
pub fn padded_size(records: &[DetRecord], indices: &[usize], pipeline: &PipelineConfig) -> (usize, usize) {
    let (mut h, mut w) = (0, 0);
    for &i in indices {
        let (rw, rh) = if pipeline.keep_ratio {
            transforms::keep_ratio_size(records[i].size, pipeline.img_scale)
        } else {
            (pipeline.img_scale[0] as u32, pipeline.img_scale[1] as u32)
        };
        h = h.max(rh as usize);
        w = w.max(rw as usize);
    }
    (
        transforms::round_up(h, pipeline.pad_size_divisor),
        transforms::round_up(w, pipeline.pad_size_divisor),
    )
}

/// A batch to load: its record indices and the `(height, width)` to pad to at least.
type PlannedBatch = (Vec<usize>, (usize, usize));

/// The batches of one epoch, produced by worker threads and delivered in order.
pub struct EpochLoader {
    records: Arc<Vec<DetRecord>>,
    batches: Arc<Vec<PlannedBatch>>,
    rx: mpsc::Receiver<(usize, Result<Option<Batch>, ImageError>)>,
    pending: BTreeMap<usize, Result<Option<Batch>, ImageError>>,
    next: usize,
    total: usize,
    consumed: Arc<AtomicUsize>,
    cursor: Arc<AtomicUsize>,
    skipped: Arc<AtomicUsize>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl EpochLoader {
    /// Start the workers for `epoch`. `skip_batches` batches at the start are not produced (resuming inside
    /// an epoch).
    pub fn start(
        records: Arc<Vec<DetRecord>>,
        opts: &LoaderOptions,
        epoch: usize,
        skip_batches: usize,
    ) -> Self {
        Self::start_sharded(records, opts, epoch, skip_batches, None)
    }

    /// [`EpochLoader::start`] for one replica's [`Shard`] of each global batch of `opts.batch_size` images
    /// (`None`: the whole batches). Read a sharded loader with [`EpochLoader::next_slot`], which also
    /// delivers empty shares, so that every replica takes part in every iteration.
    pub fn start_sharded(
        records: Arc<Vec<DetRecord>>,
        opts: &LoaderOptions,
        epoch: usize,
        skip_batches: usize,
        shard: Option<Shard>,
    ) -> Self {
        let global = epoch_batches(&records, opts, epoch);
        // per batch: the indices to load and the size to pad to
        let batches: Vec<PlannedBatch> = match shard {
            None => global.into_iter().map(|b| (b, (0, 0))).collect(),
            Some(s) => global
                .iter()
                .map(|b| (s.of(b).to_vec(), padded_size(&records, b, &opts.pipeline)))
                .collect(),
        };
        let batches = Arc::new(batches);
        let total = batches.len();
        let cursor = Arc::new(AtomicUsize::new(skip_batches.min(total)));
        let consumed = Arc::new(AtomicUsize::new(skip_batches.min(total)));
        let skipped = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = mpsc::channel();
        let ahead = opts.prefetch.max(1) + opts.num_workers.max(1);
        let workers = (0..opts.num_workers.max(1))
            .map(|_| {
                let (records, batches, cursor, consumed, skipped, tx) = (
                    records.clone(),
                    batches.clone(),
                    cursor.clone(),
                    consumed.clone(),
                    skipped.clone(),
                    tx.clone(),
                );
                let opts = opts.clone();
                std::thread::spawn(move || {
                    loop {
                        let b = cursor.fetch_add(1, Ordering::SeqCst);
                        if b >= batches.len() {
                            return;
                        }
                        // bounded prefetch: do not run more than `ahead` batches in front of the consumer
                        while b >= consumed.load(Ordering::SeqCst) + ahead {
                            std::thread::sleep(std::time::Duration::from_millis(2));
                        }
                        // a panic while preparing a batch becomes that batch's error: the epoch must never
                        // end early and silently because a worker died
                        let (indices, pad) = &batches[b];
                        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            make_batch(&records, indices, *pad, &opts, epoch, &skipped)
                        }))
                        .unwrap_or_else(|payload| {
                            Err(loader_failure(
                                &records,
                                indices,
                                format!(
                                    "the loader worker panicked: {}",
                                    attndet_backbones::panics::panic_text(&*payload)
                                ),
                            ))
                        });
                        let failed = result.as_ref().is_err_and(|e| e.loader_failure);
                        if tx.send((b, result)).is_err() || failed {
                            return;
                        }
                    }
                })
            })
            .collect();
        Self {
            records,
            batches,
            rx,
            pending: BTreeMap::new(),
            next: skip_batches.min(total),
            total,
            consumed,
            cursor,
            skipped,
            workers,
        }
    }

    /// Batches in this epoch (including skipped ones at the start).
    pub fn len(&self) -> usize {
        self.total
    }

    /// Whether the epoch has no batches.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Images skipped so far because they could not be read (with `skip_bad_images`).
    pub fn skipped_images(&self) -> usize {
        self.skipped.load(Ordering::SeqCst)
    }
}

/// The error of a batch the loader failed to produce, naming the batch's first image.
fn loader_failure(records: &[DetRecord], indices: &[usize], what: String) -> ImageError {
    ImageError {
        file: indices
            .first()
            .map(|&i| records[i].file.clone())
            .unwrap_or_default(),
        message: format!("{what} (batch of {} images starting here)", indices.len()),
        loader_failure: true,
    }
}

fn make_batch(
    records: &[DetRecord],
    indices: &[usize],
    pad: (usize, usize),
    opts: &LoaderOptions,
    epoch: usize,
    skipped: &AtomicUsize,
) -> Result<Option<Batch>, ImageError> {
    let mut samples = Vec::with_capacity(indices.len());
    for &i in indices {
        // the flip of image i in this epoch depends only on (seed, epoch, i)
        let mut rng = epoch_rng(opts.seed, epoch, 2 + i as u64);
        let flip = opts.flip_prob > 0.0 && rng.random::<f64>() < opts.flip_prob;
        let seed = rng.random::<u64>();
        match load_sample(&records[i], &opts.pipeline, flip, opts.with_masks) {
            Ok(s) => samples.push(Sample { seed, ..s }),
            Err(_) if opts.skip_bad_images => {
                skipped.fetch_add(1, Ordering::SeqCst);
            }
            Err(e) => return Err(e),
        }
    }
    Ok((!samples.is_empty()).then(|| collate_padded(samples, &opts.pipeline, opts.with_masks, pad)))
}

impl EpochLoader {
    /// The next batch of the epoch, `Ok(None)` when none of its images is left (all skipped as unreadable,
    /// or a replica's empty share of a short last batch); `None` at the end of the epoch.
    pub fn next_slot(&mut self) -> Option<Result<Option<Batch>, ImageError>> {
        if self.next >= self.total {
            return None;
        }
        let result = match self.pending.remove(&self.next) {
            Some(r) => r,
            None => loop {
                let Ok((i, r)) = self.rx.recv() else {
                    // every worker is gone and this batch never came: an error, not a short epoch
                    let b = self.next;
                    self.next = self.total;
                    return Some(Err(loader_failure(
                        &self.records,
                        &self.batches[b].0,
                        format!(
                            "the loader workers stopped before batch {} of {} was produced",
                            b + 1,
                            self.total
                        ),
                    )));
                };
                if i == self.next {
                    break r;
                }
                self.pending.insert(i, r);
            },
        };
        self.next += 1;
        self.consumed.store(self.next, Ordering::SeqCst);
        Some(result)
    }
}

impl Iterator for EpochLoader {
    type Item = Result<Batch, ImageError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.next_slot()? {
                Ok(Some(b)) => return Some(Ok(b)),
                Ok(None) => continue, // every image of the batch was skipped
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

impl Drop for EpochLoader {
    fn drop(&mut self) {
        // let blocked workers run out: mark everything consumed, drain, join
        self.cursor.store(usize::MAX / 2, Ordering::SeqCst);
        self.consumed.store(usize::MAX / 2, Ordering::SeqCst);
        while self.rx.try_recv().is_ok() {}
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline() -> PipelineConfig {
        PipelineConfig {
            img_scale: [64, 48],
            keep_ratio: true,
            flip_prob: 0.5,
            mean: [0.0; 3],
            std: [1.0; 3],
            pad_size_divisor: 32,
        }
    }

    fn opts(shuffle: bool, workers: usize) -> LoaderOptions {
        LoaderOptions {
            batch_size: 2,
            num_workers: workers,
            prefetch: 2,
            shuffle,
            group_by_aspect_ratio: true,
            skip_bad_images: false,
            flip_prob: if shuffle { 0.5 } else { 0.0 },
            pipeline: pipeline(),
            seed: 7,
            with_masks: false,
        }
    }

    /// Images of varied sizes and orientations, each with one box whose pixels are white.
    fn dataset(name: &str, n: usize) -> (PathBuf, Vec<DetRecord>) {
        let dir = std::env::temp_dir().join(format!("attndet-loader-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let records = (0..n)
            .map(|i| {
                let (w, h) = if i % 3 == 0 { (40, 60) } else { (60 + i as u32, 40) };
                let b = [5.0 + i as f32, 6.0, 25.0 + i as f32, 30.0];
                let img = image::RgbImage::from_fn(w, h, |x, y| {
                    let inside =
                        (x as f32) >= b[0] && (x as f32) < b[2] && (y as f32) >= b[1] && (y as f32) < b[3];
                    image::Rgb(if inside { [255, 255, 255] } else { [0, 0, 0] })
                });
                let file = dir.join(format!("{i}.png"));
                img.save(&file).unwrap();
                DetRecord {
                    image_id: i as u64,
                    file,
                    size: (w, h),
                    boxes: vec![b],
                    labels: vec![i % 2],
                    ignore: vec![],
                    ann_ids: vec![i as u64],
                    masks: vec![None],
                }
            })
            .collect();
        (dir, records)
    }

    fn ids(batches: &[Batch]) -> Vec<Vec<(u64, bool)>> {
        batches
            .iter()
            .map(|b| {
                b.samples
                    .iter()
                    .map(|s| (s.meta.image_id, s.meta.flipped))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn epochs_are_reproducible_and_independent_of_worker_count() {
        let (dir, records) = dataset("repro", 9);
        let records = Arc::new(records);
        let a: Vec<Batch> = EpochLoader::start(records.clone(), &opts(true, 1), 3, 0)
            .map(Result::unwrap)
            .collect();
        let b: Vec<Batch> = EpochLoader::start(records.clone(), &opts(true, 3), 3, 0)
            .map(Result::unwrap)
            .collect();
        assert_eq!(ids(&a), ids(&b));
        assert!(a.iter().zip(&b).all(|(x, y)| x.images == y.images));
        let other: Vec<Batch> = EpochLoader::start(records.clone(), &opts(true, 2), 4, 0)
            .map(Result::unwrap)
            .collect();
        assert_ne!(ids(&a), ids(&other), "another epoch, another order");
        // every image exactly once; orientation groups never mix
        let mut seen: Vec<u64> = a
            .iter()
            .flat_map(|b| b.samples.iter().map(|s| s.meta.image_id))
            .collect();
        seen.sort();
        assert_eq!(seen, (0..9).collect::<Vec<_>>());
        for batch in &a {
            let tall: Vec<bool> = batch
                .samples
                .iter()
                .map(|s| s.meta.ori_size.1 > s.meta.ori_size.0)
                .collect();
            assert!(tall.iter().all(|&t| t == tall[0]));
        }
        // resuming inside the epoch yields the remaining batches
        let rest: Vec<Batch> = EpochLoader::start(records, &opts(true, 2), 3, 2)
            .map(Result::unwrap)
            .collect();
        assert_eq!(ids(&rest), ids(&a)[2..].to_vec());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn batches_are_padded_to_32_and_boxes_follow_the_pixels() {
        let (dir, records) = dataset("pad", 4);
        for batch in EpochLoader::start(Arc::new(records), &opts(true, 2), 0, 0) {
            let batch = batch.unwrap();
            let [n, c, h, w] = batch.shape;
            assert_eq!((c, h % 32, w % 32), (3, 0, 0));
            for (i, s) in batch.samples.iter().enumerate() {
                let b = s.gt.boxes[0];
                let (cx, cy) = (((b[0] + b[2]) / 2.0) as usize, ((b[1] + b[3]) / 2.0) as usize);
                assert_eq!(
                    batch.images[i * 3 * h * w + cy * w + cx],
                    255.0,
                    "box centre is white"
                );
                let left = (b[0] - 2.0).max(0.0) as usize;
                if b[0] >= 2.0 {
                    assert_eq!(batch.images[i * 3 * h * w + cy * w + left], 0.0);
                }
            }
            assert_eq!(n, batch.samples.len());
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn missing_image_is_an_error_naming_it_or_skipped_and_counted() {
        let (dir, mut records) = dataset("bad", 4);
        std::fs::write(dir.join("corrupt.png"), b"not a png").unwrap();
        records[1].file = dir.join("nope.png");
        records[2].file = dir.join("corrupt.png");
        let records = Arc::new(records);
        let err = EpochLoader::start(records.clone(), &opts(false, 1), 0, 0)
            .find_map(Result::err)
            .unwrap();
        assert!(err.to_string().contains("nope.png"), "{err}");
        let mut o = opts(false, 2);
        o.skip_bad_images = true;
        let mut loader = EpochLoader::start(records, &o, 0, 0);
        let n: usize = loader.by_ref().map(|b| b.unwrap().samples.len()).sum();
        assert_eq!((n, loader.skipped_images()), (2, 2));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_panicking_worker_is_an_error_not_a_short_epoch() {
        // a 0x0 target size makes the resize panic inside the worker
        let (dir, records) = dataset("panic", 4);
        let mut o = opts(false, 2);
        o.pipeline.img_scale = [0, 0];
        o.pipeline.keep_ratio = false;
        o.skip_bad_images = true; // a loader failure is never skipped
        let results: Vec<_> = EpochLoader::start(Arc::new(records), &o, 0, 0).collect();
        let err = results
            .iter()
            .find_map(|r| r.as_ref().err())
            .expect("the epoch must report the failure, not end early");
        assert!(err.loader_failure, "{err}");
        assert!(err.to_string().contains("panicked"), "{err}");
        assert!(err.file.starts_with(&dir), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn workers_that_vanish_are_an_error() {
        let (dir, records) = dataset("vanish", 4);
        let records = Arc::new(records);
        let mut loader = EpochLoader::start(records, &opts(false, 1), 0, 0);
        // simulate lost workers: drop every pending result and make the channel report them gone
        for w in loader.workers.drain(..) {
            w.join().unwrap();
        }
        while loader.rx.try_recv().is_ok() {}
        let err = loader.next().expect("an error").expect_err("an error");
        assert!(
            err.loader_failure && err.to_string().contains("stopped before batch 1 of 2"),
            "{err}"
        );
        assert!(loader.next().is_none());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn an_image_of_another_size_than_annotated_is_an_error_naming_both() {
        let (dir, mut records) = dataset("size", 2);
        records[1].size = (999, 777);
        let err = EpochLoader::start(Arc::new(records), &opts(false, 1), 0, 0)
            .find_map(Result::err)
            .unwrap();
        let msg = err.to_string();
        assert!(!err.loader_failure);
        assert!(msg.contains("1.png") && msg.contains("999x777"), "{msg}");
        let _ = std::fs::remove_dir_all(dir);
    }

    /// CRC-32 (IEEE) of PNG chunks.
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn images_over_the_pixel_limit_are_refused_before_decoding() {
        let (dir, records) = dataset("bomb", 1);
        let err = decode_with_limit(&records[0].file, 100).unwrap_err();
        assert!(err.to_string().contains("more than the 100 accepted"), "{err}");
        assert!(decode(&records[0].file).is_ok());
        // a tiny file whose header declares 12000 x 12000 RGB (432 MB of pixels): refused from the header
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = b"IHDR".to_vec();
        ihdr.extend(12000u32.to_be_bytes());
        ihdr.extend(12000u32.to_be_bytes());
        ihdr.extend([8, 2, 0, 0, 0]);
        png.extend(13u32.to_be_bytes());
        png.extend(&ihdr);
        png.extend(crc32(&ihdr).to_be_bytes());
        // the start of the pixel data (a zlib header): enough for the header to be read, far too little to decode
        let idat = b"IDAT\x78\x9c";
        png.extend(2u32.to_be_bytes());
        png.extend(idat);
        png.extend(crc32(idat).to_be_bytes());
        png.extend(0u32.to_be_bytes());
        png.extend(b"IEND");
        png.extend(crc32(b"IEND").to_be_bytes());
        let bomb = dir.join("bomb.png");
        std::fs::write(&bomb, png).unwrap();
        let err = decode(&bomb).unwrap_err().to_string();
        assert!(
            err.contains("bomb.png") && err.contains("12000x12000 = 144000000 pixels"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn empty_dataset_has_no_batches() {
        let mut loader = EpochLoader::start(Arc::new(Vec::new()), &opts(true, 2), 0, 0);
        assert!(loader.is_empty());
        assert!(loader.next().is_none());
    }
}
