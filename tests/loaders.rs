//! The training loader for text and spectrogram batches: prefetched batches are bit for bit
//! the synchronous ones, from any sampler position and across epochs, and equal to what the
//! data sets give directly. (Images: `tests/image_data.rs`.)

use std::path::PathBuf;
use std::sync::Arc;

use pretext::modality::audio::augment::{AudioAugment, AugmentSettings, Masks};
use pretext::modality::audio::clips::{AudioFeatures, ClipKind, ClipSet, SpectrogramBatches};
use pretext::modality::audio::MelConfig;
use pretext::modality::text::pack::{BlockBatches, TokenBlocks};
use pretext::train::loader::{BatchShape, Loader, MakeBatch};
use pretext::train::sampler::{Position, Sampler};

/// 8 batches of `batch` from a sampler part-way through an epoch of `len`: prefetched and
/// synchronous batches are equal and follow the loop's own copy of the sampler.
fn assert_modes_agree<M: MakeBatch + Clone>(maker: M, len: usize, batch: usize) -> Vec<M::Batch>
where
    M::Batch: PartialEq + std::fmt::Debug,
{
    let sampler = Sampler::new(len, 4, Position { epoch: 1, index: 3 });
    let shape = BatchShape::whole(batch);
    let mut sync = Loader::synchronous(maker.clone(), sampler.clone(), shape);
    let mut pre = Loader::prefetching(maker.clone(), sampler.clone(), shape, 2).unwrap();
    let mut own = sampler;
    let mut out = Vec::new();
    for _ in 0..8 {
        let (a, b) = (sync.next_batch().unwrap(), pre.next_batch().unwrap());
        assert_eq!(a, b);
        let (indices, epochs) = own.next_batch_with_epochs(batch);
        assert_eq!((&a.indices, &a.epochs), (&indices, &epochs));
        assert_eq!(a.data, maker.make(&indices, &epochs).unwrap());
        out.push(a.data);
    }
    assert!(own.position().epoch >= 3, "{:?}", own.position());
    out
}

#[test]
fn prefetched_token_blocks_equal_synchronous_ones() {
    let (n, t) = (11, 6);
    let blocks = TokenBlocks {
        seq_len: t,
        ids: (0..(n * t) as u32).collect(),
        attention_mask: (0..n * t).map(|i| u8::from(i % t < 5)).collect(),
        word_ids: (0..n * t)
            .map(|i| (i % 3 != 0).then_some(i as u32))
            .collect(),
    };
    let batches = assert_modes_agree(BlockBatches(Arc::new(blocks.clone())), n, 4);
    // A batch holds the sampled blocks, unmasked, in the sampler's order.
    let first = &batches[0];
    assert_eq!(first.len(), 4);
    for r in 0..4 {
        let id = first.get(r).ids[0] as usize / t;
        assert_eq!(first.get(r).ids, blocks.get(id).ids);
        assert_eq!(first.get(r).word_ids, blocks.get(id).word_ids);
    }
}

#[test]
fn prefetched_spectrograms_equal_synchronous_ones_and_the_clip_batches() {
    let (n, mels, frames) = (9, 4, 5);
    let clips = ClipSet::from_values(
        ClipKind::Spectrogram {
            n_mels: mels,
            frames,
        },
        (0..n * mels * frames)
            .map(|i| (i as f32 * 0.37).sin())
            .collect(),
        None,
        (0..n).map(|i| PathBuf::from(format!("{i}.wav"))).collect(),
    )
    .unwrap();
    let features = AudioFeatures {
        mel: MelConfig {
            n_mels: mels,
            ..MelConfig::default()
        },
        frames,
        mean: 0.1,
        std: 0.7,
        trim_db: None,
    };
    let clips = Arc::new(clips);
    let maker = SpectrogramBatches {
        clips: clips.clone(),
        features: features.clone(),
        augment: None,
    };
    let batches = assert_modes_agree(maker.clone(), n, 4);
    // Augmented: the same batches whichever loader makes them, and not the plain ones.
    let settings = AugmentSettings {
        gain_db: 6.0,
        time_masks: Some(Masks { count: 1, width: 4 }),
        ..Default::default()
    };
    let augment = AudioAugment::new(&settings, &features.mel, 3).unwrap();
    let augmented = assert_modes_agree(SpectrogramBatches { augment, ..maker }, n, 4);
    assert_ne!(augmented, batches);
    // The same values as the batches of the evaluation path.
    let dev = candle_core::Device::Cpu;
    let sampler_first = Sampler::new(n, 4, Position { epoch: 1, index: 3 }).next_batch(4);
    let direct = clips.batch(&sampler_first, &features, &dev).unwrap();
    let (values, frames) = batches[0].clone();
    assert_eq!(frames, None, "clips of unknown length count as full");
    assert_eq!(direct.frames.as_ref().map(|t| t.dims().to_vec()), None);
    let loaded = features.values_to_tensor(values, 4, &dev).unwrap();
    let bits = |t: &candle_core::Tensor| -> Vec<u32> {
        let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        v.iter().map(|x| x.to_bits()).collect()
    };
    assert_eq!(bits(&direct.values), bits(&loaded));
}
