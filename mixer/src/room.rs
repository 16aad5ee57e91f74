//! The room core (pure): a room's legs, their jitter buffers and codecs, and the 20 ms tick that
//! turns each leg's next packet into everyone else's next packet.
//!
//! Drive it with [`Room::handle_audio`] as packets arrive and [`Room::tick`] once per 20 ms;
//! after a tick, [`Room::packets`] yields one RTP packet per leg to send and [`Room::mix`] is the
//! frame a recorder of the whole room receives.

use std::sync::Arc;

use roundtable_media::jitter::JitterBuffer;
use roundtable_media::rtp::RtpSender;
use roundtable_media::{FRAME_SAMPLES, Frame, G711};

use crate::mix;

/// Packets of delay the jitter buffer keeps (40 ms).
const JITTER_DEPTH: usize = 2;
/// Most packets a leg's jitter buffer holds (1 s).
const JITTER_CAPACITY: usize = 50;

/// Identifies a leg within the whole service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LegId(pub u64);

impl Default for Room {
    fn default() -> Self {
        Room::new()
    }
}

impl std::fmt::Display for LegId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[derive(Debug)]
struct Leg {
    id: LegId,
    codec: G711,
    jitter: JitterBuffer<Vec<u8>>,
    sender: RtpSender,
    input: Frame,
    encoded: Vec<u8>,
    packet: Vec<u8>,
    /// Whether the leg receives the mix (false on hold).
    hears: bool,
    /// Whether the leg's audio goes into the mix (false on hold or when it only listens).
    heard: bool,
    /// A prompt playing to this leg instead of the mix, and how far it got.
    prompt: Option<(Arc<[i16]>, usize)>,
}

/// One conference room's media state.
#[derive(Debug)]
pub struct Room {
    legs: Vec<Leg>,
    acc: Box<[i32; FRAME_SAMPLES]>,
    output: Box<Frame>,
    mix: Box<Frame>,
}

impl Room {
    /// An empty room.
    pub fn new() -> Room {
        Room {
            legs: Vec::new(),
            acc: Box::new([0; FRAME_SAMPLES]),
            output: Box::new([0; FRAME_SAMPLES]),
            mix: Box::new([0; FRAME_SAMPLES]),
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
    pub fn add_leg(&mut self, id: LegId, codec: G711, seed: u64) {
        self.remove_leg(id);
        self.legs.push(Leg {
            id,
            codec,
            jitter: JitterBuffer::new(JITTER_DEPTH, JITTER_CAPACITY),
            sender: RtpSender::new(codec.payload_type(), seed),
            input: [0; FRAME_SAMPLES],
            encoded: Vec::with_capacity(FRAME_SAMPLES),
            packet: Vec::with_capacity(FRAME_SAMPLES + 12),
            hears: true,
            heard: true,
            prompt: None,
        });
    }

    /// Plays `samples` (8 kHz) to a leg instead of the mix, from the next tick, replacing any
    /// prompt already playing.
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

    /// Changes a leg's codec and whether it hears and is heard (hold, resume, re-offers).
    pub fn update_leg(&mut self, id: LegId, codec: G711, hears: bool, heard: bool) {
        if let Some(leg) = self.legs.iter_mut().find(|l| l.id == id) {
            leg.codec = codec;
            leg.sender.set_payload_type(codec.payload_type());
            leg.hears = hears;
            leg.heard = heard;
        }
    }

    /// Removes a leg; unknown ids are ignored.
    pub fn remove_leg(&mut self, id: LegId) {
        self.legs.retain(|l| l.id != id);
    }

    /// Queues one received audio payload of leg `id`.
    pub fn handle_audio(&mut self, id: LegId, sequence: u16, payload: Vec<u8>) {
        if let Some(leg) = self.legs.iter_mut().find(|l| l.id == id) {
            leg.jitter.push(sequence, payload);
        }
    }

    /// Runs one 20 ms step: every leg's next frame in, one N-1 packet per leg out.
    pub fn tick(&mut self) {
        self.acc.fill(0);
        for leg in &mut self.legs {
            match leg.jitter.pop() {
                Some(payload) if leg.heard => leg.codec.decode(&payload, &mut leg.input),
                _ => leg.input.fill(0),
            }
            mix::accumulate(&mut self.acc, &leg.input);
        }
        mix::total(&self.acc, &mut self.mix);
        for leg in self.legs.iter_mut().filter(|l| l.hears) {
            mix::minus_own(&self.acc, &leg.input, &mut self.output);
            if let Some((samples, position)) = &mut leg.prompt {
                let chunk = samples.get(*position..).unwrap_or_default();
                let n = chunk.len().min(FRAME_SAMPLES);
                self.output[..n].copy_from_slice(&chunk[..n]);
                self.output[n..].fill(0);
                *position += FRAME_SAMPLES;
                if *position >= samples.len() {
                    leg.prompt = None;
                }
            }
            leg.codec.encode(&self.output, &mut leg.encoded);
            leg.sender.write(&leg.encoded, FRAME_SAMPLES as u32, &mut leg.packet);
        }
    }

    /// The RTP packet each leg that hears should receive for the last tick.
    pub fn packets(&self) -> impl Iterator<Item = (LegId, &[u8])> {
        self.legs.iter().filter(|l| l.hears).map(|l| (l.id, l.packet.as_slice()))
    }

    /// The whole room's mix of the last tick.
    pub fn mix(&self) -> &Frame {
        &self.mix
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use roundtable_media::rtp::RtpPacket;

    fn tone(freq: f64, n0: usize) -> Frame {
        let mut f = [0i16; FRAME_SAMPLES];
        for (i, s) in f.iter_mut().enumerate() {
            let t = (n0 + i) as f64 / 8000.0;
            *s = (8000.0 * (2.0 * std::f64::consts::PI * freq * t).sin()) as i16;
        }
        f
    }

    fn energy(frame: &Frame) -> f64 {
        frame.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / FRAME_SAMPLES as f64
    }

    #[test]
    fn a_leg_does_not_hear_itself() {
        let mut room = Room::new();
        room.add_leg(LegId(1), G711::Ulaw, 1);
        room.add_leg(LegId(2), G711::Alaw, 2);
        let mut encoded = Vec::new();
        for seq in 0..4u16 {
            G711::Ulaw.encode(&tone(440.0, 160 * seq as usize), &mut encoded);
            room.handle_audio(LegId(1), seq, encoded.clone());
            room.tick();
        }
        let mut heard = [[0i16; FRAME_SAMPLES]; 2];
        for (i, (_, packet)) in room.packets().enumerate() {
            let p = RtpPacket::parse(packet).unwrap();
            let codec = if p.payload_type == 0 { G711::Ulaw } else { G711::Alaw };
            codec.decode(p.payload, &mut heard[i]);
        }
        assert!(energy(&heard[0]) < 10.0, "leg 1 hears only silence");
        assert!(energy(&heard[1]) > 1e6, "leg 2 hears leg 1's tone");
        assert!(energy(room.mix()) > 1e6);

        // On hold leg 1 is neither heard nor sent anything; leg 2 hears silence.
        room.update_leg(LegId(1), G711::Ulaw, false, false);
        for seq in 4..8u16 {
            G711::Ulaw.encode(&tone(440.0, 160 * seq as usize), &mut encoded);
            room.handle_audio(LegId(1), seq, encoded.clone());
            room.tick();
        }
        let packets: Vec<_> = room.packets().collect();
        assert_eq!(packets.len(), 1);
        let p = RtpPacket::parse(packets[0].1).unwrap();
        let mut frame = [0i16; FRAME_SAMPLES];
        G711::Alaw.decode(p.payload, &mut frame);
        assert!(energy(&frame) < 100.0, "the held leg is not heard");
    }

    #[test]
    fn a_prompt_replaces_the_mix_until_it_ends() {
        let mut room = Room::new();
        room.add_leg(LegId(1), G711::Ulaw, 1);
        let prompt: Arc<[i16]> = tone(1000.0, 0).iter().chain(tone(1000.0, 160).iter()).copied().collect();
        room.play(LegId(1), prompt);
        let mut heard = Vec::new();
        for _ in 0..3 {
            room.tick();
            let (_, packet) = room.packets().next().unwrap();
            let mut frame = [0i16; FRAME_SAMPLES];
            G711::Ulaw.decode(RtpPacket::parse(packet).unwrap().payload, &mut frame);
            heard.push(energy(&frame));
        }
        assert!(heard[0] > 1e6 && heard[1] > 1e6, "{heard:?}");
        assert!(heard[2] < 10.0, "back to the (silent) mix after the prompt: {heard:?}");
    }
}
