//! A leg's media sockets: binding its RTP/RTCP port pair; the [`RtpIntake`] through which the
//! mixer thread serving the leg reads and validates its RTP at each tick; and the tokio task
//! ([`supervise`]) that runs its RTCP and notices when its RTP stops.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::dtmf::{Digit, DtmfDetector};
use crate::error::MediaError;
use crate::jitter::PacketInfo;
use crate::latch::{Latch, Verdict};
use crate::metrics::MediaMetrics;
use crate::ports::PortAllocator;
use crate::quality::LegQuality;
use crate::rtcp::{self, RtcpSession, RtcpStats};
use crate::rtp::RtpPacket;
use crate::srtp::{Protector, Unprotector};
use crate::udp::{ClockPair, Datagram, RecvBatch};

/// Packets a leg's intake reads in one tick at most (a second's worth).
pub const MAX_READ_PER_TICK: usize = 50;

/// An in-order audio packet that arrived less than this before the tick ends the tick's
/// reading (see [`RtpIntake::poll`]): anything behind it in the socket arrived later still, so
/// is due at a later tick. Half a 20 ms frame, so a packet that waited a whole tick is always
/// read past.
pub const SETTLED_AGE: Duration = Duration::from_millis(10);

/// Once a leg has a connected twin socket (see [`RtpIntake`]), its first socket, which then
/// holds only datagrams from other addresses, is read every this many ticks (half a second):
/// hijack attempts are counted and a moved caller is followed a little later, and no tick pays
/// a second read for them.
pub const STRAYS_EVERY: u32 = 25;

/// What one [`RtpIntake::poll`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Polled {
    /// Valid packets taken, which the caller adds to [`MediaMetrics::packets_in`] for many
    /// legs at once.
    pub accepted: u64,
    /// Reading stopped at a fresh in-order packet, so later ones may wait in the socket: if
    /// the jitter buffer still lacks the frame it plays next, call [`RtpIntake::poll_rest`].
    pub stopped_early: bool,
}

/// Per-leg counters, shared with the API: packet counts kept by the intake and the mixer,
/// and the receive quality the mixer publishes every half second.
#[derive(Debug, Default)]
pub struct LegCounters {
    /// Valid RTP packets received.
    pub packets_in: AtomicU64,
    /// RTP packets sent.
    pub packets_out: AtomicU64,
    quality: std::sync::Mutex<LegQuality>,
    rtcp: std::sync::Mutex<RtcpStats>,
    /// The latched peer address and its SSRC (set by the intake, read for RTCP).
    peer: std::sync::Mutex<Option<(SocketAddr, u32)>>,
}

impl LegCounters {
    /// Reads both packet counters.
    pub fn snapshot(&self) -> (u64, u64) {
        (
            self.packets_in.load(Ordering::Relaxed),
            self.packets_out.load(Ordering::Relaxed),
        )
    }

    /// The latest published receive quality.
    pub fn quality(&self) -> LegQuality {
        *self.quality.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes the receive quality (the mixer, twice a second; the lock is uncontended).
    pub fn publish(&self, quality: LegQuality) {
        *self.quality.lock().unwrap_or_else(|p| p.into_inner()) = quality;
    }

    /// The address RTP is latched to and the SSRC it carries, once RTP arrived.
    pub fn peer(&self) -> Option<(SocketAddr, u32)> {
        *self.peer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What the peer's RTCP reports said so far.
    pub fn rtcp(&self) -> RtcpStats {
        *self.rtcp.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What a leg's intake hands the mixer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegInput<'a> {
    /// One audio packet's payload.
    Audio {
        /// Its RTP header fields and arrival time, for the jitter buffer.
        info: PacketInfo,
        /// Encoded payload, borrowed from the receive buffer (the room copies it into a
        /// buffer it reuses).
        payload: &'a [u8],
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
        self.allocator
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .release(self.port);
    }
}

impl MediaPorts {
    /// Binds the next free pair on `ip`, skipping ports other programs hold.
    pub fn bind(
        ip: IpAddr,
        allocator: &Arc<Mutex<PortAllocator>>,
    ) -> Result<MediaPorts, MediaError> {
        let mut skipped = Vec::new();
        let result = loop {
            // The lock guards only the allocator's set; a poisoned one still holds a valid set.
            let port = allocator
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .allocate();
            let port = match port {
                Ok(port) => port,
                Err(e) => break Err(e),
            };
            match bind_pair(ip, port) {
                Ok((rtp, rtcp, local)) => {
                    let lease = Arc::new(PortLease {
                        port,
                        allocator: allocator.clone(),
                    });
                    break Ok(MediaPorts {
                        rtp,
                        rtcp,
                        local,
                        lease,
                    });
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

/// Descriptors a leg holds: its RTP and RTCP sockets, the RTP socket's clone for RTCP with
/// rtcp-mux, and the RTP socket's connected twin.
pub const DESCRIPTORS_PER_LEG: u64 = 4;

/// Raises the process's soft limit on open descriptors to its hard limit (systemd starts
/// services at 1024, which 256 legs would exhaust) and returns the limit now in force. Calls
/// past it are refused with 503 as when RTP ports run out.
// getrlimit and setrlimit have no safe wrapper in std or libc.
#[allow(unsafe_code)]
pub fn raise_descriptor_limit() -> io::Result<u64> {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: a valid rlimit for the kernel to fill in.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            // SAFETY: a valid rlimit, only read by the kernel.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
                limit = raised;
            }
        }
        // rlim_t is 32 bits on some targets.
        #[allow(clippy::useless_conversion)]
        Ok(u64::from(limit.rlim_cur))
    }
    #[cfg(not(unix))]
    Err(io::Error::from(io::ErrorKind::Unsupported))
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

/// A leg's RTP receive side, read by the mixer thread that serves the leg at each tick: one
/// batched, kernel-timestamped read per leg per tick instead of a task wake-up per packet.
/// It validates RTP (SRTP, payload type, latch), turns RFC 4733 events into key presses, and
/// hands audio to the mixer; RTCP arriving on the RTP port (rtcp-mux) goes to the leg's
/// [`supervise`] task.
pub struct RtpIntake {
    /// The leg's RTP socket: everything arrives here until the source is latched, and
    /// afterwards whatever does not come from the latched source.
    socket: UdpSocket,
    /// Once latched, a second socket on the same port connected to the latched source: it
    /// receives that source's datagrams and sends the leg's RTP without a route lookup per
    /// packet. `None` before latching, or when it could not be made (then `socket` serves).
    twin: Option<Twin>,
    /// Polls so far, to read `socket` every [`STRAYS_EVERY`] ticks once the twin serves.
    polls: u32,
    settings: tokio::sync::watch::Receiver<ReceiveConfig>,
    config: ReceiveConfig,
    unprotect: Option<Arc<Mutex<Unprotector>>>,
    latch: Latch,
    dtmf: DtmfDetector,
    digits: tokio::sync::mpsc::Sender<Digit>,
    rtcp: tokio::sync::mpsc::Sender<Vec<u8>>,
    counters: Arc<LegCounters>,
    metrics: MediaMetrics,
    /// The socket's kernel drop count last seen.
    dropped: u32,
    /// Valid packets taken in this poll.
    accepted: u64,
    /// Datagrams read in this tick, against [`MAX_READ_PER_TICK`].
    read: usize,
    /// The sequence number of the last audio packet taken.
    last_audio: Option<u16>,
}

/// A socket connected to the latched source, and that source.
#[derive(Debug)]
struct Twin {
    socket: UdpSocket,
    remote: SocketAddr,
}

impl std::fmt::Debug for RtpIntake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtpIntake")
            .field("socket", &self.socket)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The tokio side of a leg's receive path, for [`supervise`].
#[derive(Debug)]
pub struct Supervision {
    /// The RTCP socket (unused with rtcp-mux).
    pub rtcp: UdpSocket,
    /// A clone of the RTP socket, to send reports on with rtcp-mux (never read here).
    pub rtp: UdpSocket,
    /// What the receive side accepts, and its inactivity limit.
    pub settings: tokio::sync::watch::Receiver<ReceiveConfig>,
    /// Shared with the intake: RTCP is decrypted here, RTP there.
    pub unprotect: Option<Arc<Mutex<Unprotector>>>,
    /// Protects our RTCP.
    pub protect: Option<Protector>,
    /// RTCP the intake found on the RTP port.
    pub muxed: tokio::sync::mpsc::Receiver<Vec<u8>>,
    /// Shared with the intake and the mixer.
    pub counters: Arc<LegCounters>,
    /// Media counters.
    pub metrics: MediaMetrics,
    /// Ends the task.
    pub cancel: CancellationToken,
}

/// Builds a leg's intake (for its mixer thread) and the matching [`Supervision`] (for its
/// tokio task) around its port pair.
// Each argument is a distinct piece of the leg (sockets, SRTP, channels, counters); a struct
// built only to be taken apart here would say nothing more.
#[allow(clippy::too_many_arguments)]
pub fn split_receive(
    rtp: UdpSocket,
    rtcp: UdpSocket,
    settings: tokio::sync::watch::Receiver<ReceiveConfig>,
    srtp: Option<(Unprotector, Protector)>,
    digits: tokio::sync::mpsc::Sender<Digit>,
    counters: Arc<LegCounters>,
    metrics: MediaMetrics,
    cancel: CancellationToken,
) -> io::Result<(RtpIntake, Supervision)> {
    crate::udp::enable_stamps(&rtp)?;
    let rtp_for_reports = rtp.try_clone()?;
    let (unprotect, protect) = match srtp {
        Some((u, p)) => (Some(Arc::new(Mutex::new(u))), Some(p)),
        None => (None, None),
    };
    let (muxed_tx, muxed_rx) = tokio::sync::mpsc::channel(8);
    let config = *settings.borrow();
    let intake = RtpIntake {
        socket: rtp,
        twin: None,
        polls: 0,
        settings: settings.clone(),
        config,
        unprotect: unprotect.clone(),
        latch: Latch::default(),
        dtmf: DtmfDetector::default(),
        digits,
        rtcp: muxed_tx,
        counters: counters.clone(),
        metrics: metrics.clone(),
        dropped: 0,
        accepted: 0,
        read: 0,
        last_audio: None,
    };
    let supervision = Supervision {
        rtcp,
        rtp: rtp_for_reports,
        settings,
        unprotect,
        protect,
        muxed: muxed_rx,
        counters,
        metrics,
        cancel,
    };
    Ok((intake, supervision))
}

impl RtpIntake {
    /// Sends one of the leg's RTP packets to `remote`, without blocking: through the connected
    /// twin when it points there, else from the leg's socket.
    pub fn send(&self, packet: &[u8], remote: SocketAddr) -> io::Result<usize> {
        match &self.twin {
            Some(twin) if twin.remote == remote => crate::udp::send(&twin.socket, packet),
            _ => crate::udp::send_to(&self.socket, packet, remote),
        }
    }

    /// Takes the leg's latest receive settings (payload types, rtcp-mux) if they changed. The
    /// mixer thread calls it when told the leg changed and now and then, not on every read:
    /// looking at the shared settings is a cache miss per leg per tick.
    pub fn refresh(&mut self) {
        if self.settings.has_changed().unwrap_or(false) {
            self.config = *self.settings.borrow_and_update();
        }
    }

    /// Reads what arrived since the last tick (at most [`MAX_READ_PER_TICK`] datagrams) into
    /// `out`: audio with its kernel arrival time, and a new latched address. Invalid packets are
    /// counted and dropped.
    ///
    /// A leg sends one packet per tick, so reading starts with one datagram (`recvmsg`) rather
    /// than a batch, whose second try of an empty socket costs as much again in the kernel.
    /// Reading stops there when that datagram was the audio packet right after the last one
    /// and arrived less than [`SETTLED_AGE`] ago; else (an older packet, a gap or reordering,
    /// RTCP or DTMF, no kernel arrival time) it reads on until the socket is empty. Packets
    /// left behind arrived later still, so a timely stream is read in full at the next tick,
    /// and a backlog never outlives one tick. The caller finishes the reading with
    /// [`RtpIntake::poll_rest`] when the jitter buffer lacks its next frame.
    pub fn poll(
        &mut self,
        batch: &mut RecvBatch,
        clock: &ClockPair,
        mut out: impl FnMut(LegInput<'_>),
    ) -> Polled {
        self.read = 0;
        self.polls = self.polls.wrapping_add(1);
        // Latching in this poll makes the twin, but the datagrams already waiting stay where
        // they are: read on from the socket the poll began with.
        let from_twin = self.twin.is_some();
        let stopped_early = match batch.recv_one(self.source(from_twin)) {
            Ok(1) => {
                self.read = 1;
                let settled = batch
                    .datagrams()
                    .next()
                    .is_some_and(|datagram| self.accept(datagram, clock, &mut out));
                settled || self.read_rest(from_twin, batch, clock, &mut out)
            }
            // Empty. A connected twin reports an ICMP error once (the peer closed its port),
            // anything else is transient: try again next tick.
            Ok(_) | Err(_) => false,
        };
        if from_twin && self.polls.is_multiple_of(STRAYS_EVERY) {
            self.read_rest(false, batch, clock, &mut out);
        }
        Polled {
            accepted: std::mem::take(&mut self.accepted),
            stopped_early,
        }
    }

    /// Reads the rest of what waits after a [`RtpIntake::poll`] that stopped early, within the
    /// tick's [`MAX_READ_PER_TICK`]. Returns the valid packets it took.
    pub fn poll_rest(
        &mut self,
        batch: &mut RecvBatch,
        clock: &ClockPair,
        mut out: impl FnMut(LegInput<'_>),
    ) -> u64 {
        self.read_rest(self.twin.is_some(), batch, clock, &mut out);
        std::mem::take(&mut self.accepted)
    }

    /// The twin when asked for and there, else the leg's socket.
    fn source(&self, twin: bool) -> &UdpSocket {
        match &self.twin {
            Some(t) if twin => &t.socket,
            _ => &self.socket,
        }
    }

    /// Reads the twin's or the socket's datagrams in batches until it is empty or the tick's
    /// budget is spent; true when it stopped for the budget (more may wait).
    fn read_rest(
        &mut self,
        twin: bool,
        batch: &mut RecvBatch,
        clock: &ClockPair,
        out: &mut impl FnMut(LegInput<'_>),
    ) -> bool {
        while self.read < MAX_READ_PER_TICK {
            let n = match batch.recv(self.source(twin), false) {
                Ok(0) | Err(_) => return false,
                Ok(n) => n,
            };
            self.read += n;
            for datagram in batch.datagrams() {
                self.accept(datagram, clock, out);
            }
            if n < batch.capacity() {
                return false;
            }
        }
        true
    }

    /// Points the twin at a newly latched `remote`, making it on the first latch. Without one
    /// the leg's socket serves everything, as before latching; that is counted (except where
    /// the platform has no twins).
    fn connect_twin(&mut self, remote: SocketAddr) {
        if let Some(twin) = &mut self.twin {
            if twin.socket.connect(remote).is_ok() {
                twin.remote = remote;
                return;
            }
            // Its connection is in doubt: close it, freeing the port for a new twin.
            self.twin = None;
        }
        let made = crate::udp::connected_twin(&self.socket, remote).and_then(|socket| {
            crate::udp::enable_stamps(&socket)?;
            Ok(socket)
        });
        self.twin = match made {
            Ok(socket) => Some(Twin { socket, remote }),
            Err(error) => {
                if error.kind() != io::ErrorKind::Unsupported {
                    self.metrics.connect_failure();
                }
                None
            }
        };
    }

    /// Takes one datagram; true when it was the audio packet right after the last one and
    /// arrived less than [`SETTLED_AGE`] ago (see [`RtpIntake::poll`]).
    fn accept(
        &mut self,
        datagram: Datagram<'_>,
        clock: &ClockPair,
        out: &mut impl FnMut(LegInput<'_>),
    ) -> bool {
        if let Some(dropped) = datagram.dropped {
            let lost = dropped.wrapping_sub(self.dropped);
            if lost > 0 && lost < u32::MAX / 2 {
                self.metrics.receive_overflow(u64::from(lost));
            }
            self.dropped = dropped;
        }
        if datagram.truncated {
            self.metrics.invalid(MediaError::Truncated);
            return false;
        }
        let bytes = datagram.bytes;
        if self.config.rtcp_mux && rtcp::is_rtcp(bytes) {
            // The supervisor is behind by 8 reports only if it is gone; drop then.
            let _ = self.rtcp.try_send(bytes.to_vec());
            return false;
        }
        let clear;
        let bytes = match &self.unprotect {
            None => bytes,
            Some(unprotect) => match unprotect
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .rtp(bytes)
            {
                Ok(decrypted) => {
                    clear = decrypted;
                    &clear[..]
                }
                Err(error) => {
                    self.metrics.invalid(error);
                    return false;
                }
            },
        };
        let packet = match RtpPacket::parse(bytes) {
            Ok(p) => p,
            Err(error) => {
                self.metrics.invalid(error);
                return false;
            }
        };
        let config = self.config;
        if packet.payload_type != config.audio_pt
            && Some(packet.payload_type) != config.telephone_event
        {
            self.metrics
                .invalid(MediaError::UnexpectedPayloadType(packet.payload_type));
            return false;
        }
        let arrival = clock.arrival(datagram.stamp);
        match self
            .latch
            .check(arrival, datagram.from, packet.ssrc, packet.sequence)
        {
            Verdict::Accept => {}
            Verdict::Latch(addr) => {
                *self.counters.peer.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((addr, packet.ssrc));
                self.connect_twin(addr);
                out(LegInput::Remote(addr));
            }
            Verdict::Hijack => {
                self.metrics.invalid(MediaError::Hijack);
                return false;
            }
            Verdict::ForeignSsrc => {
                self.metrics
                    .invalid(MediaError::UnexpectedSsrc(packet.ssrc));
                return false;
            }
        }
        self.counters.packets_in.fetch_add(1, Ordering::Relaxed);
        self.accepted += 1;
        if packet.payload_type != config.audio_pt {
            if let Some(digit) = self
                .dtmf
                .handle(packet.ssrc, packet.timestamp, packet.payload)
            {
                // A full digit queue means nobody reads digits for this leg: drop them.
                let _ = self.digits.try_send(digit);
            }
            return false;
        }
        let info = PacketInfo {
            sequence: packet.sequence,
            timestamp: packet.timestamp,
            ssrc: packet.ssrc,
            marker: packet.marker,
            arrival,
        };
        let in_order = self
            .last_audio
            .is_some_and(|last| packet.sequence == last.wrapping_add(1));
        self.last_audio = Some(packet.sequence);
        out(LegInput::Audio {
            info,
            payload: packet.payload,
        });
        in_order && datagram.stamp.is_some() && clock.age(arrival) < SETTLED_AGE
    }
}

/// How often a leg's supervisor checks whether RTP still flows (a quarter of the limit, at
/// least this).
const INACTIVITY_CHECK_MIN: Duration = Duration::from_millis(100);

/// Runs a leg's RTCP (reads reports on the RTCP port or from the intake, sends ours) and
/// watches for RTP inactivity, until cancelled or inactive. It wakes for RTCP, its report
/// timer and a few inactivity checks per limit: nothing per packet.
pub async fn supervise(mut s: Supervision) -> ReceiveEnd {
    let Ok(rtcp_socket) = tokio::net::UdpSocket::from_std(s.rtcp) else {
        return ReceiveEnd::SocketError;
    };
    let mut rtcp_buf = vec![0u8; 2048];
    let mut config = *s.settings.borrow_and_update();
    let seed = Arc::as_ptr(&s.counters) as usize as u64 ^ 0x5eed;
    let mut session = RtcpSession::new(config.clock_rate, seed);
    // Where RTCP from the peer last came from (symmetric RTCP), else where the SDP says.
    let mut rtcp_from: Option<SocketAddr> = None;
    // RTP inactivity: the packet count, and when it last moved.
    let mut seen = (
        s.counters.packets_in.load(Ordering::Relaxed),
        tokio::time::Instant::now(),
    );
    let check = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(check);
    loop {
        let report_at =
            tokio::time::Instant::from_std(session.next_report(std::time::Instant::now()));
        tokio::select! {
            r = rtcp_socket.recv_from(&mut rtcp_buf) => {
                if let Ok((n, from)) = r
                    && let Some(clear) = unprotect_rtcp(&s.unprotect, &rtcp_buf[..n], &s.metrics) {
                        read_rtcp(&mut session, &clear, &s.counters, &s.metrics);
                        rtcp_from = Some(from);
                    }
            }
            Some(bytes) = s.muxed.recv() => {
                if let Some(clear) = unprotect_rtcp(&s.unprotect, &bytes, &s.metrics) {
                    read_rtcp(&mut session, &clear, &s.counters, &s.metrics);
                }
            }
            () = tokio::time::sleep_until(report_at) => {
                let quality = s.counters.quality();
                let peer = s.counters.peer();
                let received = peer.map(|(_, ssrc)| (ssrc, &quality.jitter));
                let mut report = session.report(std::time::Instant::now(), rtcp::ntp_time(std::time::SystemTime::now()), quality.sender, received);
                if let Some(protect) = s.protect.as_mut() {
                    report = protect.rtcp(&report).unwrap_or_default();
                }
                let target = match (config.rtcp_mux, peer, rtcp_from) {
                    (true, Some((latched, _)), _) => latched,
                    (false, _, Some(from)) => from,
                    _ => config.rtcp_remote,
                };
                // Non-blocking: a full send buffer drops this report; the next one follows.
                let sent = if config.rtcp_mux { s.rtp.send_to(&report, target) } else { rtcp_socket.try_send_to(&report, target) };
                if !report.is_empty() && sent.is_ok() {
                    s.metrics.rtcp_sent();
                }
                publish_rtcp(&s.counters, &session);
            }
            changed = s.settings.changed() => {
                if changed.is_err() {
                    return ReceiveEnd::Cancelled;
                }
                config = *s.settings.borrow_and_update();
                session.set_clock_rate(config.clock_rate);
                // A phone taken off hold gets a whole limit to start sending again.
                seen = (s.counters.packets_in.load(Ordering::Relaxed), tokio::time::Instant::now());
            }
            () = &mut check => {
                let now = tokio::time::Instant::now();
                let count = s.counters.packets_in.load(Ordering::Relaxed);
                if count != seen.0 {
                    seen = (count, now);
                }
                match config.inactivity {
                    Some(limit) if now.duration_since(seen.1) >= limit => return ReceiveEnd::Inactive,
                    Some(limit) => check.as_mut().reset(now + (limit / 4).max(INACTIVITY_CHECK_MIN)),
                    None => check.as_mut().reset(now + Duration::from_secs(3600)),
                }
            }
            () = s.cancel.cancelled() => return ReceiveEnd::Cancelled,
        }
    }
}

/// Reads one RTCP datagram into the session; malformed ones are counted.
fn read_rtcp(
    session: &mut RtcpSession,
    bytes: &[u8],
    counters: &LegCounters,
    metrics: &MediaMetrics,
) {
    let local = counters.quality().sender.map(|s| s.ssrc);
    match session.handle(
        std::time::Instant::now(),
        rtcp::ntp_time(std::time::SystemTime::now()),
        local,
        bytes,
    ) {
        Ok(()) => metrics.rtcp_received(),
        Err(error) => metrics.invalid(error),
    }
    publish_rtcp(counters, session);
}

fn publish_rtcp(counters: &LegCounters, session: &RtcpSession) {
    *counters.rtcp.lock().unwrap_or_else(|p| p.into_inner()) = session.stats();
}

/// The clear RTCP of a datagram: as is without SRTP, else decrypted (failures counted, `None`).
fn unprotect_rtcp(
    unprotect: &Option<Arc<Mutex<Unprotector>>>,
    bytes: &[u8],
    metrics: &MediaMetrics,
) -> Option<Vec<u8>> {
    match unprotect {
        None => Some(bytes.to_vec()),
        Some(unprotect) => match unprotect
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .rtcp(bytes)
        {
            Ok(clear) => Some(clear),
            Err(error) => {
                metrics.invalid(error);
                None
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// An intake on a loopback socket, and a peer socket sending to it.
    fn intake() -> (RtpIntake, UdpSocket) {
        let (intake, peer, _) = intake_with_metrics();
        (intake, peer)
    }

    /// [`intake`], with the registry its metrics are on.
    fn intake_with_metrics() -> (RtpIntake, UdpSocket, prometheus::Registry) {
        let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
        rtp.set_nonblocking(true).unwrap();
        let rtcp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.connect(rtp.local_addr().unwrap()).unwrap();
        let config = ReceiveConfig {
            audio_pt: 0,
            telephone_event: Some(101),
            inactivity: None,
            clock_rate: 8000,
            rtcp_mux: false,
            rtcp_remote: peer.local_addr().unwrap(),
        };
        let (_settings_tx, settings) = tokio::sync::watch::channel(config);
        let (digits, _) = tokio::sync::mpsc::channel(4);
        let registry = prometheus::Registry::new();
        let metrics = MediaMetrics::register(&registry).unwrap();
        let counters = Arc::new(LegCounters::default());
        let (intake, _) = split_receive(
            rtp,
            rtcp,
            settings,
            None,
            digits,
            counters,
            metrics,
            CancellationToken::new(),
        )
        .unwrap();
        (intake, peer, registry)
    }

    /// The hijack count on `registry`.
    fn hijacks(registry: &prometheus::Registry) -> u64 {
        let families = registry.gather();
        let invalid = families
            .iter()
            .find(|f| f.name() == "roundtable_rtp_invalid_total");
        invalid.map_or(0, |f| {
            let hijack = f
                .get_metric()
                .iter()
                .find(|m| m.get_label().iter().any(|l| l.value() == "hijack"));
            hijack.map_or(0, |m| m.get_counter().get_value() as u64)
        })
    }

    fn send(peer: &UdpSocket, sequence: u16) {
        let mut packet = vec![0x80, 0];
        packet.extend_from_slice(&sequence.to_be_bytes());
        packet.extend_from_slice(&(u32::from(sequence) * 160).to_be_bytes());
        packet.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        packet.extend_from_slice(&[0xff; 160]);
        peer.send(&packet).unwrap();
    }

    /// Polls once (waiting, bounded, for the first datagram to land) and returns what it did
    /// with the sequence numbers handed on.
    fn poll(intake: &mut RtpIntake, batch: &mut RecvBatch) -> (Polled, Vec<u16>) {
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut sequences = Vec::new();
        loop {
            let polled = intake.poll(batch, &ClockPair::now(), |input| {
                if let LegInput::Audio { info, .. } = input {
                    sequences.push(info.sequence);
                }
            });
            if polled.accepted > 0 || Instant::now() > deadline {
                return (polled, sequences);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_fresh_in_order_packet_ends_the_read_and_the_rest_waits_for_poll_rest() {
        let (mut intake, peer) = intake();
        let mut batch = RecvBatch::new(4);
        send(&peer, 1);
        let (polled, got) = poll(&mut intake, &mut batch);
        assert_eq!(
            (polled, got),
            (
                Polled {
                    accepted: 1,
                    stopped_early: false
                },
                vec![1]
            ),
            "the first packet has none before it"
        );

        send(&peer, 2);
        send(&peer, 3);
        std::thread::sleep(Duration::from_millis(2));
        let (polled, got) = poll(&mut intake, &mut batch);
        assert_eq!(
            (polled, got),
            (
                Polled {
                    accepted: 1,
                    stopped_early: true
                },
                vec![2]
            )
        );
        let mut rest = Vec::new();
        let taken = intake.poll_rest(&mut batch, &ClockPair::now(), |input| {
            if let LegInput::Audio { info, .. } = input {
                rest.push(info.sequence);
            }
        });
        assert_eq!(
            (taken, rest),
            (1, vec![3]),
            "poll_rest reads what waited behind"
        );
    }

    #[test]
    fn an_old_packet_a_gap_or_reordering_reads_the_socket_empty() {
        let (mut intake, peer) = intake();
        let mut batch = RecvBatch::new(4);
        send(&peer, 1);
        poll(&mut intake, &mut batch);

        // Waited longer than SETTLED_AGE: everything behind it is read too.
        send(&peer, 2);
        send(&peer, 3);
        std::thread::sleep(SETTLED_AGE + Duration::from_millis(5));
        let (polled, got) = poll(&mut intake, &mut batch);
        assert_eq!(
            (polled, got),
            (
                Polled {
                    accepted: 2,
                    stopped_early: false
                },
                vec![2, 3]
            )
        );

        // A gap (5 after 3), then reordering (4 after 5).
        send(&peer, 5);
        send(&peer, 4);
        send(&peer, 6);
        std::thread::sleep(Duration::from_millis(2));
        let (polled, got) = poll(&mut intake, &mut batch);
        assert_eq!(
            (polled, got),
            (
                Polled {
                    accepted: 3,
                    stopped_early: false
                },
                vec![5, 4, 6]
            )
        );
    }

    #[test]
    fn after_latching_a_connected_twin_serves_the_source_and_strays_are_read_twice_a_second() {
        let (mut intake, peer, registry) = intake_with_metrics();
        let local = intake.socket.local_addr().unwrap();
        let mut batch = RecvBatch::new(4);
        send(&peer, 1);
        poll(&mut intake, &mut batch);
        let twin = intake.twin.as_ref().expect("a twin once latched");
        assert_eq!(
            (twin.remote, twin.socket.local_addr().unwrap()),
            (peer.local_addr().unwrap(), local)
        );

        // The leg's packets go out through the twin, from the leg's port.
        assert_eq!(
            intake
                .send(b"to the peer", peer.local_addr().unwrap())
                .unwrap(),
            11
        );
        peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(peer.recv_from(&mut buf).unwrap(), (11, local));

        // A stranger continuing the stream waits in the first socket; the peer's packets keep
        // flowing through the twin, and the stranger is counted when the strays are read.
        let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut forged = vec![0x80, 0, 0, 2, 0, 0, 1, 64];
        forged.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        forged.extend_from_slice(&[0xff; 160]);
        stranger.send_to(&forged, local).unwrap();
        let mut taken = Vec::new();
        intake.polls = 0;
        for sequence in 2..2 + STRAYS_EVERY as u16 {
            send(&peer, sequence);
            let (polled, got) = poll(&mut intake, &mut batch);
            assert_eq!(polled.accepted, 1);
            taken.extend(got);
            if intake.polls < STRAYS_EVERY {
                assert_eq!(hijacks(&registry), 0, "strays are not read at every tick");
            }
        }
        assert_eq!(
            taken,
            (2..2 + STRAYS_EVERY as u16).collect::<Vec<_>>(),
            "only the peer's stream"
        );
        assert_eq!(
            hijacks(&registry),
            1,
            "the stranger counted at the strays' read"
        );
    }
}
