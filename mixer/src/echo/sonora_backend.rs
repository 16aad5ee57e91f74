//! The default echo canceller: sonora's port of WebRTC AEC3, which finds the echo delay itself
//! and handles double talk.

use sonora::config::EchoCanceller as Aec3;
use sonora::{AudioProcessing, Config, StreamConfig};

use super::EchoCanceller;
use crate::MixerError;

/// AEC3 for one leg.
pub struct SonoraCanceller {
    apm: AudioProcessing,
    chunk: usize,
    out: Vec<i16>,
}

impl SonoraCanceller {
    /// A canceller for 20 ms frames at `rate`.
    pub fn new(rate: u32) -> SonoraCanceller {
        let config = Config {
            echo_canceller: Some(Aec3::default()),
            ..Default::default()
        };
        let stream = StreamConfig::new(rate, 1);
        let apm = AudioProcessing::builder()
            .config(config)
            .capture_config(stream)
            .render_config(stream)
            .build();
        let chunk = rate as usize / 100;
        SonoraCanceller {
            apm,
            chunk,
            out: vec![0; chunk],
        }
    }

    fn check(&self, len: usize) -> Result<(), MixerError> {
        if len == 0 || !len.is_multiple_of(self.chunk) {
            return Err(MixerError::FrameSize(len));
        }
        Ok(())
    }
}

fn processing(error: sonora::Error) -> MixerError {
    MixerError::Processing(format!("sonora: {error:?}"))
}

impl EchoCanceller for SonoraCanceller {
    fn render(&mut self, sent: &[i16]) -> Result<(), MixerError> {
        self.check(sent.len())?;
        for part in sent.chunks(self.chunk) {
            self.apm
                .process_render_i16(part, &mut self.out)
                .map_err(processing)?;
        }
        Ok(())
    }

    fn capture(&mut self, input: &mut [i16]) -> Result<(), MixerError> {
        self.check(input.len())?;
        for part in input.chunks_mut(self.chunk) {
            self.apm
                .process_capture_i16(part, &mut self.out)
                .map_err(processing)?;
            part.copy_from_slice(&self.out);
        }
        Ok(())
    }
}
