//! The ledger: what happened during a recording, on the recording's own timeline (`t_ms` from
//! the first sample). It is appended as JSON lines next to the audio while the call runs,
//! fsynced with it, and copied whole into the manifest at the end; a recording recovered after
//! a crash reads it back to learn what it was.

use serde::{Deserialize, Serialize};

/// One line of the ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Milliseconds from the recording's first sample.
    pub t_ms: u64,
    /// What happened.
    #[serde(flatten)]
    pub event: Event,
}

/// Something a compliance reviewer needs to know about a recording.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The recording began (always the first entry).
    Started {
        /// The room.
        room: String,
        /// The recording's id, `<room>/<START>`.
        id: String,
        /// Wall-clock start, Unix milliseconds (UTC).
        start_unix_ms: u64,
        /// Sample rate of every track.
        rate: u32,
        /// `mixed`, `tracks` or `both`.
        mode: String,
    },
    /// A leg is in the recording from now on.
    Joined {
        /// The leg's id (its track is `legs/<leg>.wav`).
        leg: String,
        /// The caller's From URI.
        from: String,
        /// The codec it sends.
        codec: String,
    },
    /// A leg left.
    Left {
        /// The leg.
        leg: String,
    },
    /// A leg was muted or unmuted (its track is silent while muted).
    Muted {
        /// The leg.
        leg: String,
        /// Now muted.
        muted: bool,
    },
    /// Whom a leg hears and who hears it changed (a whisper, a coach); `null` means everyone.
    Relations {
        /// The leg.
        leg: String,
        /// The legs it hears, or `null`: everyone.
        hears: Option<Vec<String>>,
        /// The legs that hear it, or `null`: everyone.
        heard_by: Option<Vec<String>>,
    },
    /// The room went on hold or came off it.
    Hold {
        /// Now on hold.
        on: bool,
    },
    /// Recording paused: silence is written until it resumes.
    Paused,
    /// Recording resumed.
    Resumed,
    /// A leg was played the recording notice.
    ConsentNotice {
        /// The leg.
        leg: String,
    },
    /// Audio a leg sent did not arrive, from `t_ms` for `ms`; `concealed` says whether it was
    /// filled by loss concealment (otherwise silence).
    Missing {
        /// The leg.
        leg: String,
        /// How long.
        ms: u64,
        /// Concealed (true) or silent (false).
        concealed: bool,
    },
    /// The room's mix did not reach the recorder from `t_ms` for `ms` (written as silence).
    Gap {
        /// How long.
        ms: u64,
        /// Why.
        reason: String,
    },
    /// An operator action through the API.
    Action {
        /// What was done.
        action: String,
        /// The caller's address.
        by: String,
    },
    /// Audio up to `t_ms` is on disk and fsynced.
    Checkpoint,
    /// The process ended without closing the recording; the audio from `t_ms` on, at most
    /// `at_most_ms` of it, was lost.
    Lost {
        /// The longest the lost span can be.
        at_most_ms: u64,
        /// What happened.
        reason: String,
    },
    /// The recording ended.
    Stopped,
    /// What became of the objects.
    Upload {
        /// `complete`, or what went wrong.
        outcome: String,
    },
}

/// Reads a ledger written as JSON lines; a torn last line (a crash mid-write) is dropped, any
/// other bad line is an error.
pub fn parse(text: &str) -> Result<Vec<Entry>, String> {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut entries = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_str(line) {
            Ok(entry) => entries.push(entry),
            Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => break,
            Err(e) => return Err(format!("ledger line {}: {e}", i + 1)),
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_drops_a_torn_tail() {
        let entries = vec![
            Entry {
                t_ms: 0,
                event: Event::Joined {
                    leg: "7".into(),
                    from: "sip:a@b".into(),
                    codec: "PCMU".into(),
                },
            },
            Entry {
                t_ms: 1000,
                event: Event::Checkpoint,
            },
        ];
        let mut text: String = entries
            .iter()
            .map(|e| serde_json::to_string(e).unwrap() + "\n")
            .collect();
        assert!(
            text.starts_with(r#"{"t_ms":0,"event":"joined","leg":"7""#),
            "{text}"
        );
        assert_eq!(parse(&text).unwrap(), entries);
        text.push_str(r#"{"t_ms":1020,"ev"#);
        assert_eq!(parse(&text).unwrap(), entries);
        let bad = text.replace("checkpoint", "nonsense");
        assert!(parse(&bad).is_err());
    }
}
