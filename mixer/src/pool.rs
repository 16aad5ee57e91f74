//! The real-time driver: a few mixer threads (about one per core), each serving many rooms on
//! absolute 20 ms deadlines.
//!
//! A thread owns its rooms by value. Other tasks talk to it with [`Command`]s over a channel.
//! At each tick it reads every leg's RTP socket through the leg's [`RtpIntake`] (usually one
//! non-blocking, kernel-timestamped `recvmsg` per leg: no task wake-up or channel per packet),
//! mixes, sends RTP without blocking (through the leg's socket connected to its latched source,
//! see [`RtpIntake::send`]), and hands the room mix to a recorder over a bounded channel. It
//! never waits on a socket, touches disk or blocks on a contended lock.
//!
//! Threads tick at phases spread evenly over the 20 ms, so that they wake one after another
//! rather than all competing for the cores at once.
//!
//! Missed ticks: a thread late by up to [`MAX_CATCH_UP`] runs the ticks it owes back to back
//! (the jitter buffers absorb it); later than that, it skips the owed ticks, counts them, and
//! advances tick numbers so recorders fill the hole with silence and stay aligned.
//!
//! Overload: each thread's [`Governor`] watches its tick cost and lateness and sheds voice
//! processing in a fixed order (see [`crate::governor`]), counted in metrics, and restores it
//! when the thread has room again.
//!
//! Placement: a new room goes to the thread with the least measured load (its smoothed tick
//! cost plus an allowance per room not yet measured).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use roundtable_media::MediaError;
use roundtable_media::codec::LegCodec;
use roundtable_media::metrics::MediaMetrics;
use roundtable_media::socket::{LegCounters, LegInput, RtpIntake};
use roundtable_media::udp::{ClockPair, RecvBatch};

use crate::controls::{Degradation, LegControls};
use crate::echo::AecMode;
use crate::governor::Governor;
use crate::metrics::{MixerMetrics, ThreadMetrics};
use crate::room::{LegId, PreparedLeg, Room, RoomConfig, RoomEvent};

/// The tick period.
pub const TICK: Duration = Duration::from_millis(20);
/// The most lateness made up by running owed ticks back to back (5 ticks).
pub const MAX_CATCH_UP: Duration = Duration::from_millis(100);
/// Frames a recorder may fall behind before the mixer drops frames for it (2 s).
pub const RECORDER_QUEUE: usize = 100;
/// Ticks between two publications of each leg's receive quality (0.5 s).
const QUALITY_EVERY: u64 = 25;
/// Room events that may wait for their consumer before new ones are dropped (and counted).
pub const EVENT_QUEUE: usize = 4096;
/// Datagrams one socket read takes at most (a leg usually has one waiting per tick; a read
/// that fills the batch is followed by another). Each read prepares this many headers.
const RECV_BATCH: usize = 4;
/// Load assumed for a room placed on a thread until its cost shows in the thread's ticks.
const ROOM_ALLOWANCE_NS: u64 = 50_000;

/// A room event, with its room.
#[derive(Debug, Clone)]
pub struct MixerEvent {
    /// The room.
    pub room: RoomKey,
    /// What happened.
    pub event: RoomEvent,
}

/// A room's name, validated by the caller.
pub type RoomKey = Arc<str>;

pub use roundtable_media::frames::{FrameSource, LegFrame, MixFrame};

/// The I/O side of a leg the mixer thread needs.
#[derive(Debug)]
pub struct LegIo {
    /// Reads the leg's RTP; its socket (non-blocking) also sends the leg's RTP.
    pub intake: RtpIntake,
    /// Where to send until RTP arrives from somewhere (the SDP address).
    pub remote: SocketAddr,
    /// Counters shared with the API.
    pub counters: Arc<LegCounters>,
    /// The leg's codec.
    pub codec: LegCodec,
    /// Protects the leg's RTP when the call uses SRTP.
    pub protect: Option<roundtable_media::srtp::Protector>,
    /// Keeps the leg's port pair taken until this (and the intake's socket) is dropped.
    pub lease: Arc<roundtable_media::socket::PortLease>,
}

/// What a mixer thread can be told. Commands come per call and per control action, never per
/// packet, so the size of `AddLeg` (a leg's sockets and prepared pipelines) does not matter.
// Hence no Box: see the paragraph above.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Add a leg to a room, creating the room on first join.
    AddLeg {
        /// The room.
        room: RoomKey,
        /// The leg.
        leg: LegId,
        /// Its socket and intake.
        io: LegIo,
        /// Its media pipelines, built by [`MixerPool::add_leg`] off the mixer thread.
        media: Result<PreparedLeg, MediaError>,
    },
    /// Change a leg's media after a re-offer (hold, resume, codec or address change).
    UpdateLeg {
        /// The room.
        room: RoomKey,
        /// The leg.
        leg: LegId,
        /// The codec now negotiated.
        codec: LegCodec,
        /// Where to send its RTP now.
        remote: SocketAddr,
        /// Whether it receives the mix.
        hears: bool,
        /// Whether its audio is mixed in.
        heard: bool,
    },
    /// Play a prompt to one leg, over what it hears.
    Play {
        /// The room.
        room: RoomKey,
        /// The leg.
        leg: LegId,
        /// Samples at the room's rate.
        samples: Arc<[i16]>,
    },
    /// Set a leg's controls (mute, deaf, gains, per-leg switches).
    SetControls {
        /// The room.
        room: RoomKey,
        /// The leg.
        leg: LegId,
        /// Its controls.
        controls: LegControls,
    },
    /// Set whom a leg hears and who hears it (whisper, coach).
    SetRelations {
        /// The room.
        room: RoomKey,
        /// The leg.
        leg: LegId,
        /// Its relations.
        relations: roundtable_media::relations::Relations,
    },
    /// Play a sound once to everyone in a room (join and leave tones).
    Announce {
        /// The room.
        room: RoomKey,
        /// Samples at the room's rate.
        samples: Arc<[i16]>,
    },
    /// Put a room on hold with a looped sound, or take it off hold (`None`).
    SetHold {
        /// The room.
        room: RoomKey,
        /// The hold sound at the room's rate.
        sound: Option<Arc<[i16]>>,
    },
    /// Set a room's echo cancellation mode (`None`: the service's).
    SetRoomAec {
        /// The room.
        room: RoomKey,
        /// The mode.
        mode: Option<AecMode>,
    },
    /// Stop a leg's prompt.
    StopPrompt {
        /// The room.
        room: RoomKey,
        /// The leg.
        leg: LegId,
        /// Only this prompt (the samples given to `Play`), if it is still playing; `None`: any.
        only: Option<Arc<[i16]>>,
    },
    /// Take a leg out of its room and hand its I/O to `reply` (to move it to another room, maybe
    /// on another thread).
    DetachLeg {
        /// The room.
        room: RoomKey,
        /// The leg.
        leg: LegId,
        /// Receives the leg's I/O, with the latest remote address.
        reply: Box<dyn FnOnce(LegIo) + Send>,
    },
    /// Remove a leg; the room stays until [`Command::CloseRoom`].
    RemoveLeg {
        /// The room.
        room: RoomKey,
        /// The leg.
        leg: LegId,
    },
    /// Send the room's mix to `sink` from the next tick on.
    StartRecording {
        /// The room.
        room: RoomKey,
        /// Where mix frames go.
        sink: SyncSender<MixFrame>,
        /// Whether frames carry every leg's input too.
        tracks: bool,
        /// Whether the mix carries whispers (`recording.include_whispers`).
        whispers: bool,
    },
    /// Stop sending the mix; dropping the sink tells the recorder to finish.
    StopRecording {
        /// The room.
        room: RoomKey,
    },
    /// Overload drill: from the next tick the thread spends `cost` more CPU time per tick
    /// while `stage` still runs on it (its degradation stage is below `stage`), as a slow
    /// voice-processing stage would; `None` ends the drill. Checks the overload policy end to
    /// end.
    SlowStage(Option<(Degradation, Duration)>),
    /// Stop ticking for this long (the `[testing]` hook of a stalled thread, which `/live`
    /// must notice).
    Stall(Duration),
    /// Forget the room (and stop its recording).
    CloseRoom {
        /// The room.
        room: RoomKey,
    },
    /// Stop the thread.
    Shutdown,
}

struct LegSlot {
    io: LegIo,
    remote: SocketAddr,
}

struct RoomSlot {
    room: Room,
    legs: HashMap<LegId, LegSlot>,
    recorder: Option<SyncSender<MixFrame>>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Command::AddLeg { .. } => "AddLeg",
            Command::UpdateLeg { .. } => "UpdateLeg",
            Command::Play { .. } => "Play",
            Command::SetControls { .. } => "SetControls",
            Command::SetRelations { .. } => "SetRelations",
            Command::SetRoomAec { .. } => "SetRoomAec",
            Command::Announce { .. } => "Announce",
            Command::SetHold { .. } => "SetHold",
            Command::StopPrompt { .. } => "StopPrompt",
            Command::DetachLeg { .. } => "DetachLeg",
            Command::RemoveLeg { .. } => "RemoveLeg",
            Command::StartRecording { .. } => "StartRecording",
            Command::StopRecording { .. } => "StopRecording",
            Command::SlowStage(_) => "SlowStage",
            Command::Stall(_) => "Stall",
            Command::CloseRoom { .. } => "CloseRoom",
            Command::Shutdown => "Shutdown",
        };
        f.write_str(name)
    }
}

/// What a thread publishes about its load, for placement.
#[derive(Debug, Default)]
struct Load {
    /// Smoothed tick cost in nanoseconds.
    cost_ns: AtomicU64,
    /// Rooms placed on it and not yet measured in its cost.
    recent_rooms: AtomicU64,
    /// When its last tick started: milliseconds since the pool's epoch, plus one (0: never).
    last_tick_ms: AtomicU64,
}

/// The mixer threads' heartbeats, readable from any thread: whether each ticked lately.
#[derive(Debug, Clone)]
pub struct Heartbeats {
    epoch: Instant,
    loads: Vec<Arc<Load>>,
}

impl Heartbeats {
    /// The threads (by index) whose last tick started more than `limit` before `now` (or that
    /// never ticked while the pool is older than `limit`).
    pub fn stalled(&self, now: Instant, limit: Duration) -> Vec<usize> {
        let now_ms = now.saturating_duration_since(self.epoch).as_millis() as u64;
        let limit_ms = limit.as_millis() as u64;
        self.loads
            .iter()
            .enumerate()
            .filter(|(_, load)| {
                let last = load.last_tick_ms.load(Ordering::Relaxed);
                let since = if last == 0 {
                    now_ms
                } else {
                    now_ms.saturating_sub(last - 1)
                };
                since > limit_ms
            })
            .map(|(index, _)| index)
            .collect()
    }

    /// How many threads there are.
    pub fn threads(&self) -> usize {
        self.loads.len()
    }
}

/// A handle to the mixer threads.
#[derive(Debug)]
pub struct MixerPool {
    workers: Vec<Sender<Command>>,
    threads: Vec<JoinHandle<()>>,
    loads: Vec<Arc<Load>>,
    epoch: Instant,
    config: RoomConfig,
    /// Seeds each leg's RTP stream (SSRC, sequence, timestamp) differently.
    seed: AtomicU64,
}

/// Which mixer thread serves a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerId(usize);

impl MixerPool {
    /// Starts `threads` mixer threads (at least one) whose rooms are set up with `config`;
    /// room events go to `events` (dropped and counted when it is full).
    pub fn start(
        threads: usize,
        config: RoomConfig,
        metrics: MixerMetrics,
        media: MediaMetrics,
        events: SyncSender<MixerEvent>,
    ) -> std::io::Result<MixerPool> {
        let mut workers = Vec::new();
        let mut handles = Vec::new();
        let mut loads = Vec::new();
        let threads = threads.max(1);
        let epoch = Instant::now();
        let first_tick = epoch + TICK;
        for index in 0..threads {
            let (tx, rx) = mpsc::channel();
            let load = Arc::new(Load::default());
            let worker = Worker {
                rooms: HashMap::new(),
                config,
                thread: metrics.for_thread(index),
                metrics: metrics.clone(),
                media: media.clone(),
                governor: Governor::default(),
                events: events.clone(),
                load: load.clone(),
                epoch,
                batch: RecvBatch::new(RECV_BATCH),
                drill: None,
            };
            let handle = std::thread::Builder::new()
                .name(format!("mixer-{index}"))
                // Threads tick at evenly spread phases, so they do not all wake and compete
                // for the cores at the same instant.
                .spawn(move || worker.run(rx, first_tick + TICK * index as u32 / threads as u32))?;
            workers.push(tx);
            handles.push(handle);
            loads.push(load);
        }
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Ok(MixerPool {
            workers,
            threads: handles,
            loads,
            epoch,
            config,
            seed: AtomicU64::new(seed),
        })
    }

    /// The threads' heartbeats, for liveness probes.
    pub fn heartbeats(&self) -> Heartbeats {
        Heartbeats {
            epoch: self.epoch,
            loads: self.loads.clone(),
        }
    }

    /// The thread a new room should go to: the least loaded by measured tick cost.
    pub fn assign(&self) -> WorkerId {
        let load = |l: &Load| {
            l.cost_ns.load(Ordering::Relaxed)
                + l.recent_rooms.load(Ordering::Relaxed) * ROOM_ALLOWANCE_NS
        };
        let index = (0..self.loads.len())
            .min_by_key(|&i| load(&self.loads[i]))
            .unwrap_or(0);
        if let Some(l) = self.loads.get(index) {
            l.recent_rooms.fetch_add(1, Ordering::Relaxed);
        }
        WorkerId(index)
    }

    /// The command that adds `leg` to `room`, with its media pipelines built here, on the
    /// caller's thread: a burst of joins then costs the mixer threads nothing but a move.
    pub fn add_leg(&self, room: RoomKey, leg: LegId, io: LegIo) -> Command {
        let seed = self
            .seed
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            ^ leg.0.rotate_left(17);
        let media = Room::prepare_leg(&self.config, leg, io.codec, seed);
        Command::AddLeg {
            room,
            leg,
            io,
            media,
        }
    }

    /// Sends a command to a thread; `false` if it has stopped.
    pub fn send(&self, worker: WorkerId, command: Command) -> bool {
        self.workers
            .get(worker.0)
            .is_some_and(|w| w.send(command).is_ok())
    }

    /// Stops thread `index` ticking for `pause` (the `[testing]` hook of a stalled thread);
    /// `false` if there is no such thread.
    pub fn stall_thread(&self, index: usize, pause: Duration) -> bool {
        self.send(WorkerId(index), Command::Stall(pause))
    }

    /// Stops every thread and waits for them.
    pub fn shutdown(self) {
        for w in &self.workers {
            let _ = w.send(Command::Shutdown);
        }
        for t in self.threads {
            let _ = t.join();
        }
    }
}

struct Worker {
    rooms: HashMap<RoomKey, RoomSlot>,
    config: RoomConfig,
    metrics: MixerMetrics,
    thread: ThreadMetrics,
    media: MediaMetrics,
    governor: Governor,
    events: SyncSender<MixerEvent>,
    load: Arc<Load>,
    /// The pool's start, for [`Load::last_tick_ms`].
    epoch: Instant,
    /// Buffers for reading legs' sockets, reused for every leg.
    batch: RecvBatch,
    /// An overload drill's slow stage, while one runs.
    drill: Option<(Degradation, Duration)>,
}

impl Worker {
    fn run(mut self, commands: Receiver<Command>, first_tick: Instant) {
        let mut deadline = first_tick;
        let mut tick: u64 = 0;
        loop {
            let now = Instant::now();
            if now < deadline {
                match commands.recv_timeout(deadline - now) {
                    Ok(Command::Shutdown) | Err(RecvTimeoutError::Disconnected) => return,
                    Ok(command) => {
                        self.apply(command);
                        continue;
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                }
            }
            let watch = CpuStopwatch::start();
            let started = watch.started;
            self.load.last_tick_ms.store(
                started.saturating_duration_since(self.epoch).as_millis() as u64 + 1,
                Ordering::Relaxed,
            );
            let late = started.saturating_duration_since(deadline);
            self.thread.lateness.observe(late.as_secs_f64());
            if late > MAX_CATCH_UP {
                let owed = (late.as_nanos() / TICK.as_nanos()) as u32;
                self.metrics.ticks_skipped.inc_by(u64::from(owed));
                tick += u64::from(owed);
                deadline += TICK * owed;
                for slot in self.rooms.values_mut() {
                    slot.room.skip(owed);
                }
            }
            let mut encodes = 0;
            for (key, slot) in self.rooms.iter_mut() {
                tick_room(
                    key,
                    slot,
                    started,
                    tick,
                    &mut self.batch,
                    &self.metrics,
                    &self.media,
                    &self.events,
                );
                encodes += slot.room.encodes_last_tick();
            }
            self.thread.encodes.set(encodes as i64);
            if let Some((stage, cost)) = self.drill
                && self.governor.level() < stage
            {
                burn_cpu(cost);
            }
            let cost = started.elapsed();
            self.thread.duration.observe(cost.as_secs_f64());
            self.account(started, watch.used(), late);
            tick += 1;
            deadline += TICK;
        }
    }

    /// Publishes the thread's load and lets the governor shed or restore work. `cost` is the
    /// CPU time the tick took (see [`CpuStopwatch`]).
    fn account(&mut self, now: Instant, cost: Duration, late: Duration) {
        let old = self.load.cost_ns.load(Ordering::Relaxed);
        let cost_ns = cost.as_nanos().min(u128::from(u64::MAX)) as u64;
        self.load
            .cost_ns
            .store(old - old / 16 + cost_ns / 16, Ordering::Relaxed);
        self.load.recent_rooms.store(0, Ordering::Relaxed);
        let previous = self.governor.level();
        let Some(level) = self.governor.observe(now, cost, late) else {
            return;
        };
        self.thread.level.set(level as i64);
        if level > previous {
            self.metrics
                .degradations
                .with_label_values(&[level.name()])
                .inc();
            tracing::warn!(
                stage = level.name(),
                cost_ms = cost.as_secs_f64() * 1e3,
                "mixer thread overloaded: shedding work"
            );
        } else {
            self.metrics.restorations.inc();
            tracing::info!(stage = level.name(), "mixer thread recovered a stage");
        }
        for slot in self.rooms.values_mut() {
            slot.room.set_degradation(level);
        }
    }

    fn apply(&mut self, command: Command) {
        match command {
            Command::AddLeg {
                room,
                leg,
                mut io,
                media,
            } => {
                let config = self.config;
                let degradation = self.governor.level();
                let slot = self.rooms.entry(room).or_insert_with(|| {
                    let mut room = Room::new(config);
                    room.set_degradation(degradation);
                    RoomSlot {
                        room,
                        legs: HashMap::new(),
                        recorder: None,
                    }
                });
                match media {
                    Ok(prepared) => slot.room.add_prepared(prepared),
                    Err(error) => {
                        // The leg stays silent both ways; its call goes on and can be ended.
                        tracing::warn!(%leg, %error, "leg media could not be set up");
                        self.media.invalid(error);
                    }
                }
                io.intake.refresh();
                let remote = io.remote;
                slot.legs.insert(leg, LegSlot { io, remote });
            }
            Command::UpdateLeg {
                room,
                leg,
                codec,
                remote,
                hears,
                heard,
            } => {
                if let Some(slot) = self.rooms.get_mut(&room) {
                    if let Err(error) = slot.room.update_leg(leg, codec, hears, heard) {
                        tracing::warn!(%leg, %error, "leg codec change failed; keeping the old one");
                        self.media.invalid(error);
                    }
                    if let Some(l) = slot.legs.get_mut(&leg) {
                        l.remote = remote;
                        l.io.intake.refresh();
                    }
                }
            }
            Command::Play { room, leg, samples } => {
                if let Some(slot) = self.rooms.get_mut(&room) {
                    slot.room.play(leg, samples);
                }
            }
            Command::SetControls {
                room,
                leg,
                controls,
            } => {
                if let Some(slot) = self.rooms.get_mut(&room) {
                    slot.room.set_controls(leg, controls);
                }
            }
            Command::SetRelations {
                room,
                leg,
                relations,
            } => {
                if let Some(slot) = self.rooms.get_mut(&room) {
                    slot.room.set_relations(leg, relations);
                }
            }
            Command::Announce { room, samples } => {
                if let Some(slot) = self.rooms.get_mut(&room) {
                    slot.room.announce(samples);
                }
            }
            Command::SetHold { room, sound } => {
                if let Some(slot) = self.rooms.get_mut(&room) {
                    slot.room.set_hold(sound);
                }
            }
            Command::SetRoomAec { room, mode } => {
                if let Some(slot) = self.rooms.get_mut(&room) {
                    slot.room.set_aec(mode);
                }
            }
            Command::StopPrompt { room, leg, only } => {
                if let Some(slot) = self.rooms.get_mut(&room) {
                    slot.room.stop_prompt(leg, only.as_ref());
                }
            }
            Command::DetachLeg { room, leg, reply } => {
                if let Some(slot) = self.rooms.get_mut(&room) {
                    slot.room.remove_leg(leg);
                    if let Some(LegSlot { mut io, remote }) = slot.legs.remove(&leg) {
                        io.remote = remote;
                        reply(io);
                    }
                }
            }
            Command::RemoveLeg { room, leg } => {
                if let Some(slot) = self.rooms.get_mut(&room) {
                    slot.room.remove_leg(leg);
                    slot.legs.remove(&leg);
                }
            }
            Command::StartRecording {
                room,
                sink,
                tracks,
                whispers,
            } => {
                if let Some(slot) = self.rooms.get_mut(&room) {
                    slot.recorder = Some(sink);
                    slot.room.set_recording(true, tracks);
                    slot.room.set_record_whispers(whispers);
                }
            }
            Command::StopRecording { room } => {
                if let Some(slot) = self.rooms.get_mut(&room) {
                    slot.recorder = None;
                    slot.room.set_recording(false, false);
                }
            }
            Command::SlowStage(drill) => self.drill = drill,
            Command::Stall(pause) => std::thread::sleep(pause),
            Command::CloseRoom { room } => {
                self.rooms.remove(&room);
            }
            Command::Shutdown => {}
        }
    }
}

/// One tick of one room: read legs' sockets, mix, send, feed the recorder, pass on events.
// The thread's per-tick state, passed apart so that the room's slot can be borrowed mutably
// next to the thread's shared parts.
#[allow(clippy::too_many_arguments)]
fn tick_room(
    key: &RoomKey,
    slot: &mut RoomSlot,
    now: Instant,
    tick: u64,
    batch: &mut RecvBatch,
    metrics: &MixerMetrics,
    media: &MediaMetrics,
    events: &SyncSender<MixerEvent>,
) {
    let clock = ClockPair::now();
    let room = &mut slot.room;
    let mut received = 0;
    let refresh = tick.is_multiple_of(QUALITY_EVERY);
    for (id, leg) in slot.legs.iter_mut() {
        if refresh {
            // Settings changes also arrive with UpdateLeg; this catches any other path.
            leg.io.intake.refresh();
        }
        received += read_leg(
            room,
            *id,
            &mut leg.io.intake,
            &mut leg.remote,
            batch,
            &clock,
        );
    }
    media.packets_in(received);
    slot.room.tick(now);
    for _ in 0..slot.room.take_codec_errors() {
        media.invalid(MediaError::Codec("decode or encode"));
    }
    metrics
        .processing_errors
        .inc_by(slot.room.take_processing_errors());
    while let Some(event) = slot.room.poll_event() {
        if events
            .try_send(MixerEvent {
                room: key.clone(),
                event,
            })
            .is_err()
        {
            metrics.events_dropped.inc();
        }
    }
    let mut sent = 0;
    for (id, packet) in slot.room.packets() {
        let Some(leg) = slot.legs.get_mut(&id) else {
            continue;
        };
        let protected;
        let packet = match leg.io.protect.as_mut().map(|p| p.rtp(packet)) {
            None => packet,
            Some(Ok(p)) => {
                protected = p;
                &protected[..]
            }
            Some(Err(error)) => {
                media.invalid(error);
                continue;
            }
        };
        match leg.io.intake.send(packet, leg.remote) {
            Ok(_) => {
                leg.io.counters.packets_out.fetch_add(1, Ordering::Relaxed);
                sent += 1;
            }
            Err(_) => metrics.send_errors.inc(),
        }
    }
    media.packets_out(sent);
    if tick.is_multiple_of(QUALITY_EVERY) {
        for (id, quality) in slot.room.quality() {
            if let Some(leg) = slot.legs.get(&id) {
                leg.io.counters.publish(quality);
            }
        }
    }
    if let Some(sink) = &slot.recorder {
        let legs = slot
            .room
            .tracks()
            .map(|(leg, source, samples)| LegFrame {
                leg,
                source,
                samples: samples.into(),
            })
            .collect();
        let frame = MixFrame {
            tick,
            samples: slot.room.mix().into(),
            legs,
        };
        match sink.try_send(frame) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => metrics.recorder_frames_dropped.inc(),
            Err(TrySendError::Disconnected(_)) => {
                slot.recorder = None;
                slot.room.set_recording(false, false);
            }
        }
    }
}

/// Reads one leg's socket into its room for this tick (bounded by the intake's per-tick cap):
/// reading that stopped early goes on when the leg's jitter buffer still lacks its next frame.
/// Returns the valid packets taken.
fn read_leg(
    room: &mut Room,
    id: LegId,
    intake: &mut RtpIntake,
    remote: &mut SocketAddr,
    batch: &mut RecvBatch,
    clock: &ClockPair,
) -> u64 {
    let polled = intake.poll(batch, clock, |input| deliver(room, remote, id, input));
    let mut taken = polled.accepted;
    if polled.stopped_early && !room.input_ready(id) {
        taken += intake.poll_rest(batch, clock, |input| deliver(room, remote, id, input));
    }
    taken
}

/// Hands what a leg's intake read to its room, or notes the leg's new address.
fn deliver(room: &mut Room, remote: &mut SocketAddr, id: LegId, input: LegInput<'_>) {
    match input {
        LegInput::Audio { info, payload } => room.handle_audio(id, info, payload),
        LegInput::Remote(addr) => *remote = addr,
    }
}

/// The CPU time the calling thread has used. The governor and the room placement judge a tick
/// by it (through [`CpuStopwatch`]) rather than by the wall clock: time the thread spent
/// preempted (by other threads or processes, a hypervisor's steal, a container's CPU
/// throttling) is no work that shedding would save. A thread kept from running for long still counts as overloaded through its late
/// ticks. `None` where the clock is missing (then the wall clock is used).
#[cfg(unix)]
// clock_gettime(CLOCK_THREAD_CPUTIME_ID) has no safe wrapper in std or libc.
#[allow(unsafe_code)]
fn thread_cpu_time() -> Option<Duration> {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec for the call to fill in.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) } == 0;
    (ok && now.tv_sec >= 0).then(|| Duration::new(now.tv_sec as u64, now.tv_nsec as u32))
}

#[cfg(not(unix))]
fn thread_cpu_time() -> Option<Duration> {
    None
}

/// The calling thread's CPU time since it started (see [`thread_cpu_time`]), or the wall time
/// where the CPU clock is missing.
struct CpuStopwatch {
    started: Instant,
    cpu: Option<Duration>,
}

impl CpuStopwatch {
    fn start() -> CpuStopwatch {
        CpuStopwatch {
            started: Instant::now(),
            cpu: thread_cpu_time(),
        }
    }

    fn used(&self) -> Duration {
        self.cpu.zip(thread_cpu_time()).map_or_else(
            || self.started.elapsed(),
            |(start, now)| now.saturating_sub(start),
        )
    }
}

/// Keeps the calling thread busy until it has used `cost` of CPU time (an overload drill's
/// slow stage), for at most ten times `cost` on the wall clock.
fn burn_cpu(cost: Duration) {
    let watch = CpuStopwatch::start();
    while watch.started.elapsed() < cost * 10 && watch.used() < cost {
        std::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stalled thread misses its heartbeat; the others keep theirs; it recovers after.
    #[test]
    fn heartbeats_show_a_stalled_thread() {
        let registry = prometheus::Registry::new();
        let metrics = MixerMetrics::register(&registry).unwrap();
        let media = MediaMetrics::register(&registry).unwrap();
        let (events, _events_rx) = mpsc::sync_channel(16);
        let pool = MixerPool::start(2, RoomConfig::at(16000), metrics, media, events).unwrap();
        let beats = pool.heartbeats();
        let second = Duration::from_secs(1);
        assert_eq!(beats.threads(), 2);
        std::thread::sleep(Duration::from_millis(100));
        assert!(beats.stalled(Instant::now(), second).is_empty());
        assert!(pool.stall_thread(1, Duration::from_millis(1600)));
        assert!(!pool.stall_thread(2, second), "no third thread");
        std::thread::sleep(Duration::from_millis(1300));
        assert_eq!(beats.stalled(Instant::now(), second), [1]);
        std::thread::sleep(Duration::from_millis(600));
        assert!(
            beats.stalled(Instant::now(), second).is_empty(),
            "ticking again"
        );
        pool.shutdown();
    }

    /// A slow noise-suppression stage injected into a real mixer thread: it sheds noise
    /// suppression (and nothing more), counts it, and takes it back once the drill ends and its
    /// measured saving has aged (about 20 s; see the governor).
    #[test]
    fn an_injected_slow_stage_is_shed_counted_and_recovered() {
        let registry = prometheus::Registry::new();
        let metrics = MixerMetrics::register(&registry).unwrap();
        let media = MediaMetrics::register(&registry).unwrap();
        let (events, _events_rx) = mpsc::sync_channel(16);
        let pool =
            MixerPool::start(1, RoomConfig::at(16000), metrics.clone(), media, events).unwrap();
        let shed = || {
            metrics
                .degradations
                .with_label_values(&[Degradation::NoNoiseSuppression.name()])
                .get()
        };
        let level = || metrics.degradation_level.with_label_values(&["0"]).get();
        assert!(pool.send(
            WorkerId(0),
            Command::SlowStage(Some((
                Degradation::NoNoiseSuppression,
                Duration::from_millis(17)
            )))
        ));
        let deadline = Instant::now() + Duration::from_secs(5);
        while shed() == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            (shed(), level()),
            (1, Degradation::NoNoiseSuppression as i64),
            "shed within 5 s"
        );
        // Shedding it cured the overload: nothing further is shed.
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(
            metrics
                .degradations
                .with_label_values(&[Degradation::NoAutoAec.name()])
                .get(),
            0
        );
        assert!(pool.send(WorkerId(0), Command::SlowStage(None)));
        let deadline = Instant::now() + Duration::from_secs(60);
        while metrics.restorations.get() == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(
            (metrics.restorations.get(), level()),
            (1, Degradation::Full as i64),
            "recovered within 60 s"
        );
        assert_eq!(shed(), 1, "shed once");
        pool.shutdown();
    }

    /// A leg whose jitter buffer concealed a late packet gets it, and the two behind it, in one
    /// burst: the first ends the read (fresh, in order), but the frame due next is behind it,
    /// so the rest of the socket is read in the same tick rather than concealed too.
    #[test]
    fn a_burst_behind_a_concealed_frame_is_read_in_the_same_tick() {
        let rtp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rtp.set_nonblocking(true).unwrap();
        let rtcp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let config = roundtable_media::socket::ReceiveConfig {
            audio_pt: 0,
            telephone_event: None,
            inactivity: None,
            clock_rate: 8000,
            rtcp_mux: false,
            rtcp_remote: peer.local_addr().unwrap(),
        };
        let (_settings_tx, settings) = tokio::sync::watch::channel(config);
        let (digits, _digits_rx) = tokio::sync::mpsc::channel(4);
        let media = MediaMetrics::register(&prometheus::Registry::new()).unwrap();
        let counters = Arc::new(LegCounters::default());
        let cancel = tokio_util::sync::CancellationToken::new();
        let (mut intake, _supervision) = roundtable_media::socket::split_receive(
            rtp.try_clone().unwrap(),
            rtcp,
            settings,
            None,
            digits,
            counters,
            media,
            cancel,
        )
        .unwrap();
        let to = rtp.local_addr().unwrap();
        let send = |sequence: u16| {
            let mut packet = vec![0x80, 0];
            packet.extend_from_slice(&sequence.to_be_bytes());
            packet.extend_from_slice(&(u32::from(sequence) * 160).to_be_bytes());
            packet.extend_from_slice(&7u32.to_be_bytes());
            packet.extend_from_slice(&[0xff; 160]);
            peer.send_to(&packet, to).unwrap();
        };
        let id = LegId(1);
        let mut room = Room::new(RoomConfig::at(8000));
        room.add_leg(id, LegCodec::plain(roundtable_media::codec::Codec::Pcmu), 1)
            .unwrap();
        let mut remote = peer.local_addr().unwrap();
        let mut batch = RecvBatch::new(RECV_BATCH);
        let start = Instant::now();
        let tick = |room: &mut Room, n: u64| room.tick(start + Duration::from_millis(20 * n));
        // A steady stream, one packet per tick, until playout runs.
        for sequence in 1..=10u16 {
            send(sequence);
            std::thread::sleep(Duration::from_millis(2));
            assert_eq!(
                read_leg(
                    &mut room,
                    id,
                    &mut intake,
                    &mut remote,
                    &mut batch,
                    &ClockPair::now()
                ),
                1
            );
            tick(&mut room, u64::from(sequence));
        }
        // Packet 11 is late: the buffer plays the 10 it held, then conceals 11 and waits for 12.
        tick(&mut room, 11);
        tick(&mut room, 12);
        assert!(!room.input_ready(id));
        // 11, 12 and 13 arrive together.
        for sequence in 11..=13u16 {
            send(sequence);
        }
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(
            read_leg(
                &mut room,
                id,
                &mut intake,
                &mut remote,
                &mut batch,
                &ClockPair::now()
            ),
            3,
            "the whole burst in one tick"
        );
        assert!(room.input_ready(id), "the frame due next is here");
    }

    /// A tick's cost is the thread's own CPU time: time asleep (or preempted) is not counted,
    /// work is.
    #[cfg(unix)]
    #[test]
    fn thread_cpu_time_counts_work_not_sleep() {
        let before = thread_cpu_time().expect("thread CPU clock");
        std::thread::sleep(Duration::from_millis(30));
        let slept = thread_cpu_time().unwrap() - before;
        assert!(
            slept < Duration::from_millis(10),
            "{slept:?} counted for 30 ms of sleep"
        );
        let before = thread_cpu_time().unwrap();
        burn_cpu(Duration::from_millis(20));
        let burnt = thread_cpu_time().unwrap() - before;
        assert!(
            burnt >= Duration::from_millis(20),
            "{burnt:?} counted for 20 ms of work"
        );
    }
}
