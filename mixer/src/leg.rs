//! One leg of a room (pure): its codec pipelines, jitter buffer, RTP sender and the voice
//! processing of its input: gain, echo cancellation and voice activity on every leg, then noise
//! suppression and level control on the legs that are mixed.
//!
//! A leg's voice processing runs at its codec's rate (capped at the room's): a G.711 leg's
//! input is cleaned at 8 kHz, against the 8 kHz frame it was really sent as the echo reference,
//! and only brought to the room's mix rate to be mixed (the mix rate is the highest codec rate
//! in the room, so in a room of telephone callers nothing is converted at all) or to the room's
//! rate to be recorded. Nothing above 4 kHz came in, so processing it at 16 kHz would cost
//! twice as much for nothing.

use std::sync::Arc;

use roundtable_media::MediaError;
use roundtable_media::codec::{Codec, Decoder, Encoder, LegCodec};
use roundtable_media::jitter::{JitterBuffer, JitterConfig, PacketInfo, Playout};
use roundtable_media::resample::{Resampler, frame_len};
use roundtable_media::rtp::RtpSender;

use crate::MixerError;
use crate::agc::{LevelControl, db_to_gain};
use crate::controls::{AudioConfig, Degradation, LegControls};
use crate::echo::detector::{EchoDetector, half_levels};
use crate::echo::{AecMode, EchoCanceller, canceller};
use crate::limiter::Limiter;
use crate::noise::NoiseSuppressor;
use crate::room::{FrameSource, LegId, RoomConfig};
use crate::sound::Playing;
use crate::vad::{Talk, VoiceDetector, level_db};
use roundtable_media::relations::Relations;

/// Most packets a leg's jitter buffer holds (1 s).
const JITTER_CAPACITY: usize = 50;

/// Payload buffers a leg keeps for reuse (a packet in flight, a few waiting in the jitter
/// buffer): receiving then allocates nothing.
const SPARE_PAYLOADS: usize = 4;

/// Frames of jitter buffer an Opus leg keeps beyond `media.jitter_min_ms`. The buffer only grows
/// once it is more than a frame short of its target, so one extra frame still left the next
/// packet (which carries a lost packet's in-band FEC copy) arriving just after its turn whenever
/// the sender's phase drifted a little (seen as concealed losses on a loaded CI machine); two
/// keep it there.
const OPUS_FEC_FRAMES: u32 = 2;
/// Ticks between two noise-learning looks at a leg that is not mixed (one FFT each; 80 ms).
pub(crate) const NOISE_LEARN_EVERY: u64 = 4;

/// A leg's jitter bounds: Opus legs keep [`OPUS_FEC_FRAMES`] more, so that when a packet is lost
/// the next one is already there to rebuild it from.
fn jitter_for(codec: LegCodec, jitter: JitterConfig) -> JitterConfig {
    if codec.codec != Codec::Opus {
        return jitter;
    }
    let min = jitter.min + std::time::Duration::from_millis(20) * OPUS_FEC_FRAMES;
    JitterConfig {
        min,
        max: jitter.max.max(min),
    }
}

/// Payload -> codec-rate audio (where the leg's voice processing runs) -> mix-rate audio.
#[derive(Debug)]
pub(crate) struct Decoding {
    decoder: Decoder,
    up: Resampler,
    native: Vec<i16>,
    /// Last tick's frame: the upsampler's history when that frame was never converted.
    previous: Vec<i16>,
}

impl Decoding {
    fn new(codec: LegCodec, room_rate: u32, mix_rate: u32) -> Result<Decoding, MediaError> {
        let rate = codec.codec.audio_rate(room_rate);
        let frame = vec![0; frame_len(rate)];
        Ok(Decoding {
            decoder: Decoder::new(codec.codec, room_rate)?,
            up: Resampler::new(rate, mix_rate)?,
            native: frame.clone(),
            previous: frame,
        })
    }
}

/// Mix-rate audio -> codec-rate audio -> payload. Legs own one; shared outputs own one each.
#[derive(Debug)]
pub(crate) struct Encoding {
    pub(crate) codec: LegCodec,
    encoder: Encoder,
    down: Resampler,
    native: Vec<i16>,
    /// The last frame's payload.
    pub(crate) payload: Vec<u8>,
}

impl Encoding {
    pub(crate) fn new(
        codec: LegCodec,
        room_rate: u32,
        mix_rate: u32,
    ) -> Result<Encoding, MediaError> {
        let rate = codec.codec.audio_rate(room_rate);
        Ok(Encoding {
            codec,
            encoder: Encoder::new(codec.codec, room_rate, codec.opus)?,
            down: Resampler::new(mix_rate, rate)?,
            native: vec![0; frame_len(rate)],
            payload: Vec::with_capacity(1500),
        })
    }

    /// The converter from a new mix rate (the encoder and its state stay).
    pub(crate) fn converter_from(&self, mix_rate: u32) -> Result<Resampler, MediaError> {
        Resampler::new(mix_rate, self.down.to_rate())
    }

    /// Takes frames at the rate `down` (from [`Encoding::converter_from`]) converts from.
    pub(crate) fn set_converter(&mut self, down: Resampler) {
        self.down = down;
    }

    /// Encodes one mix-rate frame into `payload`.
    pub(crate) fn encode(&mut self, frame: &[i16]) -> Result<(), MediaError> {
        self.down.process(frame, &mut self.native);
        self.encoder.encode(&self.native, &mut self.payload)
    }

    /// The last frame encoded, at the codec's rate: exactly what its listeners were sent.
    pub(crate) fn native(&self) -> &[i16] {
        &self.native
    }
}

/// What a leg hears this tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// Nothing is sent (on hold).
    Nothing,
    /// Its own frame: the mix without itself, and a prompt over what it hears.
    Private,
    /// A shared output's frame (index into the room's outputs).
    Shared(usize),
}

/// What changed on a leg during a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LegChange {
    Talk(Talk),
    Aec(bool),
}

/// How the room wants this tick's input processed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stages {
    pub(crate) audio: AudioConfig,
    pub(crate) room_aec: Option<AecMode>,
    pub(crate) degradation: Degradation,
}

pub(crate) struct Leg {
    pub(crate) id: LegId,
    decoding: Decoding,
    pub(crate) encoding: Encoding,
    pub(crate) jitter: JitterBuffer<Vec<u8>>,
    /// Payload buffers played out, for the next packets.
    spare: Vec<Vec<u8>>,
    pub(crate) sender: RtpSender,
    /// The room's rate (its recordings and sounds) and the rate it mixes at.
    room_rate: u32,
    mix_rate: u32,
    /// This tick's input at the mix rate, after processing; converted from the codec rate
    /// only when it is mixed (see [`Leg::ensure_input`]).
    pub(crate) input: Vec<i16>,
    /// Whether `input` holds this tick's frame (else only the codec-rate frame exists).
    upsampled: bool,
    /// Whether last tick's frame went unconverted: the upsampler takes it as history before
    /// it next converts (the filter only needs the last frame, so a listener's unconverted
    /// ticks cost nothing).
    history_due: bool,
    /// This tick's input before noise suppression and level control, at the room rate, when
    /// the room records per-leg tracks.
    pub(crate) track: Vec<i16>,
    /// Brings the input to the room rate for `track` (its own filter history: the mix's
    /// conversion runs on the processed frame, the track's on the unprocessed one).
    track_up: Option<Resampler>,
    /// Where this tick's input came from.
    pub(crate) source: FrameSource,
    pub(crate) packet: Vec<u8>,
    /// Whether the leg receives audio (false on hold).
    pub(crate) hears: bool,
    /// Whether the leg's audio may be mixed (false on hold or when it only listens).
    pub(crate) heard: bool,
    pub(crate) controls: LegControls,
    /// A prompt playing to this leg over what it hears.
    /// Boxed: large, and rarely playing.
    pub(crate) prompt: Option<Box<Playing>>,
    /// Lost frames Opus FEC rebuilt.
    pub(crate) fec_recovered: u64,
    vad: VoiceDetector,
    /// This tick's input level before noise suppression and level control (dBFS).
    level_db: f32,
    /// The loudest `level_db` since the room last reported levels.
    peak_db: f32,
    /// This tick's input levels before echo cancellation, for the echo detector.
    heard_levels: [f32; 2],
    level: LevelControl,
    noise: Option<NoiseSuppressor>,
    aec: Option<Box<dyn EchoCanceller>>,
    aec_active: bool,
    detector: EchoDetector,
    /// Limits its private output.
    pub(crate) limiter: Limiter,
    /// Whether it was among the mixed talkers in the last tick.
    pub(crate) mixed: bool,
    pub(crate) route: Route,
    /// Whom it hears and who hears it, besides everyone.
    pub(crate) relations: Relations,
    /// Whether, this tick, its relations (or a whisper to it) make what it hears differ from
    /// the room's sum; it then hears `own_mix`.
    pub(crate) hears_own_mix: bool,
    /// Its own mix when `hears_own_mix` (the buffer is kept between ticks).
    pub(crate) own_mix: Vec<i32>,
}

impl std::fmt::Debug for Leg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leg")
            .field("id", &self.id)
            .field("codec", &self.encoding.codec)
            .field("controls", &self.controls)
            .finish_non_exhaustive()
    }
}

impl Leg {
    /// A leg of a room set up with `config`, mixing at its own codec's rate (the room brings
    /// it to the room's mix rate when it joins: [`Leg::set_mix_rate`]).
    pub(crate) fn new(
        id: LegId,
        codec: LegCodec,
        seed: u64,
        config: &RoomConfig,
    ) -> Result<Leg, MediaError> {
        let (room_rate, mix_rate) = (config.rate, codec.codec.audio_rate(config.rate));
        Ok(Leg {
            id,
            decoding: Decoding::new(codec, room_rate, mix_rate)?,
            encoding: Encoding::new(codec, room_rate, mix_rate)?,
            jitter: JitterBuffer::new(
                jitter_for(codec, config.jitter),
                codec.codec.clock_rate(),
                JITTER_CAPACITY,
            ),
            spare: Vec::with_capacity(SPARE_PAYLOADS),
            sender: RtpSender::new(codec.payload_type, seed),
            room_rate,
            mix_rate,
            input: vec![0; frame_len(mix_rate)],
            upsampled: true,
            history_due: false,
            track: Vec::new(),
            track_up: None,
            source: FrameSource::Missing,
            packet: Vec::with_capacity(1500),
            hears: true,
            heard: true,
            controls: LegControls::default(),
            prompt: None,
            fec_recovered: 0,
            vad: VoiceDetector::default(),
            level_db: crate::vad::SILENCE_DB,
            peak_db: crate::vad::SILENCE_DB,
            heard_levels: [crate::vad::SILENCE_DB; 2],
            level: LevelControl::default(),
            noise: None,
            aec: None,
            aec_active: false,
            detector: EchoDetector::new(seed),
            limiter: Limiter::new(config.audio.limiter),
            mixed: false,
            route: Route::Nothing,
            relations: Relations::default(),
            hears_own_mix: false,
            own_mix: Vec::new(),
        })
    }

    /// Switches to a new codec, still at the same mix rate (the room then fits its mix rate to
    /// the new codec); on error the leg keeps its old pipelines.
    pub(crate) fn set_codec(
        &mut self,
        codec: LegCodec,
        jitter: JitterConfig,
    ) -> Result<(), MediaError> {
        if self.encoding.codec == codec {
            return Ok(());
        }
        let decoding = Decoding::new(codec, self.room_rate, self.mix_rate)?;
        let encoding = Encoding::new(codec, self.room_rate, self.mix_rate)?;
        if self.encoding.codec.codec.clock_rate() != codec.codec.clock_rate() {
            self.jitter = JitterBuffer::new(
                jitter_for(codec, jitter),
                codec.codec.clock_rate(),
                JITTER_CAPACITY,
            );
        }
        if decoding.up.from_rate() != self.codec_rate() {
            // Voice processing runs at the codec's rate: start it over at the new one.
            self.noise = None;
            self.aec = None;
            self.track_up = None;
        }
        self.decoding = decoding;
        self.encoding = encoding;
        self.sender.set_payload_type(codec.payload_type);
        Ok(())
    }

    /// The rate its codec carries (where its voice processing runs): the mix rate it needs.
    pub(crate) fn codec_rate(&self) -> u32 {
        self.decoding.up.from_rate()
    }

    /// The rate it mixes at.
    pub(crate) fn mix_rate(&self) -> u32 {
        self.mix_rate
    }

    /// Converts to and from a new mix rate: its decoder, encoder and voice processing stay as
    /// they are (they run at the codec's rate); only the converters and its mix-rate frame
    /// change. On error nothing changes.
    pub(crate) fn set_mix_rate(&mut self, mix_rate: u32) -> Result<(), MediaError> {
        let up = Resampler::new(self.codec_rate(), mix_rate)?;
        let down = self.encoding.converter_from(mix_rate)?;
        self.decoding.up = up;
        self.encoding.set_converter(down);
        self.mix_rate = mix_rate;
        self.input = vec![0; frame_len(mix_rate)];
        // The new upsampler starts from silence: nothing of the last frame is owed to it.
        self.upsampled = true;
        self.history_due = false;
        Ok(())
    }

    /// The loudest input level since the last call (dBFS), starting over.
    pub(crate) fn take_peak_db(&mut self) -> f32 {
        std::mem::replace(&mut self.peak_db, crate::vad::SILENCE_DB)
    }

    /// Whether its voice detector says it is talking.
    pub(crate) fn talking(&self) -> bool {
        self.vad.talking()
    }

    /// Its echo cancellation mode: its own, else the room's, else the service's.
    fn aec_mode(&self, stages: Stages) -> AecMode {
        self.controls
            .aec
            .or(stages.room_aec)
            .unwrap_or(stages.audio.aec)
    }

    /// Whether echo cancellation runs on it.
    pub(crate) fn aec_active(&self) -> bool {
        self.aec_active
    }

    /// Whether the echo detector finds it echoing.
    pub(crate) fn echo_detected(&self) -> bool {
        self.detector.echo()
    }

    /// Whether it may be mixed this tick, and how loud it is for ranking (dBFS).
    pub(crate) fn candidate(&self) -> Option<f32> {
        (self.heard && !self.controls.muted && self.vad.active())
            .then(|| self.vad.speech_level_db() + self.level.gain_db())
    }

    /// Queues one received payload in the jitter buffer, in a reused buffer.
    pub(crate) fn queue(&mut self, info: PacketInfo, payload: &[u8]) {
        let mut buffer = self.spare.pop().unwrap_or_default();
        buffer.clear();
        buffer.extend_from_slice(payload);
        self.jitter.push(info, buffer);
    }

    /// Decodes (or conceals) this tick's input, at the codec's rate: a leg that is not mixed
    /// this tick never needs it at the room rate.
    pub(crate) fn take_input(&mut self) -> Result<(), MediaError> {
        let d = &mut self.decoding;
        std::mem::swap(&mut d.native, &mut d.previous);
        self.history_due = !self.upsampled;
        let result = match self.jitter.pop() {
            Playout::Packet(payload) => {
                self.source = FrameSource::Received;
                let decoded = d.decoder.decode(&payload, &mut d.native);
                if self.spare.len() < SPARE_PAYLOADS {
                    self.spare.push(payload);
                }
                decoded
            }
            Playout::Missing => {
                let next = self.jitter.upcoming().map(Vec::as_slice);
                self.source = if d.decoder.conceal(next, &mut d.native) {
                    self.fec_recovered += 1;
                    FrameSource::Received
                } else {
                    FrameSource::Concealed
                };
                Ok(())
            }
            Playout::Idle => {
                self.source = FrameSource::Missing;
                d.native.fill(0);
                Ok(())
            }
        };
        self.upsampled = !self.heard;
        if !self.heard {
            d.native.fill(0);
            self.input.fill(0);
        }
        result
    }

    /// Brings this tick's (processed) input to the room rate, once per tick.
    fn ensure_input(&mut self) {
        if !self.upsampled {
            if self.history_due {
                self.decoding.up.skip(&self.decoding.previous);
            }
            self.decoding
                .up
                .process(&self.decoding.native, &mut self.input);
            self.upsampled = true;
        }
    }

    /// Runs the input stages every leg needs (gain, echo cancellation, voice activity) on this
    /// tick's input; returns what changed, in order.
    pub(crate) fn process_input(
        &mut self,
        stages: Stages,
        changes: &mut Vec<LegChange>,
    ) -> Result<(), MixerError> {
        let mut result = Ok(());
        if self.controls.input_gain_db != 0.0 {
            let gain = db_to_gain(self.controls.input_gain_db);
            for s in &mut self.decoding.native {
                *s = (f32::from(*s) * gain) as i16;
            }
        }
        let mode = self.aec_mode(stages);
        if mode == AecMode::Auto {
            self.heard_levels = half_levels(&self.decoding.native);
        }
        let wanted = match mode {
            AecMode::Off => false,
            AecMode::On => stages.degradation < Degradation::NoAec,
            AecMode::Auto => self.detector.echo() && stages.degradation < Degradation::NoAutoAec,
        };
        if mode == AecMode::Off {
            self.aec = None;
        }
        if wanted && self.aec.is_none() {
            match canceller(stages.audio.aec_backend, self.codec_rate()) {
                Ok(aec) => self.aec = Some(aec),
                Err(error) => result = Err(error),
            }
        }
        let active = wanted && self.aec.is_some();
        if active != self.aec_active {
            self.aec_active = active;
            changes.push(LegChange::Aec(active));
        }
        if let Some(aec) = self.aec.as_mut().filter(|_| active)
            && let Err(error) = aec.capture(&mut self.decoding.native)
        {
            result = Err(error);
        }

        self.level_db = level_db(&self.decoding.native);
        self.peak_db = self.peak_db.max(self.level_db);
        if let Some(talk) = self.vad.update(self.level_db) {
            changes.push(LegChange::Talk(talk));
        }
        result
    }

    /// The input stages that only matter for legs that are mixed: noise suppression and level
    /// control. Run on the mixed talkers only, so a room pays for them on at most `top_k` legs.
    pub(crate) fn finish_input(&mut self, stages: Stages) -> Result<(), MixerError> {
        let mut result = Ok(());
        let rate = self.codec_rate();
        let native = &mut self.decoding.native;
        if let Some(noise) = suppressor(&mut self.noise, &self.controls, stages, rate)
            && let Err(error) = noise.process(native)
        {
            result = Err(error);
        }
        if self.controls.agc.unwrap_or(stages.audio.agc) {
            self.level.process(native, self.level_db, self.vad.speech());
        }
        self.ensure_input();
        result
    }

    /// Keeps this tick's input, after gain and echo cancellation and before noise suppression
    /// and level control, at the room rate in `track` (per-leg recording).
    pub(crate) fn record_track(&mut self) {
        let rate = self.codec_rate();
        let track_up = match &mut self.track_up {
            Some(track_up) => track_up,
            None => match Resampler::new(rate, self.room_rate) {
                Ok(resampler) => self.track_up.insert(resampler),
                Err(_) => return, // a pair of telephony rates, as the room's conversions
            },
        };
        self.track.resize(frame_len(self.room_rate), 0);
        track_up.process(&self.decoding.native, &mut self.track);
    }

    /// For a leg that is not mixed this tick: its noise suppressor learns the noise from the
    /// input once every [`NOISE_LEARN_EVERY`] ticks (staggered by `phase`), and otherwise
    /// only notes that a frame went by.
    pub(crate) fn idle_input(&mut self, stages: Stages, phase: u64) -> Result<(), MixerError> {
        let rate = self.codec_rate();
        let Some(noise) = suppressor(&mut self.noise, &self.controls, stages, rate) else {
            return Ok(());
        };
        let learn = phase.is_multiple_of(NOISE_LEARN_EVERY);
        noise.listen(learn.then_some(&self.decoding.native[..]))
    }

    /// Records what the leg was sent this tick, at its codec's rate: the echo reference, and
    /// the echo detector's other half (its decision takes effect at the next tick's input).
    /// `shared` is the shared output's frame it heard and that frame's [`half_levels`]; `None`
    /// when it heard its own encoding's frame.
    pub(crate) fn sent(
        &mut self,
        shared: Option<(&[i16], [f32; 2])>,
        stages: Stages,
    ) -> Result<(), MixerError> {
        let auto = self.aec_mode(stages) == AecMode::Auto;
        let aec = self.aec.as_mut().filter(|_| self.aec_active);
        if !auto && aec.is_none() {
            return Ok(());
        }
        let frame = shared.map_or(self.encoding.native(), |(frame, _)| frame);
        if auto {
            // Against the input after gain and before any cancellation; a private frame is
            // measured here, and only when the detector runs.
            let levels = shared.map_or_else(|| half_levels(frame), |(_, levels)| levels);
            self.detector.observe_levels(self.heard_levels, levels);
        }
        match aec {
            Some(aec) => aec.render(frame),
            None => Ok(()),
        }
    }

    /// Plays `samples` (at the room's rate) to this leg over what it hears, from the next tick.
    pub(crate) fn play(&mut self, samples: Arc<[i16]>) {
        self.prompt = Some(Box::new(Playing::new(samples, self.room_rate)));
    }

    /// Takes the next prompt frame into `out` (at the mix rate), if a prompt plays; ends it
    /// after its last frame.
    pub(crate) fn prompt_frame(&mut self, out: &mut [i16]) -> bool {
        let Some(prompt) = &mut self.prompt else {
            return false;
        };
        if !prompt.next_into(out, false) {
            self.prompt = None;
        }
        true
    }
}

/// A leg's noise suppressor (at the leg's processing `rate`), created on first use, when
/// suppression is on for the leg.
fn suppressor<'a>(
    noise: &'a mut Option<NoiseSuppressor>,
    controls: &LegControls,
    stages: Stages,
    rate: u32,
) -> Option<&'a mut NoiseSuppressor> {
    let on = controls
        .noise_suppression
        .unwrap_or(stages.audio.noise_suppression)
        && stages.degradation < Degradation::NoNoiseSuppression;
    on.then(|| noise.get_or_insert_with(|| NoiseSuppressor::new(rate)))
}
