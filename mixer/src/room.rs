//! The room core (pure): a room's legs and the 20 ms tick that turns each leg's next packet
//! into everyone else's next packet.
//!
//! Drive it with:
//! - [`Room::handle_audio`] as packets arrive;
//! - [`Room::tick`] once per 20 ms, with the time;
//! - then [`Room::packets`] (one RTP packet per leg to send), [`Room::mix`] (the frame a
//!   recorder of the whole room receives) and [`Room::poll_event`] until it returns `None`.
//!
//! A tick: every leg's input is decoded and processed (gain, echo cancellation, voice
//! activity); the `top_k` loudest talkers are chosen, and only their input goes through noise
//! suppression and level control before it is mixed; each
//! mixed talker hears the mix without itself through its own limiter and encoder, while every
//! other leg hears the whole mix, limited and encoded once per codec and output gain and shared
//! (a 100-leg room with 3 talkers encodes 3 + 1 frames per codec). G.729 legs are the
//! exception: each keeps its own encoder (see `Codec::shares_encoding`). Deaf legs share a silent
//! output; a leg playing a prompt hears it over what it would hear otherwise (the room never
//! goes quiet behind a prompt: only a lobby, a room of one, has nothing under its prompts). A leg that starts or stops being a mixed
//! talker switches between its own encoder and the shared one: stateless G.711 does not
//! notice; G.722 and Opus decoders may make a few milliseconds of artefact at that moment,
//! which falls while the leg itself starts or stops talking.
//!
//! A room mixes at the highest rate its legs' codecs carry, at most its own rate
//! (`audio.rate`): a room of G.711 callers mixes at 8 kHz, and nothing in its tick is
//! converted between rates; when a wideband leg joins, the room's mix rate rises for everyone
//! (only the rate converters change: codecs and voice processing keep their state), and falls
//! again when it leaves. Recordings and sounds stay at the room's rate: the recorded mix is
//! converted once per tick while a recording runs, sounds as they play.
//!
//! Relations ([`Room::set_relations`]: a coach heard by one agent only, a leg that hears only
//! some legs) only add work for the legs they concern: a leg heard by only some is kept out of
//! the shared sum and out of `top_k` (it is mixed whenever it talks), and each leg that hears
//! something other than the shared sum (N-1) gets a mix of its own; everyone else is served as
//! before. Without relations the tick is what it always was.
//!
//! A room can be put on hold ([`Room::set_hold`]: waiting for its moderator): nobody is mixed
//! and everyone hears the hold sound, looped; the recording gets silence. An announcement
//! ([`Room::announce`]: join and leave tones) is added to what everyone hears.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use roundtable_media::MediaError;
use roundtable_media::codec::{Codec, LegCodec, OpusOptions};
use roundtable_media::jitter::{JitterConfig, PacketInfo};
use roundtable_media::quality::LegQuality;
use roundtable_media::resample::{Resampler, frame_len};

use crate::agc::db_to_gain;
use crate::controls::{AudioConfig, Degradation, LegControls};
use crate::echo::AecMode;
use crate::echo::detector::half_levels;
use crate::leg::{Encoding, Leg, LegChange, Route, Stages};
use crate::limiter::Limiter;
use crate::mix;
use crate::sound::Playing;
use crate::vad::Talk;
use roundtable_media::relations::{Audience, Relations};

/// Ticks a shared output may go unused before it is dropped (1 s).
const SHARED_IDLE_TICKS: u64 = 50;

/// What every room of a mixer is set up with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomConfig {
    /// The internal rate, 8000, 16000 or 48000 Hz (`audio.rate`).
    pub rate: u32,
    /// Jitter buffer bounds (`media.jitter_min_ms`, `media.jitter_max_ms`).
    pub jitter: JitterConfig,
    /// Audio features (`[audio]`).
    pub audio: AudioConfig,
}

impl RoomConfig {
    /// A room at `rate` with the default jitter bounds and audio features.
    pub fn at(rate: u32) -> RoomConfig {
        RoomConfig {
            rate,
            jitter: JitterConfig::default(),
            audio: AudioConfig::default(),
        }
    }
}

// The leg and frame types the room hands its listeners live in media, beside the codecs.
pub use roundtable_media::frames::{FrameSource, LegId};

/// A leg ready to join a room ([`Room::prepare_leg`]).
#[derive(Debug)]
pub struct PreparedLeg(Box<Leg>);

/// Ticks between two [`RoomEvent::Levels`] (250 ms).
pub const LEVELS_EVERY_TICKS: u64 = 12;

/// Something that happened to a leg during a tick.
#[derive(Debug, Clone, PartialEq)]
pub enum RoomEvent {
    /// The leg started talking.
    Talking(LegId),
    /// The leg stopped talking.
    StoppedTalking(LegId),
    /// Echo cancellation started (`true`) or stopped on the leg.
    EchoCancellation(LegId, bool),
    /// Every [`LEVELS_EVERY_TICKS`] while someone talks: each talking leg's loudest input
    /// level since the last report, dBFS (before noise suppression and level control).
    Levels(Vec<(LegId, f32)>),
}

/// A leg's mixer-side state, for the API.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LegStatus {
    /// Its controls.
    pub controls: LegControls,
    /// Whether it is talking.
    pub talking: bool,
    /// Whether it was mixed in the last tick.
    pub mixed: bool,
    /// Whether echo cancellation runs on it.
    pub aec_active: bool,
    /// Whether the echo detector finds it echoing (`auto` mode only).
    pub echo_detected: bool,
}

/// What a shared output plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Content {
    /// The whole mix at this output gain (hundredths of a dB).
    Mix(i32),
    /// Silence (deaf legs).
    Silence,
    /// The hold sound (a room waiting for its moderator).
    Hold,
}

/// One frame encoded once for every leg with the same codec and content.
#[derive(Debug)]
struct SharedOutput {
    codec: Codec,
    opus: OpusOptions,
    content: Content,
    encoding: Encoding,
    limiter: Limiter,
    frame: Vec<i16>,
    /// The encoded frame's echo-detector levels, measured once for all the legs that hear it.
    levels: [f32; 2],
    last_used: u64,
}

/// One conference room's media state.
#[derive(Debug)]
pub struct Room {
    config: RoomConfig,
    /// The rate the room mixes at: its legs' highest codec rate, at most `config.rate`.
    mix_rate: u32,
    aec: Option<AecMode>,
    degradation: Degradation,
    hold: Option<Playing>,
    announcement: Option<Playing>,
    /// This tick's frame of the hold sound or the announcement, at the mix rate.
    sound: Vec<i16>,
    legs: Vec<Leg>,
    shared: Vec<SharedOutput>,
    acc: Vec<i32>,
    scratch: Vec<f32>,
    output: Vec<i16>,
    mix: Vec<i16>,
    mix_limiter: Limiter,
    /// The mix at the room's rate while recording, when the room mixes at a lower rate.
    recorded: Vec<i16>,
    /// Converts `mix` into `recorded`, when the room mixes below its rate.
    mix_up: Option<Resampler>,
    /// Whether the room is being recorded (its mix is then kept at the room's rate).
    recording: bool,
    ranking: Vec<(f32, usize)>,
    changes: Vec<LegChange>,
    events: VecDeque<RoomEvent>,
    ticks: u64,
    now: Option<Instant>,
    encodes: usize,
    /// Whether each leg's input is kept for per-leg recording tracks.
    tracks: bool,
    /// Some leg has relations (see [`roundtable_media::relations`]): the tick then works out
    /// who hears what; without any, it mixes exactly as it always has.
    related: bool,
    /// Whether the recorded mix carries what legs heard by only some said (whispers).
    record_whispers: bool,
    /// The mixed legs heard by only some, this tick (indices).
    whisperers: Vec<usize>,
    /// Where one leg's own mix is summed before it is stored in the leg.
    own_scratch: Vec<i32>,
    /// Payloads that failed to decode or frames that failed to encode, since the last read.
    codec_errors: u64,
    /// Frames a voice processing stage refused, since the last read.
    processing_errors: u64,
}

impl Room {
    /// An empty room.
    pub fn new(config: RoomConfig) -> Room {
        let frame = frame_len(config.rate);
        Room {
            config,
            mix_rate: config.rate,
            aec: None,
            degradation: Degradation::Full,
            hold: None,
            announcement: None,
            sound: vec![0; frame],
            legs: Vec::new(),
            shared: Vec::new(),
            acc: vec![0; frame],
            scratch: vec![0.0; frame],
            output: vec![0; frame],
            mix: vec![0; frame],
            mix_limiter: Limiter::new(config.audio.limiter),
            recorded: vec![0; frame],
            mix_up: None,
            recording: false,
            ranking: Vec::new(),
            changes: Vec::new(),
            events: VecDeque::new(),
            ticks: 0,
            now: None,
            encodes: 0,
            tracks: false,
            related: false,
            record_whispers: false,
            whisperers: Vec::new(),
            own_scratch: Vec::new(),
            codec_errors: 0,
            processing_errors: 0,
        }
    }

    /// The room's rate: its recordings' and sounds' (`audio.rate`).
    pub fn rate(&self) -> u32 {
        self.config.rate
    }

    /// The rate the room mixes at now: its legs' highest codec rate, at most [`Room::rate`].
    pub fn mix_rate(&self) -> u32 {
        self.mix_rate
    }

    /// Moves the room to the mix rate its legs need, converting legs that joined at another.
    fn fit_mix_rate(&mut self) {
        let Some(wanted) = self.legs.iter().map(Leg::codec_rate).max() else {
            return;
        };
        if wanted != self.mix_rate {
            let rate = self.config.rate;
            let (Ok(mix_up), Ok(outputs)) = (
                (wanted != rate)
                    .then(|| Resampler::new(wanted, rate))
                    .transpose(),
                self.shared
                    .iter()
                    .map(|s| s.encoding.converter_from(wanted))
                    .collect::<Result<Vec<_>, _>>(),
            ) else {
                // Not a pair of telephony rates (config validation rules that out): stay.
                self.codec_errors += 1;
                return;
            };
            self.mix_rate = wanted;
            self.mix_up = mix_up;
            let frame = frame_len(wanted);
            for (output, down) in self.shared.iter_mut().zip(outputs) {
                output.encoding.set_converter(down);
                output.frame = vec![0; frame];
            }
            for buffer in [&mut self.sound, &mut self.output, &mut self.mix] {
                *buffer = vec![0; frame];
            }
            self.acc = vec![0; frame];
            self.scratch = vec![0.0; frame];
        }
        for leg in self.legs.iter_mut().filter(|l| l.mix_rate() != wanted) {
            if leg.set_mix_rate(wanted).is_err() {
                self.codec_errors += 1;
            }
        }
    }

    /// Number of legs.
    pub fn len(&self) -> usize {
        self.legs.len()
    }

    /// Whether the room has no legs.
    pub fn is_empty(&self) -> bool {
        self.legs.is_empty()
    }

    /// Adds a leg speaking `codec`; `seed` randomises its outgoing RTP stream.
    pub fn add_leg(&mut self, id: LegId, codec: LegCodec, seed: u64) -> Result<(), MediaError> {
        let leg = Room::prepare_leg(&self.config, id, codec, seed)?;
        self.add_prepared(leg);
        Ok(())
    }

    /// Builds a leg's codec pipelines and state for a room set up with `config`, so that the
    /// work (resampler plans, codec state) happens on the caller's thread, not in a tick.
    pub fn prepare_leg(
        config: &RoomConfig,
        id: LegId,
        codec: LegCodec,
        seed: u64,
    ) -> Result<PreparedLeg, MediaError> {
        Leg::new(id, codec, seed, config).map(|leg| PreparedLeg(Box::new(leg)))
    }

    /// Adds a leg built by [`Room::prepare_leg`] (replacing one with the same id).
    pub fn add_prepared(&mut self, leg: PreparedLeg) {
        if let Some(i) = self.leg_index(leg.0.id) {
            self.legs.remove(i);
        }
        let at = self.legs.partition_point(|l| l.id < leg.0.id);
        self.legs.insert(at, *leg.0);
        self.fit_mix_rate();
    }

    /// Legs are kept in id order, so finding one (for each packet received) is a binary
    /// search, not a scan of a big room.
    fn leg_index(&self, id: LegId) -> Option<usize> {
        self.legs.binary_search_by_key(&id, |l| l.id).ok()
    }

    fn leg_mut(&mut self, id: LegId) -> Option<&mut Leg> {
        self.leg_index(id).map(|i| &mut self.legs[i])
    }

    /// Plays `samples` (at the room's rate) to a leg over what it hears, from the next tick,
    /// replacing any prompt already playing.
    pub fn play(&mut self, id: LegId, samples: Arc<[i16]>) {
        if let Some(leg) = self.leg_mut(id) {
            leg.play(samples);
        }
    }

    /// Stops a leg's prompt: any prompt, or with `only`, that prompt (the same samples) if it is
    /// still the one playing, so that stopping one prompt never cuts another short.
    pub fn stop_prompt(&mut self, id: LegId, only: Option<&Arc<[i16]>>) {
        if let Some(leg) = self.leg_mut(id)
            && only.is_none_or(|samples| leg.prompt.as_ref().is_some_and(|p| p.plays(samples)))
        {
            leg.prompt = None;
        }
    }

    /// Changes a leg's codec and whether it hears and is heard (hold, resume, re-offers). A new
    /// codec gets fresh pipelines; on error the leg keeps its old ones.
    pub fn update_leg(
        &mut self,
        id: LegId,
        codec: LegCodec,
        hears: bool,
        heard: bool,
    ) -> Result<(), MediaError> {
        let jitter = self.config.jitter;
        let Some(leg) = self.leg_mut(id) else {
            return Ok(());
        };
        leg.hears = hears;
        leg.heard = heard;
        leg.set_codec(codec, jitter)?;
        self.fit_mix_rate();
        Ok(())
    }

    /// Sets a leg's controls (mute, deaf, gains, per-leg feature switches).
    pub fn set_controls(&mut self, id: LegId, controls: LegControls) {
        if let Some(leg) = self.leg_mut(id) {
            leg.controls = controls;
        }
    }

    /// Sets whom a leg hears and who hears it (see [`roundtable_media::relations`]).
    pub fn set_relations(&mut self, id: LegId, relations: Relations) {
        if let Some(leg) = self.leg_mut(id) {
            leg.relations = relations;
        }
        self.related = self.legs.iter().any(|l| !l.relations.is_default());
    }

    /// Whether the recorded mix carries whispers (`recording.include_whispers`).
    pub fn set_record_whispers(&mut self, on: bool) {
        self.record_whispers = on;
    }

    /// Sets the room's echo cancellation mode (`None`: the service's).
    pub fn set_aec(&mut self, mode: Option<AecMode>) {
        self.aec = mode;
    }

    /// Puts the room on hold with `sound` looped to everyone (`None`: mixing again).
    pub fn set_hold(&mut self, sound: Option<Arc<[i16]>>) {
        self.hold = sound.map(|samples| Playing::new(samples, self.config.rate));
    }

    /// Whether the room is on hold.
    pub fn on_hold(&self) -> bool {
        self.hold.is_some()
    }

    /// Plays `sound` once to everyone in the room, on top of the mix (replacing one playing).
    pub fn announce(&mut self, sound: Arc<[i16]>) {
        self.announcement = Some(Playing::new(sound, self.config.rate));
    }

    /// Sheds (or restores) work under overload; see [`Degradation`].
    pub fn set_degradation(&mut self, degradation: Degradation) {
        self.degradation = degradation;
    }

    /// A leg's mixer-side state.
    pub fn status(&self, id: LegId) -> Option<LegStatus> {
        self.leg_index(id)
            .map(|i| &self.legs[i])
            .map(|l| LegStatus {
                controls: l.controls,
                talking: l.talking(),
                mixed: l.mixed,
                aec_active: l.aec_active(),
                echo_detected: l.echo_detected(),
            })
    }

    /// Removes a leg; unknown ids are ignored.
    pub fn remove_leg(&mut self, id: LegId) {
        if let Some(i) = self.leg_index(id) {
            self.legs.remove(i);
            self.fit_mix_rate();
            self.related = self.legs.iter().any(|l| !l.relations.is_default());
        }
    }

    /// Queues one received audio payload of leg `id`.
    pub fn handle_audio(&mut self, id: LegId, info: PacketInfo, payload: &[u8]) {
        if let Some(leg) = self.leg_mut(id) {
            leg.queue(info, payload);
        }
    }

    /// Whether leg `id`'s jitter buffer holds the frame it plays next (the mixer thread reads
    /// the rest of the leg's socket when not; see `RtpIntake::poll`). An unknown leg is ready.
    pub fn input_ready(&self, id: LegId) -> bool {
        self.leg_index(id)
            .is_none_or(|i| self.legs[i].jitter.next_ready())
    }

    /// Each leg's receive quality: jitter buffer counters (its `concealed` excludes frames FEC
    /// rebuilt) and FEC recoveries.
    pub fn quality(&self) -> impl Iterator<Item = (LegId, LegQuality)> + '_ {
        self.legs.iter().map(|l| {
            let mut jitter = l.jitter.stats();
            jitter.concealed = jitter.concealed.saturating_sub(l.fec_recovered);
            let sender = l.hears.then(|| l.sender.stats());
            (
                l.id,
                LegQuality {
                    jitter,
                    fec_recovered: l.fec_recovered,
                    sender,
                },
            )
        })
    }

    fn stages(&self) -> Stages {
        Stages {
            audio: self.config.audio,
            room_aec: self.aec,
            degradation: self.degradation,
        }
    }

    /// Runs one 20 ms step at `now`: every leg's next frame in, one packet per leg out.
    pub fn tick(&mut self, now: Instant) {
        if self.now.is_none_or(|last| now > last) {
            self.now = Some(now);
        }
        self.ticks += 1;
        self.encodes = 0;
        let stages = self.stages();
        self.take_inputs(stages);
        self.select_talkers();
        for leg in &mut self.legs {
            let done = if leg.mixed {
                leg.finish_input(stages)
            } else {
                leg.idle_input(stages, self.ticks + leg.id.0)
            };
            if done.is_err() {
                self.processing_errors += 1;
            }
        }

        self.acc.fill(0);
        let related = self.related;
        for leg in self.legs.iter().filter(|l| l.mixed) {
            if !related || leg.relations.public() {
                mix::accumulate(&mut self.acc, &leg.input);
            }
        }
        if let Some(hold) = &mut self.hold {
            hold.next_into(&mut self.sound, true);
        } else if let Some(announcement) = &mut self.announcement {
            if !announcement.next_into(&mut self.sound, false) {
                self.announcement = None;
            }
            mix::accumulate(&mut self.acc, &self.sound);
        }
        if related {
            self.own_mixes();
        }
        self.render_mix();
        if let Some(up) = self.mix_up.as_mut().filter(|_| self.recording) {
            up.process(&self.mix, &mut self.recorded);
        }

        self.route();
        self.render_shared();
        self.send(stages);
        if self.ticks.is_multiple_of(LEVELS_EVERY_TICKS) {
            self.report_levels();
        }
    }

    /// Queues the talking legs' peak levels, if any leg talks; every leg's peak starts over.
    fn report_levels(&mut self) {
        let mut levels = Vec::new();
        for leg in &mut self.legs {
            let peak = leg.take_peak_db();
            if leg.talking() {
                levels.push((leg.id, peak));
            }
        }
        if !levels.is_empty() {
            self.events.push_back(RoomEvent::Levels(levels));
        }
    }

    fn take_inputs(&mut self, stages: Stages) {
        for leg in &mut self.legs {
            if leg.take_input().is_err() {
                self.codec_errors += 1;
            }
            self.changes.clear();
            if leg.process_input(stages, &mut self.changes).is_err() {
                self.processing_errors += 1;
            }
            if self.tracks {
                leg.record_track();
            }
            for change in &self.changes {
                self.events.push_back(match change {
                    LegChange::Talk(Talk::Started) => RoomEvent::Talking(leg.id),
                    LegChange::Talk(Talk::Stopped) => RoomEvent::StoppedTalking(leg.id),
                    LegChange::Aec(active) => RoomEvent::EchoCancellation(leg.id, *active),
                });
            }
        }
    }

    /// Marks the `top_k` loudest candidates as mixed; last tick's talkers get a 6 dB edge so
    /// that close talkers do not flap in and out.
    fn select_talkers(&mut self) {
        self.ranking.clear();
        self.whisperers.clear();
        for (i, leg) in self.legs.iter().enumerate() {
            if let Some(level) = leg.candidate().filter(|_| self.hold.is_none()) {
                if self.related && !leg.relations.public() {
                    // Heard by only some: mixed for them whenever it talks, outside top_k.
                    self.whisperers.push(i);
                } else {
                    self.ranking
                        .push((level + if leg.mixed { 6.0 } else { 0.0 }, i));
                }
            }
        }
        let k = match self.config.audio.top_k {
            0 => self.ranking.len(),
            k => k.min(self.ranking.len()),
        };
        if k < self.ranking.len() {
            self.ranking
                .select_nth_unstable_by(k, |a, b| b.0.total_cmp(&a.0));
            self.ranking.truncate(k);
        }
        for leg in &mut self.legs {
            leg.mixed = false;
        }
        for &i in self
            .ranking
            .iter()
            .map(|(_, i)| i)
            .chain(self.whisperers.iter())
        {
            self.legs[i].mixed = true;
        }
    }

    /// The room's mix of this tick (what a recording of the whole room gets): the shared sum,
    /// with the whispers when `recording.include_whispers` asked for them.
    fn render_mix(&mut self) {
        if self.record_whispers && self.recording && !self.whisperers.is_empty() {
            self.own_scratch.clear();
            self.own_scratch.extend_from_slice(&self.acc);
            for &j in &self.whisperers {
                mix::accumulate(&mut self.own_scratch, &self.legs[j].input);
            }
            mix::widen(&self.own_scratch, 1.0, &mut self.scratch);
        } else {
            mix::widen(&self.acc, 1.0, &mut self.scratch);
        }
        self.mix_limiter.process(&self.scratch, &mut self.mix);
    }

    /// Works out what each leg with relations, or whispered to, hears this tick: its own mix,
    /// summed into the leg (`hears_own_mix`). Every other leg hears the shared sum as usual.
    fn own_mixes(&mut self) {
        for i in 0..self.legs.len() {
            let listener = &self.legs[i];
            let (id, hears) = (listener.id, &listener.relations.hears);
            let whispered = self.whisperers.iter().any(|&j| {
                let talker = &self.legs[j];
                j != i && talker.relations.heard_by.includes(id) && hears.includes(talker.id)
            });
            if *hears == Audience::All && !whispered {
                self.legs[i].hears_own_mix = false;
                continue;
            }
            let sum = &mut self.own_scratch;
            sum.clear();
            if *hears == Audience::All {
                // The room's sum, without itself when it is in it.
                sum.extend_from_slice(&self.acc);
                if listener.mixed && listener.relations.public() {
                    for (a, &s) in sum.iter_mut().zip(&listener.input) {
                        *a -= i32::from(s);
                    }
                }
            } else {
                sum.resize(self.acc.len(), 0);
                for (j, talker) in self.legs.iter().enumerate() {
                    if j != i
                        && talker.mixed
                        && talker.relations.public()
                        && hears.includes(talker.id)
                    {
                        mix::accumulate(sum, &talker.input);
                    }
                }
            }
            for &j in &self.whisperers {
                let talker = &self.legs[j];
                if j != i && talker.relations.heard_by.includes(id) && hears.includes(talker.id) {
                    mix::accumulate(sum, &talker.input);
                }
            }
            let leg = &mut self.legs[i];
            leg.own_mix.clear();
            leg.own_mix.extend_from_slice(&self.own_scratch);
            leg.hears_own_mix = true;
        }
    }

    /// Decides what each leg hears, creating shared outputs as needed (and dropping those
    /// unused for a second).
    fn route(&mut self) {
        let ticks = self.ticks;
        let related = self.related;
        self.shared
            .retain(|s| ticks - s.last_used <= SHARED_IDLE_TICKS);
        for leg in &mut self.legs {
            let own = leg.hears_own_mix && related;
            let in_sum = leg.mixed && (!related || leg.relations.public());
            leg.route = if !leg.hears {
                Route::Nothing
            } else if leg.prompt.is_some()
                || ((in_sum || own) && !leg.controls.deaf)
                || !leg.encoding.codec.codec.shares_encoding()
            {
                Route::Private
            } else {
                let content = if leg.controls.deaf {
                    Content::Silence
                } else if self.hold.is_some() {
                    Content::Hold
                } else {
                    Content::Mix((leg.controls.output_gain_db * 100.0).round() as i32)
                };
                let codec = leg.encoding.codec;
                let found = self.shared.iter().position(|s| {
                    s.codec == codec.codec && s.opus == codec.opus && s.content == content
                });
                let index = match found {
                    Some(i) => i,
                    None => match Encoding::new(codec, self.config.rate, self.mix_rate) {
                        Ok(encoding) => {
                            let frame = vec![0; self.mix.len()];
                            let limiter = Limiter::new(self.config.audio.limiter);
                            self.shared.push(SharedOutput {
                                codec: codec.codec,
                                opus: codec.opus,
                                content,
                                encoding,
                                limiter,
                                frame,
                                levels: [0.0; 2],
                                last_used: 0,
                            });
                            self.shared.len() - 1
                        }
                        Err(_) => {
                            self.codec_errors += 1;
                            leg.route = Route::Nothing;
                            continue;
                        }
                    },
                };
                self.shared[index].last_used = self.ticks;
                Route::Shared(index)
            };
        }
    }

    /// Renders and encodes each shared output used this tick.
    fn render_shared(&mut self) {
        for output in self.shared.iter_mut().filter(|s| s.last_used == self.ticks) {
            match output.content {
                Content::Silence => output.frame.fill(0),
                Content::Hold => output.frame.copy_from_slice(&self.sound),
                Content::Mix(0) => output.frame.copy_from_slice(&self.mix),
                Content::Mix(centi_db) => {
                    mix::widen(
                        &self.acc,
                        db_to_gain(centi_db as f32 / 100.0),
                        &mut self.scratch,
                    );
                    output.limiter.process(&self.scratch, &mut output.frame);
                }
            }
            self.encodes += 1;
            if output.encoding.encode(&output.frame).is_err() {
                self.codec_errors += 1;
            }
            output.levels = half_levels(output.encoding.native());
        }
    }

    /// Builds each leg's packet (encoding private frames) and feeds its echo reference.
    fn send(&mut self, stages: Stages) {
        let related = self.related;
        for leg in &mut self.legs {
            let step = leg.encoding.codec.codec.timestamp_step();
            let shared = match leg.route {
                Route::Nothing => continue,
                Route::Private => {
                    let gain = db_to_gain(leg.controls.output_gain_db);
                    if leg.controls.deaf {
                        self.scratch.fill(0.0);
                    } else if self.hold.is_some() {
                        mix::widen_frame(&self.sound, &mut self.scratch);
                    } else if related && leg.hears_own_mix {
                        mix::widen(&leg.own_mix, gain, &mut self.scratch);
                    } else if leg.mixed && (!related || leg.relations.public()) {
                        mix::minus_own(&self.acc, &leg.input, gain, &mut self.scratch);
                    } else {
                        mix::widen(&self.acc, gain, &mut self.scratch);
                    }
                    if leg.prompt_frame(&mut self.output) {
                        mix::add_frame(&mut self.scratch, &self.output);
                    }
                    leg.limiter.process(&self.scratch, &mut self.output);
                    self.encodes += 1;
                    if leg.encoding.encode(&self.output).is_err() {
                        self.codec_errors += 1;
                    }
                    leg.sender
                        .write(&leg.encoding.payload, step, &mut leg.packet);
                    None
                }
                Route::Shared(index) => {
                    let output = &self.shared[index];
                    leg.sender
                        .write(&output.encoding.payload, step, &mut leg.packet);
                    Some((output.encoding.native(), output.levels))
                }
            };
            if leg.sent(shared, stages).is_err() {
                self.processing_errors += 1;
            }
        }
    }

    /// Accounts for `ticks` ticks the driver could not run (it fell too far behind): every
    /// outgoing stream's timestamp jumps by that much audio, so receivers play the gap as the
    /// time it was instead of drifting.
    pub fn skip(&mut self, ticks: u32) {
        for leg in &mut self.legs {
            let step = leg.encoding.codec.codec.timestamp_step();
            leg.sender.skip(step.wrapping_mul(ticks));
        }
    }

    /// The next event of the last ticks, oldest first.
    pub fn poll_event(&mut self) -> Option<RoomEvent> {
        self.events.pop_front()
    }

    /// Codec errors since the last call (undecodable payloads, failed encodes), for metrics.
    pub fn take_codec_errors(&mut self) -> u64 {
        std::mem::take(&mut self.codec_errors)
    }

    /// Voice processing errors since the last call, for metrics.
    pub fn take_processing_errors(&mut self) -> u64 {
        std::mem::take(&mut self.processing_errors)
    }

    /// Frames encoded in the last tick (private and shared).
    pub fn encodes_last_tick(&self) -> usize {
        self.encodes
    }

    /// The legs mixed in the last tick.
    pub fn mixed_talkers(&self) -> impl Iterator<Item = LegId> + '_ {
        self.legs.iter().filter(|l| l.mixed).map(|l| l.id)
    }

    /// The RTP packet each leg that hears should receive for the last tick.
    pub fn packets(&self) -> impl Iterator<Item = (LegId, &[u8])> {
        self.legs
            .iter()
            .filter(|l| l.route != Route::Nothing)
            .map(|l| (l.id, l.packet.as_slice()))
    }

    /// The whole room's mix of the last tick (the mixed talkers, limited), at the room's rate,
    /// while [`Room::set_recording`] is on (silence otherwise, when the room mixes at a lower
    /// rate).
    pub fn mix(&self) -> &[i16] {
        if self.mix_up.is_some() {
            &self.recorded
        } else {
            &self.mix
        }
    }

    /// Keeps the room's mix at the room's rate for [`Room::mix`] and, with `tracks`, each
    /// leg's input for per-leg recording tracks (or stops both).
    pub fn set_recording(&mut self, on: bool, tracks: bool) {
        self.recording = on;
        self.tracks = on && tracks;
        if !on {
            self.recorded.fill(0);
        }
    }

    /// Each leg's input this tick, after gain and echo cancellation but before noise
    /// suppression and level control (what the leg said, as a per-leg track records it), and
    /// where it came from. Empty unless [`Room::set_recording`] asked for tracks.
    pub fn tracks(&self) -> impl Iterator<Item = (LegId, FrameSource, &[i16])> {
        self.legs
            .iter()
            .filter(|_| self.tracks)
            .map(|l| (l.id, l.source, l.track.as_slice()))
    }
}

#[cfg(test)]
mod tests;
