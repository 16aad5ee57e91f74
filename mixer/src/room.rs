//! The room core (pure): a room's legs, their jitter buffers and codecs, and the 20 ms tick that
//! turns each leg's next packet into everyone else's next packet.
//!
//! Drive it with [`Room::handle_audio`] as packets arrive and [`Room::tick`] once per 20 ms;
//! after a tick, [`Room::packets`] yields one RTP packet per leg to send and [`Room::mix`] is the
//! frame a recorder of the whole room receives.

use std::sync::Arc;

use roundtable_media::MediaError;
use roundtable_media::codec::{Decoder, Encoder, LegCodec};
use roundtable_media::jitter::{JitterBuffer, JitterConfig, PacketInfo, Playout};
use roundtable_media::socket::LegQuality;
use roundtable_media::resample::{Resampler, frame_len};
use roundtable_media::rtp::RtpSender;

use crate::mix;

/// Most packets a leg's jitter buffer holds (1 s).
const JITTER_CAPACITY: usize = 50;

/// What every room of a mixer is set up with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomConfig {
    /// The internal rate, 8000, 16000 or 48000 Hz (`audio.rate`).
    pub rate: u32,
    /// Jitter buffer bounds (`media.jitter_min_ms`, `media.jitter_max_ms`).
    pub jitter: JitterConfig,
}

impl RoomConfig {
    /// A room at `rate` with the default jitter bounds.
    pub fn at(rate: u32) -> RoomConfig {
        RoomConfig { rate, jitter: JitterConfig::default() }
    }
}

/// Identifies a leg within the whole service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LegId(pub u64);

impl std::fmt::Display for LegId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A leg's codec pipeline: payload -> codec-rate audio -> room-rate audio, and back.
#[derive(Debug)]
struct Pipeline {
    codec: LegCodec,
    decoder: Decoder,
    encoder: Encoder,
    /// Codec rate to room rate (None when equal).
    up: Resampler,
    /// Room rate to codec rate.
    down: Resampler,
    /// One frame at the codec's rate, both directions.
    native: Vec<i16>,
}

impl Pipeline {
    fn new(codec: LegCodec, room_rate: u32) -> Result<Pipeline, MediaError> {
        let decoder = Decoder::new(codec.codec, room_rate)?;
        let encoder = Encoder::new(codec.codec, room_rate, codec.opus)?;
        let rate = codec.codec.audio_rate(room_rate);
        Ok(Pipeline {
            codec,
            decoder,
            encoder,
            up: Resampler::new(rate, room_rate)?,
            down: Resampler::new(room_rate, rate)?,
            native: vec![0; frame_len(rate)],
        })
    }
}

#[derive(Debug)]
struct Leg {
    id: LegId,
    pipeline: Pipeline,
    jitter: JitterBuffer<Vec<u8>>,
    sender: RtpSender,
    /// This tick's input at the room rate.
    input: Vec<i16>,
    encoded: Vec<u8>,
    packet: Vec<u8>,
    /// Whether the leg receives the mix (false on hold).
    hears: bool,
    /// Whether the leg's audio goes into the mix (false on hold or when it only listens).
    heard: bool,
    /// A prompt playing to this leg instead of the mix, and how far it got.
    prompt: Option<(Arc<[i16]>, usize)>,
    /// Lost frames Opus FEC rebuilt.
    fec_recovered: u64,
}

impl Leg {
    /// Decodes (or conceals) this tick's input and brings it to the room rate.
    fn take_input(&mut self) -> Result<(), MediaError> {
        let p = &mut self.pipeline;
        let result = match self.jitter.pop() {
            Playout::Packet(payload) => p.decoder.decode(&payload, &mut p.native),
            Playout::Missing => {
                let next = self.jitter.upcoming().map(Vec::as_slice);
                if p.decoder.conceal(next, &mut p.native) {
                    self.fec_recovered += 1;
                }
                Ok(())
            }
            Playout::Idle => {
                p.native.fill(0);
                Ok(())
            }
        };
        if self.heard {
            p.up.process(&p.native, &mut self.input);
        } else {
            self.input.fill(0);
        }
        result
    }

    /// Encodes `output` (room rate) into this tick's RTP packet.
    fn send(&mut self, output: &[i16]) -> Result<(), MediaError> {
        let p = &mut self.pipeline;
        p.down.process(output, &mut p.native);
        let result = p.encoder.encode(&p.native, &mut self.encoded);
        self.sender.write(&self.encoded, p.codec.codec.timestamp_step(), &mut self.packet);
        result
    }
}

/// One conference room's media state at a fixed internal rate.
#[derive(Debug)]
pub struct Room {
    rate: u32,
    jitter: JitterConfig,
    legs: Vec<Leg>,
    acc: Vec<i32>,
    output: Vec<i16>,
    mix: Vec<i16>,
    /// Payloads that failed to decode or frames that failed to encode, since the last read.
    codec_errors: u64,
}

impl Room {
    /// An empty room.
    pub fn new(config: RoomConfig) -> Room {
        let frame = frame_len(config.rate);
        Room {
            rate: config.rate,
            jitter: config.jitter,
            legs: Vec::new(),
            acc: vec![0; frame],
            output: vec![0; frame],
            mix: vec![0; frame],
            codec_errors: 0,
        }
    }

    /// The room's internal rate.
    pub fn rate(&self) -> u32 {
        self.rate
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
        self.remove_leg(id);
        let pipeline = Pipeline::new(codec, self.rate)?;
        self.legs.push(Leg {
            id,
            pipeline,
            jitter: JitterBuffer::new(self.jitter, codec.codec.clock_rate(), JITTER_CAPACITY),
            sender: RtpSender::new(codec.payload_type, seed),
            input: vec![0; frame_len(self.rate)],
            encoded: Vec::with_capacity(1500),
            packet: Vec::with_capacity(1500),
            hears: true,
            heard: true,
            prompt: None,
            fec_recovered: 0,
        });
        Ok(())
    }

    /// Plays `samples` (at the room's rate) to a leg instead of the mix, from the next tick,
    /// replacing any prompt already playing.
    pub fn play(&mut self, id: LegId, samples: Arc<[i16]>) {
        if let Some(leg) = self.legs.iter_mut().find(|l| l.id == id) {
            leg.prompt = Some((samples, 0));
        }
    }

    /// Stops a leg's prompt; it hears the mix again.
    pub fn stop_prompt(&mut self, id: LegId) {
        if let Some(leg) = self.legs.iter_mut().find(|l| l.id == id) {
            leg.prompt = None;
        }
    }

    /// Changes a leg's codec and whether it hears and is heard (hold, resume, re-offers). A new
    /// codec gets a fresh pipeline; on error the leg keeps its old one.
    pub fn update_leg(&mut self, id: LegId, codec: LegCodec, hears: bool, heard: bool) -> Result<(), MediaError> {
        let (rate, jitter) = (self.rate, self.jitter);
        let Some(leg) = self.legs.iter_mut().find(|l| l.id == id) else { return Ok(()) };
        leg.hears = hears;
        leg.heard = heard;
        if leg.pipeline.codec != codec {
            let old_clock = leg.pipeline.codec.codec.clock_rate();
            leg.pipeline = Pipeline::new(codec, rate)?;
            leg.sender.set_payload_type(codec.payload_type);
            if old_clock != codec.codec.clock_rate() {
                leg.jitter = JitterBuffer::new(jitter, codec.codec.clock_rate(), JITTER_CAPACITY);
            }
        }
        Ok(())
    }

    /// Removes a leg; unknown ids are ignored.
    pub fn remove_leg(&mut self, id: LegId) {
        self.legs.retain(|l| l.id != id);
    }

    /// Queues one received audio payload of leg `id`.
    pub fn handle_audio(&mut self, id: LegId, info: PacketInfo, payload: Vec<u8>) {
        if let Some(leg) = self.legs.iter_mut().find(|l| l.id == id) {
            leg.jitter.push(info, payload);
        }
    }

    /// Each leg's receive quality: jitter buffer counters (its `concealed` excludes frames FEC
    /// rebuilt) and FEC recoveries.
    pub fn quality(&self) -> impl Iterator<Item = (LegId, LegQuality)> + '_ {
        self.legs.iter().map(|l| {
            let mut jitter = l.jitter.stats();
            jitter.concealed = jitter.concealed.saturating_sub(l.fec_recovered);
            let sender = l.hears.then(|| l.sender.stats());
            (l.id, LegQuality { jitter, fec_recovered: l.fec_recovered, sender })
        })
    }

    /// Runs one 20 ms step: every leg's next frame in, one N-1 packet per leg out.
    pub fn tick(&mut self) {
        self.acc.fill(0);
        for leg in &mut self.legs {
            if leg.take_input().is_err() {
                self.codec_errors += 1;
            }
            mix::accumulate(&mut self.acc, &leg.input);
        }
        mix::total(&self.acc, &mut self.mix);
        let frame = self.output.len();
        for leg in self.legs.iter_mut().filter(|l| l.hears) {
            mix::minus_own(&self.acc, &leg.input, &mut self.output);
            if let Some((samples, position)) = &mut leg.prompt {
                let chunk = samples.get(*position..).unwrap_or_default();
                let n = chunk.len().min(frame);
                self.output[..n].copy_from_slice(&chunk[..n]);
                self.output[n..].fill(0);
                *position += frame;
                if *position >= samples.len() {
                    leg.prompt = None;
                }
            }
            if leg.send(&self.output).is_err() {
                self.codec_errors += 1;
            }
        }
    }

    /// Codec errors since the last call (undecodable payloads, failed encodes), for metrics.
    pub fn take_codec_errors(&mut self) -> u64 {
        std::mem::take(&mut self.codec_errors)
    }

    /// The RTP packet each leg that hears should receive for the last tick.
    pub fn packets(&self) -> impl Iterator<Item = (LegId, &[u8])> {
        self.legs.iter().filter(|l| l.hears).map(|l| (l.id, l.packet.as_slice()))
    }

    /// The whole room's mix of the last tick, at the room's rate.
    pub fn mix(&self) -> &[i16] {
        &self.mix
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use roundtable_media::codec::Codec;
    use roundtable_media::rtp::RtpPacket;

    fn tone(rate: u32, freq: f64, n0: usize) -> Vec<i16> {
        (0..frame_len(rate))
            .map(|i| (8000.0 * (2.0 * std::f64::consts::PI * freq * (n0 + i) as f64 / f64::from(rate)).sin()) as i16)
            .collect()
    }

    /// Header fields of packet `seq` of a 20 ms stream with RTP clock `clock`, arriving now.
    fn info(seq: u16, clock: u32) -> PacketInfo {
        PacketInfo { sequence: seq, timestamp: u32::from(seq) * clock / 50, ssrc: 9, marker: false, arrival: std::time::Instant::now() }
    }

    fn energy(frame: &[i16]) -> f64 {
        frame.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / frame.len() as f64
    }

    /// Decodes what leg `i` (in `packets()` order) was sent in the last tick, at the codec rate.
    fn heard(room: &Room, decoders: &mut [Decoder]) -> Vec<Vec<i16>> {
        room.packets()
            .zip(decoders.iter_mut())
            .map(|((_, packet), decoder)| {
                let p = RtpPacket::parse(packet).unwrap();
                let mut out = vec![0i16; decoder.frame_len()];
                decoder.decode(p.payload, &mut out).unwrap();
                out
            })
            .collect()
    }

    #[test]
    fn a_leg_does_not_hear_itself() {
        let mut room = Room::new(RoomConfig::at(16000));
        room.add_leg(LegId(1), LegCodec::plain(Codec::Pcmu), 1).unwrap();
        room.add_leg(LegId(2), LegCodec::plain(Codec::Pcma), 2).unwrap();
        let mut decoders = [Decoder::new(Codec::Pcmu, 16000).unwrap(), Decoder::new(Codec::Pcma, 16000).unwrap()];
        let mut encoder = Encoder::new(Codec::Pcmu, 16000, Default::default()).unwrap();
        let mut encoded = Vec::new();
        let mut last = Vec::new();
        for seq in 0..6u16 {
            encoder.encode(&tone(8000, 440.0, 160 * seq as usize), &mut encoded).unwrap();
            room.handle_audio(LegId(1), info(seq, 8000), encoded.clone());
            room.tick();
            last = heard(&room, &mut decoders);
        }
        assert!(energy(&last[0]) < 10.0, "leg 1 hears only silence");
        assert!(energy(&last[1]) > 1e6, "leg 2 hears leg 1's tone");
        assert!(energy(room.mix()) > 1e6);

        // On hold leg 1 is neither heard nor sent anything; leg 2 hears silence.
        room.update_leg(LegId(1), LegCodec::plain(Codec::Pcmu), false, false).unwrap();
        for seq in 6..10u16 {
            encoder.encode(&tone(8000, 440.0, 160 * seq as usize), &mut encoded).unwrap();
            room.handle_audio(LegId(1), info(seq, 8000), encoded.clone());
            room.tick();
        }
        let packets: Vec<_> = room.packets().collect();
        assert_eq!(packets.len(), 1);
        let last = heard(&room, &mut decoders[1..]);
        assert!(energy(&last[0]) < 100.0, "the held leg is not heard");
    }

    #[test]
    fn legs_of_different_codecs_hear_each_other_at_their_own_rate() {
        let mut room = Room::new(RoomConfig::at(16000));
        let codecs = [Codec::Pcmu, Codec::G722, Codec::Opus];
        for (i, codec) in codecs.iter().enumerate() {
            room.add_leg(LegId(i as u64), LegCodec::plain(*codec), i as u64).unwrap();
        }
        let mut decoders: Vec<Decoder> = codecs.iter().map(|c| Decoder::new(*c, 16000).unwrap()).collect();
        // Only the G.722 leg speaks: a 1 kHz tone at 16 kHz.
        let mut encoder = Encoder::new(Codec::G722, 16000, Default::default()).unwrap();
        let mut encoded = Vec::new();
        let mut last = Vec::new();
        for seq in 0..15u16 {
            encoder.encode(&tone(16000, 1000.0, 320 * seq as usize), &mut encoded).unwrap();
            room.handle_audio(LegId(1), info(seq, 8000), encoded.clone());
            room.tick();
            last = heard(&room, &mut decoders);
        }
        assert!(energy(&last[0]) > 1e6, "PCMU leg hears it: {}", energy(&last[0]));
        assert!(energy(&last[1]) < 1e3, "the speaker does not: {}", energy(&last[1]));
        assert!(energy(&last[2]) > 1e6, "Opus leg hears it: {}", energy(&last[2]));
        assert_eq!(last[0].len(), 160);
        assert_eq!(last[2].len(), 320);
        // RTP timestamps advance by the codec's clock: 160 for PCMU, 960 for Opus.
        let stamps: Vec<u32> = room.packets().map(|(_, p)| RtpPacket::parse(p).unwrap().timestamp).collect();
        room.tick();
        let next: Vec<u32> = room.packets().map(|(_, p)| RtpPacket::parse(p).unwrap().timestamp).collect();
        let steps: Vec<u32> = next.iter().zip(&stamps).map(|(n, s)| n.wrapping_sub(*s)).collect();
        assert_eq!(steps, [160, 160, 960]);
        assert_eq!(room.take_codec_errors(), 0);
    }

    #[test]
    fn a_prompt_replaces_the_mix_until_it_ends() {
        let mut room = Room::new(RoomConfig::at(8000));
        room.add_leg(LegId(1), LegCodec::plain(Codec::Pcmu), 1).unwrap();
        let prompt: Arc<[i16]> = tone(8000, 1000.0, 0).iter().chain(tone(8000, 1000.0, 160).iter()).copied().collect();
        room.play(LegId(1), prompt);
        let mut decoder = [Decoder::new(Codec::Pcmu, 8000).unwrap()];
        let mut levels = Vec::new();
        for _ in 0..3 {
            room.tick();
            levels.push(energy(&heard(&room, &mut decoder)[0]));
        }
        assert!(levels[0] > 1e6 && levels[1] > 1e6, "{levels:?}");
        assert!(levels[2] < 10.0, "back to the (silent) mix after the prompt: {levels:?}");
    }
}
