//! One WAV file in the spool, written so that a failed write (a full disk) costs only the
//! frames it carried: frames are buffered for up to a second, written with positioned writes
//! after the last frame known to be on disk, and a failed write is cut back off the file, its
//! frames becoming silence the next time a write succeeds. The header is rewritten with the
//! current sizes at every flush, so the file is a valid WAV at all times.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::wav;

/// A mono 16-bit WAV being written frame by frame.
#[derive(Debug)]
pub(crate) struct Track {
    file: File,
    rate: u32,
    frame_bytes: u64,
    /// Frames on disk after the header.
    on_disk: u64,
    /// Frames written since: they start at `pending_from`; frames between `on_disk` and
    /// `pending_from` were lost to failed writes and are written as silence first.
    pending: Vec<u8>,
    pending_from: u64,
}

/// Frames a failed flush lost, as a span of the track's timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lost {
    /// First frame lost.
    pub from: u64,
    /// Frames lost.
    pub frames: u64,
}

impl Track {
    /// Creates the file (never overwriting) with `frames_before` frames of silence, for a leg
    /// that joins a recording already running.
    pub fn create(path: &Path, rate: u32, frames_before: u64) -> io::Result<Track> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        file.write_all_at(&wav::header(rate, 0), 0)?;
        let mut track = Track {
            file,
            rate,
            frame_bytes: u64::from(rate / 50) * 2,
            on_disk: 0,
            pending: Vec::new(),
            pending_from: 0,
        };
        track.silence(frames_before);
        Ok(track)
    }

    /// Reopens a track of a recording being recovered, with `frames` complete frames kept
    /// (anything after them is cut off).
    pub fn reopen(path: &Path, rate: u32, frames: u64) -> io::Result<Track> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let frame_bytes = u64::from(rate / 50) * 2;
        file.set_len(wav::HEADER_LEN + frames * frame_bytes)?;
        Ok(Track {
            file,
            rate,
            frame_bytes,
            on_disk: frames,
            pending: Vec::new(),
            pending_from: frames,
        })
    }

    /// Complete frames in a track file of `len` bytes.
    pub fn frames_in(len: u64, rate: u32) -> u64 {
        len.saturating_sub(wav::HEADER_LEN) / (u64::from(rate / 50) * 2)
    }

    /// Frames on the track's timeline so far (written, pending or lost).
    pub fn frames(&self) -> u64 {
        self.pending_from + self.pending.len() as u64 / self.frame_bytes
    }

    /// Appends one frame.
    pub fn push(&mut self, samples: &[i16]) {
        debug_assert_eq!(samples.len() as u64 * 2, self.frame_bytes);
        for s in samples {
            self.pending.extend_from_slice(&s.to_le_bytes());
        }
    }

    /// Appends `frames` frames of silence.
    pub fn silence(&mut self, frames: u64) {
        let n = self.pending.len() + (frames * self.frame_bytes) as usize;
        self.pending.resize(n, 0);
    }

    /// Writes what is pending and the header; on failure the pending frames are dropped
    /// (cut off the file again) and returned as lost. Not yet durable: see [`Track::sync`].
    pub fn flush(&mut self) -> Result<(), Lost> {
        let end = self.frames();
        if end == self.on_disk {
            return Ok(());
        }
        let result = self.write_through(end);
        match result {
            Ok(()) => {
                self.on_disk = end;
                self.pending.clear();
                self.pending_from = end;
                Ok(())
            }
            Err(_) => {
                let _ = self
                    .file
                    .set_len(wav::HEADER_LEN + self.on_disk * self.frame_bytes);
                let lost = Lost {
                    from: self.pending_from,
                    frames: end - self.pending_from,
                };
                self.pending.clear();
                self.pending_from = end;
                Err(lost)
            }
        }
    }

    fn write_through(&mut self, end: u64) -> io::Result<()> {
        let mut offset = wav::HEADER_LEN + self.on_disk * self.frame_bytes;
        // Frames lost to an earlier failed write become silence.
        let gap = (self.pending_from - self.on_disk) * self.frame_bytes;
        if gap > 0 {
            let zeros = vec![0u8; gap.min(1 << 20) as usize];
            let mut left = gap;
            while left > 0 {
                let n = left.min(zeros.len() as u64);
                self.file.write_all_at(&zeros[..n as usize], offset)?;
                offset += n;
                left -= n;
            }
        }
        self.file.write_all_at(&self.pending, offset)?;
        self.file
            .write_all_at(&wav::header(self.rate, end * self.frame_bytes), 0)
    }

    /// Makes what was flushed durable.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Pads with silence to `frames`, flushes and syncs: the track is complete.
    pub fn finish(&mut self, frames: u64) -> Result<(), Lost> {
        let now = self.frames();
        if frames > now {
            self.silence(frames - now);
        }
        self.flush()?;
        self.sync().map_err(|_| Lost {
            from: frames,
            frames: 0,
        })
    }

    /// Bytes of the file as the timeline stands (header included).
    pub fn len(&self) -> u64 {
        wav::HEADER_LEN + self.frames() * self.frame_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(path: &Path) -> Vec<i16> {
        hound::WavReader::open(path)
            .unwrap()
            .into_samples()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn late_track_starts_with_silence_and_stays_valid_while_growing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("legs/7.wav");
        let mut t = Track::create(&path, 8000, 2).unwrap();
        t.push(&[5; 160]);
        t.flush().unwrap();
        let s = samples(&path);
        assert_eq!(s.len(), 480);
        assert!(s[..320].iter().all(|&x| x == 0) && s[320..].iter().all(|&x| x == 5));
        t.push(&[6; 160]);
        t.finish(5).unwrap();
        assert_eq!(samples(&path).len(), 5 * 160);
        assert!(Track::create(&path, 8000, 0).is_err(), "never overwrites");
    }

    #[test]
    fn reopen_cuts_a_torn_frame() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mix.wav");
        let mut t = Track::create(&path, 8000, 0).unwrap();
        t.push(&[1; 160]);
        t.push(&[2; 160]);
        t.flush().unwrap();
        drop(t);
        let f = OpenOptions::new().append(true).open(&path).unwrap();
        use std::io::Write;
        (&f).write_all(&[9; 100]).unwrap();
        let len = std::fs::metadata(&path).unwrap().len();
        assert_eq!(Track::frames_in(len, 8000), 2);
        let mut t = Track::reopen(&path, 8000, 2).unwrap();
        t.finish(3).unwrap();
        let s = samples(&path);
        assert_eq!(s.len(), 480);
        assert!(s[320..].iter().all(|&x| x == 0));
    }
}
