//! The frames a room hands its listeners (pure data): the mixer produces them every tick, the
//! recorder consumes them. They live here, beside the codecs, so that the recorder depends on
//! the media types and not on the mixer's audio processing.

/// Identifies a leg within the whole service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LegId(pub u64);

impl std::fmt::Display for LegId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Where a leg's frame of a tick came from (for a recording's ledger).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FrameSource {
    /// Its packet arrived in time (or was rebuilt from the next packet's FEC).
    #[default]
    Received,
    /// Its packet was lost and the frame was concealed.
    Concealed,
    /// No packet (the sender paused, or has not started): silence.
    Missing,
}

/// One 20 ms frame of a room's mix, numbered by tick so a listener can see gaps.
#[derive(Debug)]
pub struct MixFrame {
    /// The mixer thread's tick number; consecutive frames differ by one unless frames were lost.
    pub tick: u64,
    /// The samples, at the room's rate.
    pub samples: Box<[i16]>,
    /// Every leg's input this tick, when the recording asked for per-leg tracks.
    pub legs: Vec<LegFrame>,
}

/// One leg's input in a [`MixFrame`].
#[derive(Debug)]
pub struct LegFrame {
    /// The leg.
    pub leg: LegId,
    /// Whether it arrived, was concealed or is silence.
    pub source: FrameSource,
    /// The samples, at the room's rate.
    pub samples: Box<[i16]>,
}
