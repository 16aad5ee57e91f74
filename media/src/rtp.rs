//! RTP packets (RFC 3550 section 5.1): parse with validation, and build our own.

use crate::error::MediaError;

/// The fixed RTP header length.
pub const HEADER_LEN: usize = 12;

/// A parsed RTP packet borrowing its payload from the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    /// Marker bit: start of a talk spurt or of a DTMF event.
    pub marker: bool,
    /// Payload type, 0..=127.
    pub payload_type: u8,
    /// Sequence number.
    pub sequence: u16,
    /// Media timestamp.
    pub timestamp: u32,
    /// Synchronisation source.
    pub ssrc: u32,
    /// Payload without padding.
    pub payload: &'a [u8],
}

impl<'a> RtpPacket<'a> {
    /// Parses and validates an RTP datagram: version 2, CSRC list, extension and padding lengths
    /// within the datagram, and not an RTCP packet sent to the RTP port (RFC 5761 section 4).
    pub fn parse(buf: &'a [u8]) -> Result<RtpPacket<'a>, MediaError> {
        if buf.len() < HEADER_LEN {
            return Err(MediaError::Truncated);
        }
        if buf[0] >> 6 != 2 {
            return Err(MediaError::BadVersion);
        }
        let payload_type = buf[1] & 0x7F;
        if (72..=76).contains(&payload_type) {
            return Err(MediaError::RtcpOnRtpPort);
        }
        let csrc_count = usize::from(buf[0] & 0x0F);
        let mut offset = HEADER_LEN + 4 * csrc_count;
        if buf[0] & 0x10 != 0 {
            let ext = buf.get(offset..offset + 4).ok_or(MediaError::Truncated)?;
            let words = usize::from(u16::from_be_bytes([ext[2], ext[3]]));
            offset += 4 + 4 * words;
        }
        let mut end = buf.len();
        if buf[0] & 0x20 != 0 {
            let pad = usize::from(buf[buf.len() - 1]);
            if pad == 0 || pad > end.saturating_sub(offset) {
                return Err(MediaError::BadPadding);
            }
            end -= pad;
        }
        if offset > end {
            return Err(MediaError::Truncated);
        }
        Ok(RtpPacket {
            marker: buf[1] & 0x80 != 0,
            payload_type,
            sequence: u16::from_be_bytes([buf[2], buf[3]]),
            timestamp: u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]),
            ssrc: u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]),
            payload: &buf[offset..end],
        })
    }
}

/// The sending side of one RTP stream: our SSRC, sequence and timestamp.
#[derive(Debug, Clone)]
pub struct RtpSender {
    ssrc: u32,
    sequence: u16,
    timestamp: u32,
    payload_type: u8,
    first: bool,
    packets: u32,
    octets: u32,
}

/// What an RTCP sender report tells of our stream (RFC 3550 6.4.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SenderStats {
    /// Our SSRC.
    pub ssrc: u32,
    /// Packets sent (wrapping).
    pub packets: u32,
    /// Payload octets sent (wrapping).
    pub octets: u32,
    /// The RTP timestamp of the next packet.
    pub timestamp: u32,
}

impl RtpSender {
    /// A new stream; `seed` gives the random SSRC, first sequence and timestamp (RFC 3550 5.1).
    pub fn new(payload_type: u8, seed: u64) -> RtpSender {
        RtpSender {
            ssrc: seed as u32,
            sequence: (seed >> 32) as u16,
            timestamp: (seed >> 16) as u32,
            payload_type,
            first: true,
            packets: 0,
            octets: 0,
        }
    }

    /// Counts and position of the stream so far, for RTCP.
    pub fn stats(&self) -> SenderStats {
        SenderStats {
            ssrc: self.ssrc,
            packets: self.packets,
            octets: self.octets,
            timestamp: self.timestamp,
        }
    }

    /// Our SSRC.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// Switches the payload type (a re-offer changed the codec); SSRC and sequence go on.
    pub fn set_payload_type(&mut self, payload_type: u8) {
        self.payload_type = payload_type;
    }

    /// Moves the timestamp on by `samples` without sending (time the sender skipped), and
    /// marks the next packet as the start of a talkspurt so the receiver resynchronises.
    pub fn skip(&mut self, samples: u32) {
        self.timestamp = self.timestamp.wrapping_add(samples);
        self.first = true;
    }

    /// Writes the next packet carrying `samples` samples of `payload` into `out` (cleared first).
    pub fn write(&mut self, payload: &[u8], samples: u32, out: &mut Vec<u8>) {
        out.clear();
        out.push(0x80);
        out.push(self.payload_type | if self.first { 0x80 } else { 0 });
        out.extend_from_slice(&self.sequence.to_be_bytes());
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        out.extend_from_slice(payload);
        self.first = false;
        self.packets = self.packets.wrapping_add(1);
        self.octets = self.octets.wrapping_add(payload.len() as u32);
        self.sequence = self.sequence.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(samples);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_then_parse() {
        let mut sender = RtpSender::new(0, 0x1234_5678_9abc_def0);
        let mut buf = Vec::new();
        sender.write(&[1, 2, 3], 160, &mut buf);
        let first = buf.clone();
        let p = RtpPacket::parse(&first).unwrap();
        assert!(p.marker);
        assert_eq!(
            (p.payload_type, p.ssrc, p.payload),
            (0, sender.ssrc(), &[1u8, 2, 3][..])
        );
        sender.write(&[4], 160, &mut buf);
        let q = RtpPacket::parse(&buf).unwrap();
        assert_eq!(q.sequence, p.sequence.wrapping_add(1));
        assert_eq!(q.timestamp, p.timestamp.wrapping_add(160));
        assert!(!q.marker);
    }

    #[test]
    fn rejects_bad_packets() {
        assert_eq!(RtpPacket::parse(&[0x80; 5]), Err(MediaError::Truncated));
        assert_eq!(RtpPacket::parse(&[0x40; 20]), Err(MediaError::BadVersion));
        let mut rtcp = vec![0x80, 200, 0, 6];
        rtcp.extend_from_slice(&[0; 24]);
        assert_eq!(RtpPacket::parse(&rtcp), Err(MediaError::RtcpOnRtpPort));
        let mut padded = vec![0xA0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 9, 9, 50];
        assert_eq!(RtpPacket::parse(&padded), Err(MediaError::BadPadding));
        padded[14] = 2;
        assert_eq!(RtpPacket::parse(&padded).unwrap().payload, &[9]);
        let csrc_beyond = [0x8F, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0];
        assert_eq!(RtpPacket::parse(&csrc_beyond), Err(MediaError::Truncated));
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            if let Ok(p) = RtpPacket::parse(&bytes) {
                proptest::prop_assert!(p.payload.len() <= bytes.len());
            }
        }
    }
}
