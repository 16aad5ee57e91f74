//! The second echo canceller: the C WebRTC audio processing library (webrtc-audio-processing
//! 0.5, its legacy AEC with the extended filter and delay-agnostic mode). That release only
//! works at 48 kHz, so both directions are resampled to 48 kHz and the cleaned input back.
//!
//! The legacy AEC loses echo paths longer than about 180 ms (measured: 10 dB of reduction at
//! 200 ms). So the reference goes through a delay line first, set from our own echo detector's
//! bulk delay estimate minus 40 ms of headroom; the AEC then only has to find the rest.

use std::collections::VecDeque;

use roundtable_media::resample::{Resampler, frame_len};
use webrtc_audio_processing::{
    Config, EchoCancellation, EchoCancellationSuppressionLevel, InitializationConfig,
    NUM_SAMPLES_PER_FRAME, Processor,
};

use super::EchoCanceller;
use super::detector::EchoDetector;
use crate::MixerError;

/// The library's only working rate.
const APM_RATE: u32 = 48_000;

/// One leg's webrtc-audio-processing canceller.
pub struct WebRtcCanceller {
    processor: Processor,
    /// The leg's processing rate to 48 kHz for the reference and the input, and back for the input.
    render_up: Resampler,
    capture_up: Resampler,
    capture_down: Resampler,
    wide: Vec<i16>,
    block: Vec<f32>,
    /// Finds the echo path's bulk delay from the raw input and the reference.
    detector: EchoDetector,
    /// The last raw input frame (the detector takes it with the next reference).
    raw: Vec<i16>,
    /// The reference, delayed by `delay` samples (at the canceller's rate).
    line: VecDeque<i16>,
    delayed: Vec<i16>,
    delay: usize,
    rate: u32,
}

/// Delay left for the AEC itself to find, below the detector's estimate.
const HEADROOM_MS: u32 = 40;
/// Smallest change of the estimate that moves the delay line.
const MOVE_MS: u32 = 20;

fn processing(error: webrtc_audio_processing::Error) -> MixerError {
    MixerError::Processing(format!("webrtc-audio-processing: {error}"))
}

impl WebRtcCanceller {
    /// A canceller for 20 ms frames at `rate`.
    pub fn new(rate: u32) -> Result<WebRtcCanceller, MixerError> {
        let init = InitializationConfig {
            num_capture_channels: 1,
            num_render_channels: 1,
            ..Default::default()
        };
        let mut processor = Processor::new(&init).map_err(processing)?;
        processor.set_config(Config {
            echo_cancellation: Some(EchoCancellation {
                suppression_level: EchoCancellationSuppressionLevel::High,
                enable_extended_filter: true,
                enable_delay_agnostic: true,
                stream_delay_ms: None,
            }),
            ..Default::default()
        });
        Ok(WebRtcCanceller {
            processor,
            render_up: Resampler::new(rate, APM_RATE)?,
            capture_up: Resampler::new(rate, APM_RATE)?,
            capture_down: Resampler::new(APM_RATE, rate)?,
            wide: vec![0; frame_len(APM_RATE)],
            block: vec![0.0; NUM_SAMPLES_PER_FRAME as usize],
            detector: EchoDetector::new(0),
            raw: vec![0; frame_len(rate)],
            line: VecDeque::new(),
            delayed: vec![0; frame_len(rate)],
            delay: 0,
            rate,
        })
    }

    fn check(&self, len: usize) -> Result<(), MixerError> {
        if len != self.capture_up.from_rate() as usize / 50 {
            return Err(MixerError::FrameSize(len));
        }
        Ok(())
    }
}

impl EchoCanceller for WebRtcCanceller {
    fn render(&mut self, sent: &[i16]) -> Result<(), MixerError> {
        self.check(sent.len())?;
        self.detector.observe(&self.raw, sent);
        if let Some(found) = self.detector.delay_ms() {
            let target = found.saturating_sub(HEADROOM_MS);
            let current = (self.delay as u32 * 1000) / self.rate;
            if target.abs_diff(current) >= MOVE_MS {
                self.delay = (target * self.rate / 1000) as usize;
            }
        }
        self.line.extend(sent.iter().copied());
        while self.line.len() < self.delay + sent.len() {
            self.line.push_front(0);
        }
        while self.line.len() > self.delay + sent.len() {
            self.line.pop_front();
        }
        for (d, s) in self.delayed.iter_mut().zip(self.line.drain(..sent.len())) {
            *d = s;
        }
        self.render_up.process(&self.delayed, &mut self.wide);
        for part in self.wide.chunks(self.block.len()) {
            for (b, &s) in self.block.iter_mut().zip(part) {
                *b = f32::from(s) / 32768.0;
            }
            self.processor
                .process_render_frame(&mut self.block)
                .map_err(processing)?;
        }
        Ok(())
    }

    fn capture(&mut self, input: &mut [i16]) -> Result<(), MixerError> {
        self.check(input.len())?;
        self.raw.copy_from_slice(input);
        self.capture_up.process(input, &mut self.wide);
        for part in self.wide.chunks_mut(self.block.len()) {
            for (b, &s) in self.block.iter_mut().zip(part.iter()) {
                *b = f32::from(s) / 32768.0;
            }
            self.processor
                .process_capture_frame(&mut self.block)
                .map_err(processing)?;
            for (s, &b) in part.iter_mut().zip(&self.block) {
                *s = (b * 32768.0) as i16;
            }
        }
        self.capture_down.process(&self.wide, input);
        Ok(())
    }
}
