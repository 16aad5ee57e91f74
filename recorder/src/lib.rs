//! Roundtable's recorder: a listener of a room's mix that writes a 16-bit PCM WAV to storage.
//!
//! Each recording runs on its own thread, fed by the mixer through a bounded channel of
//! [`MixFrame`]s, so disk IO never runs on a mixer thread. Frames carry tick numbers; a hole in
//! the numbers (the mixer dropped frames because this recorder fell behind, or the mixer itself
//! skipped ticks) is written as silence and counted as a gap, so the file's duration always
//! matches the time recorded. The file is flushed (header included) every
//! [`FLUSH_EVERY`] frames, so it is a valid, growing WAV while the call runs; when the mixer
//! drops its end of the channel the recorder finalizes, makes the file durable and returns a
//! [`RecordingSummary`].
#![deny(missing_docs)]

use std::sync::mpsc::Receiver;
use std::thread::JoinHandle;

use roundtable_mixer::pool::MixFrame;
use roundtable_storage::{ObjectKey, ObjectWriter, Storage, StorageError};
use thiserror::Error;

/// Frames between flushes (1 s): the most a crash can lose.
pub const FLUSH_EVERY: u64 = 50;

/// Why a recording failed.
#[derive(Debug, Error)]
pub enum RecordError {
    /// Storage refused the object or its IO failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Writing WAV data failed.
    #[error("WAV write failed for {key}: {source}")]
    Wav {
        /// The object.
        key: String,
        /// The cause.
        source: hound::Error,
    },
    /// The recorder thread could not start or panicked.
    #[error("recorder thread failed")]
    Thread,
}

/// What a finished recording holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingSummary {
    /// The object written.
    pub key: ObjectKey,
    /// Frames in the file, silence for gaps included.
    pub frames: u64,
    /// Frames written as silence because they never arrived.
    pub gap_frames: u64,
}

impl RecordingSummary {
    /// The recording's length in milliseconds.
    pub fn duration_ms(&self) -> u64 {
        self.frames * 20
    }
}

/// A running recording; join it after the mixer dropped the sending side.
#[derive(Debug)]
pub struct Recording {
    key: ObjectKey,
    thread: JoinHandle<Result<RecordingSummary, RecordError>>,
}

impl Recording {
    /// Creates the object and starts the writer thread consuming `frames` of `rate` Hz audio
    /// (a mono 16-bit WAV at that rate).
    pub fn start(storage: &dyn Storage, key: ObjectKey, rate: u32, frames: Receiver<MixFrame>) -> Result<Recording, RecordError> {
        let object = storage.create(&key)?;
        let thread_key = key.clone();
        let thread = std::thread::Builder::new()
            .name("recorder".into())
            .spawn(move || write_wav(object, thread_key, rate, frames))
            .map_err(|_| RecordError::Thread)?;
        Ok(Recording { key, thread })
    }

    /// The object being written.
    pub fn key(&self) -> &ObjectKey {
        &self.key
    }

    /// Waits for the writer to finish (the mixer must have dropped its sender).
    pub fn join(self) -> Result<RecordingSummary, RecordError> {
        self.thread.join().map_err(|_| RecordError::Thread)?
    }
}

fn write_wav(
    mut object: Box<dyn ObjectWriter>,
    key: ObjectKey,
    rate: u32,
    frames: Receiver<MixFrame>,
) -> Result<RecordingSummary, RecordError> {
    let wav_error = |source| RecordError::Wav { key: key.to_string(), source };
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::new(&mut object, spec).map_err(wav_error)?;
    writer.flush().map_err(wav_error)?;
    let mut next_tick: Option<u64> = None;
    let (mut written, mut gaps) = (0u64, 0u64);
    // Ends when the mixer drops the sender (recording stopped or room closed).
    while let Ok(frame) = frames.recv() {
        if let Some(expected) = next_tick {
            if frame.tick < expected {
                continue; // Never happens with one mixer thread per room; be safe anyway.
            }
            let missing = frame.tick - expected;
            for _ in 0..missing * u64::from(rate / 50) {
                writer.write_sample(0i16).map_err(wav_error)?;
            }
            gaps += missing;
            written += missing;
        }
        for &s in frame.samples.iter() {
            writer.write_sample(s).map_err(wav_error)?;
        }
        written += 1;
        next_tick = Some(frame.tick + 1);
        if written % FLUSH_EVERY == 0 {
            writer.flush().map_err(wav_error)?;
        }
    }
    writer.finalize().map_err(wav_error)?;
    object.finish()?;
    Ok(RecordingSummary { key, frames: written, gap_frames: gaps })
}

#[cfg(test)]
mod tests {
    use super::*;
    use roundtable_storage::LocalStorage;
    use std::sync::mpsc::sync_channel;

    const FRAME_SAMPLES: usize = 320;

    #[test]
    fn gaps_become_silence_and_the_file_is_valid() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path());
        let key = ObjectKey::new("recordings/r/1/mix.wav").unwrap();
        let (tx, rx) = sync_channel(10);
        let rec = Recording::start(&storage, key.clone(), 16000, rx).unwrap();
        for tick in [100u64, 101, 104] {
            tx.send(MixFrame { tick, samples: vec![1000; FRAME_SAMPLES].into() }).unwrap();
        }
        drop(tx);
        let summary = rec.join().unwrap();
        assert_eq!((summary.frames, summary.gap_frames), (5, 2));
        let reader = hound::WavReader::open(storage.path_of(&key)).unwrap();
        assert_eq!(reader.spec().sample_rate, 16000);
        let samples: Vec<i16> = reader.into_samples().map(Result::unwrap).collect();
        assert_eq!(samples.len(), 5 * FRAME_SAMPLES);
        assert!(samples[..640].iter().all(|&s| s == 1000));
        assert!(samples[640..1280].iter().all(|&s| s == 0));
        assert!(samples[1280..].iter().all(|&s| s == 1000));
    }

    #[test]
    fn file_is_readable_while_recording() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path());
        let key = ObjectKey::new("live.wav").unwrap();
        let (tx, rx) = sync_channel(200);
        let rec = Recording::start(&storage, key.clone(), 16000, rx).unwrap();
        for tick in 0..FLUSH_EVERY {
            tx.send(MixFrame { tick, samples: vec![7; FRAME_SAMPLES].into() }).unwrap();
        }
        let path = storage.path_of(&key);
        let mut len = 0;
        for _ in 0..200 {
            if let Ok(r) = hound::WavReader::open(&path) {
                len = r.len();
                if len > 0 {
                    break;
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(len as usize, FLUSH_EVERY as usize * FRAME_SAMPLES, "header valid mid-recording");
        drop(tx);
        rec.join().unwrap();
    }
}
