//! The tokio side of a leg's media: binding its RTP/RTCP port pair and the receive task that
//! validates RTP and forwards audio payloads to the mixer thread that serves the leg.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::dtmf::{Digit, DtmfDetector};
use crate::error::MediaError;
use crate::jitter::{JitterStats, PacketInfo};
use crate::latch::{Latch, Verdict};
use crate::rtcp::{self, RtcpSession, RtcpStats};
use crate::rtp::SenderStats;
use crate::srtp::{Protector, Unprotector};
use crate::metrics::MediaMetrics;
use crate::ports::PortAllocator;
use crate::rtp::RtpPacket;

/// Packets a leg's inbox holds before the receiver drops (the mixer is 1 s behind by then).
pub const LEG_INBOX: usize = 50;

/// Per-leg counters, shared with the API: packet counts kept by the receive task and the mixer,
/// and the receive quality the mixer publishes every half second.
#[derive(Debug, Default)]
pub struct LegCounters {
    /// Valid RTP packets received.
    pub packets_in: AtomicU64,
    /// RTP packets sent.
    pub packets_out: AtomicU64,
    quality: std::sync::Mutex<LegQuality>,
    rtcp: std::sync::Mutex<RtcpStats>,
}

/// How one leg's incoming audio fares.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LegQuality {
    /// The jitter buffer's counters and gauges.
    pub jitter: JitterStats,
    /// Lost frames rebuilt from Opus in-band FEC (not counted as concealed).
    pub fec_recovered: u64,
    /// Our stream to the leg, for RTCP sender reports (`None` while it hears nothing).
    pub sender: Option<SenderStats>,
}

impl LegCounters {
    /// Reads both packet counters.
    pub fn snapshot(&self) -> (u64, u64) {
        (self.packets_in.load(Ordering::Relaxed), self.packets_out.load(Ordering::Relaxed))
    }

    /// The latest published receive quality.
    pub fn quality(&self) -> LegQuality {
        *self.quality.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes the receive quality (the mixer, twice a second; the lock is uncontended).
    pub fn publish(&self, quality: LegQuality) {
        *self.quality.lock().unwrap_or_else(|p| p.into_inner()) = quality;
    }

    /// What the peer's RTCP reports said so far.
    pub fn rtcp(&self) -> RtcpStats {
        *self.rtcp.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What the receive task hands the mixer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegInput {
    /// One audio packet's payload.
    Audio {
        /// Its RTP header fields and arrival time, for the jitter buffer.
        info: PacketInfo,
        /// Encoded payload.
        payload: Vec<u8>,
    },
    /// RTP now comes from this address: send there (symmetric RTP, RFC 4961).
    Remote(SocketAddr),
}

/// A leg's bound port pair. Whoever holds one of its sockets (the receive task, the mixer
/// thread's clone) also holds a clone of `lease`: the pair goes back to the allocator when the
/// last lease drops, after the sockets closed, so the next leg can bind it.
#[derive(Debug)]
pub struct MediaPorts {
    /// The RTP socket (also used by the mixer thread to send, non-blocking).
    pub rtp: UdpSocket,
    /// The RTCP socket.
    pub rtcp: UdpSocket,
    /// The local RTP address.
    pub local: SocketAddr,
    /// Returns the pair to the allocator when the last clone drops.
    pub lease: Arc<PortLease>,
}

/// A claim on one RTP/RTCP port pair; dropping the last one frees the pair. Keep it after
/// (declared after) the sockets it covers, so they close first.
#[derive(Debug)]
pub struct PortLease {
    port: u16,
    allocator: Arc<Mutex<PortAllocator>>,
}

impl Drop for PortLease {
    fn drop(&mut self) {
        // The lock guards only the allocator's set; a poisoned one still holds a valid set.
        self.allocator.lock().unwrap_or_else(|p| p.into_inner()).release(self.port);
    }
}

impl MediaPorts {
    /// Binds the next free pair on `ip`, skipping ports other programs hold.
    pub fn bind(ip: IpAddr, allocator: &Arc<Mutex<PortAllocator>>) -> Result<MediaPorts, MediaError> {
        let mut skipped = Vec::new();
        let result = loop {
            // The lock guards only the allocator's set; a poisoned one still holds a valid set.
            let port = allocator.lock().unwrap_or_else(|p| p.into_inner()).allocate();
            let port = match port {
                Ok(port) => port,
                Err(e) => break Err(e),
            };
            match bind_pair(ip, port) {
                Ok((rtp, rtcp, local)) => {
                    let lease = Arc::new(PortLease { port, allocator: allocator.clone() });
                    break Ok(MediaPorts { rtp, rtcp, local, lease });
                }
                Err(_) => skipped.push(port),
            }
        };
        let mut guard = allocator.lock().unwrap_or_else(|p| p.into_inner());
        for port in skipped {
            guard.release(port);
        }
        result
    }

}

fn bind_pair(ip: IpAddr, port: u16) -> io::Result<(UdpSocket, UdpSocket, SocketAddr)> {
    let rtp = UdpSocket::bind(SocketAddr::new(ip, port))?;
    let rtcp = UdpSocket::bind(SocketAddr::new(ip, port + 1))?;
    rtp.set_nonblocking(true)?;
    rtcp.set_nonblocking(true)?;
    let local = rtp.local_addr()?;
    Ok((rtp, rtcp, local))
}

/// What a leg's receiver accepts. Updated through a watch channel when a re-offer changes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiveConfig {
    /// The negotiated audio payload type.
    pub audio_pt: u8,
    /// The negotiated telephone-event payload type.
    pub telephone_event: Option<u8>,
    /// No RTP for this long ends the receiver with [`ReceiveEnd::Inactive`]; `None` while the
    /// phone is not expected to send (on hold).
    pub inactivity: Option<Duration>,
    /// The RTP clock rate of the audio codec (RTCP jitter units).
    pub clock_rate: u32,
    /// RTCP shares the RTP port (RFC 5761, `a=rtcp-mux`).
    pub rtcp_mux: bool,
    /// Where to send RTCP until RTCP arrives from somewhere (the SDP's RTP port + 1, its
    /// `a=rtcp` port, or the RTP address with rtcp-mux).
    pub rtcp_remote: SocketAddr,
}

/// Why a receive task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiveEnd {
    /// No RTP within the inactivity timeout.
    Inactive,
    /// The leg was removed.
    Cancelled,
    /// The socket failed.
    SocketError,
}

/// Receives the leg's RTP until cancelled or inactive. Valid audio goes to `inbox` (the mixer
/// drains it each tick), RFC 4733 key presses to `digits`; invalid packets are counted and
/// dropped.
#[allow(clippy::too_many_arguments)]
pub async fn receive(
    ports: (UdpSocket, UdpSocket),
    mut settings: tokio::sync::watch::Receiver<ReceiveConfig>,
    mut srtp: Option<(Unprotector, Protector)>,
    inbox: SyncSender<LegInput>,
    digits: tokio::sync::mpsc::Sender<Digit>,
    counters: Arc<LegCounters>,
    metrics: MediaMetrics,
    cancel: CancellationToken,
) -> ReceiveEnd {
    let mut dtmf = DtmfDetector::default();
    let (Ok(rtp), Ok(rtcp)) = (tokio::net::UdpSocket::from_std(ports.0), tokio::net::UdpSocket::from_std(ports.1))
    else {
        return ReceiveEnd::SocketError;
    };
    let mut buf = vec![0u8; 2048];
    let mut rtcp_buf = vec![0u8; 2048];
    let mut latch = Latch::default();
    let mut config = *settings.borrow_and_update();
    let seed = Arc::as_ptr(&counters) as usize as u64 ^ 0x5eed;
    let mut session = RtcpSession::new(config.clock_rate, seed);
    // Where RTCP from the peer last came from (symmetric RTCP), else where the SDP says.
    let mut rtcp_from: Option<SocketAddr> = None;
    loop {
        let inactivity = async {
            match config.inactivity {
                Some(limit) => tokio::time::sleep(limit).await,
                None => std::future::pending().await,
            }
        };
        let report_at = tokio::time::Instant::from_std(session.next_report(std::time::Instant::now()));
        let (len, from) = tokio::select! {
            r = rtp.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(_) => continue,
            },
            r = rtcp.recv_from(&mut rtcp_buf) => {
                if let Ok((n, from)) = r {
                    if let Some(clear) = unprotect_rtcp(&mut srtp, &rtcp_buf[..n], &metrics) {
                        read_rtcp(&mut session, &clear, &counters, &metrics);
                        rtcp_from = Some(from);
                    }
                }
                continue;
            }
            () = tokio::time::sleep_until(report_at) => {
                let quality = counters.quality();
                let received = latch.ssrc().map(|s| (s, &quality.jitter));
                let mut report = session.report(std::time::Instant::now(), rtcp::ntp_time(std::time::SystemTime::now()), quality.sender, received);
                if let Some((_, protect)) = srtp.as_mut() {
                    report = protect.rtcp(&report).unwrap_or_default();
                }
                let target = match (config.rtcp_mux, latch.remote(), rtcp_from) {
                    (true, Some(latched), _) => latched,
                    (false, _, Some(from)) => from,
                    _ => config.rtcp_remote,
                };
                let socket = if config.rtcp_mux { &rtp } else { &rtcp };
                if !report.is_empty() && socket.send_to(&report, target).await.is_ok() {
                    metrics.rtcp_sent();
                }
                publish_rtcp(&counters, &session);
                continue;
            }
            changed = settings.changed() => {
                if changed.is_err() {
                    return ReceiveEnd::Cancelled;
                }
                config = *settings.borrow_and_update();
                session.set_clock_rate(config.clock_rate);
                continue;
            }
            () = inactivity => return ReceiveEnd::Inactive,
            () = cancel.cancelled() => return ReceiveEnd::Cancelled,
        };
        if config.rtcp_mux && rtcp::is_rtcp(&buf[..len]) {
            if let Some(clear) = unprotect_rtcp(&mut srtp, &buf[..len], &metrics) {
                read_rtcp(&mut session, &clear, &counters, &metrics);
            }
            continue;
        }
        let clear;
        let datagram = match srtp.as_mut().map(|(unprotect, _)| unprotect.rtp(&buf[..len])) {
            None => &buf[..len],
            Some(Ok(decrypted)) => {
                clear = decrypted;
                &clear[..]
            }
            Some(Err(error)) => {
                metrics.invalid(error);
                continue;
            }
        };
        let packet = match RtpPacket::parse(datagram) {
            Ok(p) => p,
            Err(error) => {
                metrics.invalid(error);
                continue;
            }
        };
        if packet.payload_type != config.audio_pt && Some(packet.payload_type) != config.telephone_event {
            metrics.invalid(MediaError::UnexpectedPayloadType(packet.payload_type));
            continue;
        }
        match latch.check(std::time::Instant::now(), from, packet.ssrc, packet.sequence) {
            Verdict::Accept => {}
            Verdict::Latch(addr) => {
                if inbox.try_send(LegInput::Remote(addr)).is_err() {
                    latch.reset();
                }
            }
            Verdict::Hijack => {
                metrics.invalid(MediaError::Hijack);
                continue;
            }
            Verdict::ForeignSsrc => {
                metrics.invalid(MediaError::UnexpectedSsrc(packet.ssrc));
                continue;
            }
        }
        counters.packets_in.fetch_add(1, Ordering::Relaxed);
        metrics.packet_in();
        if packet.payload_type != config.audio_pt {
            if let Some(digit) = dtmf.handle(packet.ssrc, packet.timestamp, packet.payload) {
                // A full digit queue means nobody reads digits for this leg: drop them.
                let _ = digits.try_send(digit);
            }
            continue;
        }
        let info = PacketInfo {
            sequence: packet.sequence,
            timestamp: packet.timestamp,
            ssrc: packet.ssrc,
            marker: packet.marker,
            arrival: std::time::Instant::now(),
        };
        let input = LegInput::Audio { info, payload: packet.payload.to_vec() };
        match inbox.try_send(input) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => metrics.inbox_overflow(),
            Err(TrySendError::Disconnected(_)) => return ReceiveEnd::Cancelled,
        }
    }
}

/// Reads one RTCP datagram into the session; malformed ones are counted.
fn read_rtcp(session: &mut RtcpSession, bytes: &[u8], counters: &LegCounters, metrics: &MediaMetrics) {
    let local = counters.quality().sender.map(|s| s.ssrc);
    match session.handle(std::time::Instant::now(), rtcp::ntp_time(std::time::SystemTime::now()), local, bytes) {
        Ok(()) => metrics.rtcp_received(),
        Err(error) => metrics.invalid(error),
    }
    publish_rtcp(counters, session);
}

fn publish_rtcp(counters: &LegCounters, session: &RtcpSession) {
    *counters.rtcp.lock().unwrap_or_else(|p| p.into_inner()) = session.stats();
}

/// The clear RTCP of a datagram: as is without SRTP, else decrypted (failures counted, `None`).
fn unprotect_rtcp(srtp: &mut Option<(Unprotector, Protector)>, bytes: &[u8], metrics: &MediaMetrics) -> Option<Vec<u8>> {
    match srtp.as_mut() {
        None => Some(bytes.to_vec()),
        Some((unprotect, _)) => match unprotect.rtcp(bytes) {
            Ok(clear) => Some(clear),
            Err(error) => {
                metrics.invalid(error);
                None
            }
        },
    }
}
