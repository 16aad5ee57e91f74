//! The PIN lobby (sans-IO): one state machine per caller that dialled the lobby. It asks for the
//! conference ID, then the room's PIN, by DTMF, and decides to join, retry or hang up.
//!
//! Drive it with [`Lobby::handle_digit`] and [`Lobby::handle_timeout`] (at [`Lobby::poll_timeout`]),
//! then drain [`Lobby::poll_action`]. Room lookups and the cross-call lockout are asked of a
//! [`Directory`], so the lobby itself holds no shared state.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Time allowed between two key presses before the entry counts as finished.
pub const INTER_DIGIT_TIMEOUT: Duration = Duration::from_secs(5);
/// Entries per call (conference ID or PIN) before the lobby says goodbye.
pub const TRIES: u8 = 3;
/// Longest entry kept; more digits are ignored until `#`.
const MAX_ENTRY: usize = 32;

/// The recorded messages the lobby plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Prompt {
    /// "Welcome. Please enter the conference number, followed by the pound key."
    Welcome,
    /// "Please enter the conference PIN, followed by the pound key."
    EnterPin,
    /// "That conference number is not valid."
    InvalidRoom,
    /// "That PIN is not correct."
    WrongPin,
    /// "You are now joining the conference."
    Joining,
    /// "Goodbye."
    Goodbye,
    /// "You are currently the only participant in this conference." (played in rooms)
    Alone,
    /// "This call is being recorded." (`recording.consent_notice`)
    Recording,
}

impl Prompt {
    /// Every prompt, for loading and generating them.
    pub const ALL: [Prompt; 8] = [
        Prompt::Welcome,
        Prompt::EnterPin,
        Prompt::InvalidRoom,
        Prompt::WrongPin,
        Prompt::Joining,
        Prompt::Goodbye,
        Prompt::Alone,
        Prompt::Recording,
    ];
}

/// What the lobby knows of a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomAccess {
    /// The PIN callers enter; `None` means the room is open.
    pub pin: Option<String>,
    /// The PIN that joins as moderator.
    pub moderator_pin: Option<String>,
}

/// Room lookups and the brute-force lockout, shared across calls.
pub trait Directory {
    /// The room's access rules, if the room exists.
    fn room(&self, id: &str) -> Option<RoomAccess>;
    /// Whether PIN attempts against `room` (or from this caller's address) are locked out now.
    fn locked_out(&self, room: &str) -> bool;
    /// Counts one wrong PIN (or unknown room) for this caller's address and, if given, the room.
    fn record_failure(&mut self, room: Option<&str>);
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Play a prompt (replacing any prompt still playing).
    Play(Prompt),
    /// Stop the prompt that plays (the caller started typing).
    StopPrompt,
    /// Move the caller into the room.
    Join {
        /// The room id.
        room: String,
        /// Whether the moderator PIN was entered.
        moderator: bool,
    },
    /// End the call (after the goodbye prompt has played).
    Hangup,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Stage {
    AskRoom,
    AskPin { room: String, access: RoomAccess },
    Leaving,
    Done,
}

/// One caller's way through the lobby.
#[derive(Debug)]
pub struct Lobby {
    stage: Stage,
    entry: String,
    tries_left: u8,
    /// When the current entry times out, or when to hang up after the goodbye.
    deadline: Option<Instant>,
    prompt_playing: bool,
    actions: VecDeque<Action>,
    goodbye_length: Duration,
}

impl Lobby {
    /// A caller just answered: the welcome prompt plays. `goodbye_length` is how long the
    /// goodbye prompt lasts, so the hang-up follows it.
    pub fn new(now: Instant, goodbye_length: Duration) -> Lobby {
        let mut lobby = Lobby {
            stage: Stage::AskRoom,
            entry: String::new(),
            tries_left: TRIES,
            deadline: None,
            prompt_playing: false,
            actions: VecDeque::new(),
            goodbye_length,
        };
        lobby.play(Prompt::Welcome);
        // Callers who never type still leave: the entry times out like any other.
        lobby.deadline = Some(now + INTER_DIGIT_TIMEOUT * 3);
        lobby
    }

    /// The next action, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Lobby::handle_timeout`] is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    fn play(&mut self, prompt: Prompt) {
        self.prompt_playing = true;
        self.actions.push_back(Action::Play(prompt));
    }

    /// One key press.
    pub fn handle_digit(&mut self, now: Instant, digit: char, directory: &mut dyn Directory) {
        if !matches!(self.stage, Stage::AskRoom | Stage::AskPin { .. }) {
            return;
        }
        if self.prompt_playing {
            // Barge-in: typing during a prompt stops it.
            self.prompt_playing = false;
            self.actions.push_back(Action::StopPrompt);
        }
        if digit == '#' {
            self.finish_entry(now, directory);
            return;
        }
        if self.entry.len() < MAX_ENTRY {
            self.entry.push(digit);
        }
        self.deadline = Some(now + INTER_DIGIT_TIMEOUT);
    }

    /// The deadline passed: the entry ends (an empty one counts as a failed try), or the call
    /// ends after the goodbye prompt.
    pub fn handle_timeout(&mut self, now: Instant, directory: &mut dyn Directory) {
        if self.deadline.is_none_or(|d| now < d) {
            return;
        }
        match self.stage {
            Stage::Leaving => {
                self.deadline = None;
                self.stage = Stage::Done;
                self.actions.push_back(Action::Hangup);
            }
            Stage::AskRoom | Stage::AskPin { .. } => self.finish_entry(now, directory),
            Stage::Done => self.deadline = None,
        }
    }

    fn finish_entry(&mut self, now: Instant, directory: &mut dyn Directory) {
        let entry = std::mem::take(&mut self.entry);
        self.deadline = Some(now + INTER_DIGIT_TIMEOUT * 3);
        match std::mem::replace(&mut self.stage, Stage::Done) {
            Stage::AskRoom => match directory.room(&entry).filter(|_| !entry.is_empty()) {
                None => {
                    directory.record_failure(None);
                    self.stage = Stage::AskRoom;
                    self.fail(now, Prompt::InvalidRoom, Prompt::Welcome);
                }
                Some(RoomAccess { pin: None, .. }) => self.join(entry, false),
                Some(access) => {
                    self.stage = Stage::AskPin {
                        room: entry,
                        access,
                    };
                    self.play(Prompt::EnterPin);
                }
            },
            Stage::AskPin { room, access } => {
                let moderator = access.moderator_pin.as_deref() == Some(entry.as_str());
                let member = access.pin.as_deref() == Some(entry.as_str());
                if !entry.is_empty() && (moderator || member) && !directory.locked_out(&room) {
                    self.join(room, moderator);
                } else {
                    directory.record_failure(Some(&room));
                    self.stage = Stage::AskPin { room, access };
                    self.fail(now, Prompt::WrongPin, Prompt::EnterPin);
                }
            }
            other => self.stage = other,
        }
    }

    fn fail(&mut self, now: Instant, complaint: Prompt, again: Prompt) {
        self.tries_left = self.tries_left.saturating_sub(1);
        if self.tries_left == 0 {
            // The hang-up follows the goodbye prompt (played from now on).
            self.stage = Stage::Leaving;
            self.play(Prompt::Goodbye);
            self.deadline = Some(now + self.goodbye_length + Duration::from_millis(200));
            return;
        }
        self.play(complaint);
        self.actions.push_back(Action::Play(again));
    }

    fn join(&mut self, room: String, moderator: bool) {
        self.stage = Stage::Done;
        self.deadline = None;
        self.actions.push_back(Action::Join { room, moderator });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Rooms {
        failures: Vec<Option<String>>,
        locked: bool,
    }

    impl Directory for Rooms {
        fn room(&self, id: &str) -> Option<RoomAccess> {
            match id {
                "4242" => Some(RoomAccess {
                    pin: Some("1234".into()),
                    moderator_pin: Some("9999".into()),
                }),
                "7" => Some(RoomAccess {
                    pin: None,
                    moderator_pin: None,
                }),
                _ => None,
            }
        }
        fn locked_out(&self, _room: &str) -> bool {
            self.locked
        }
        fn record_failure(&mut self, room: Option<&str>) {
            self.failures.push(room.map(str::to_string));
        }
    }

    fn actions(lobby: &mut Lobby) -> Vec<Action> {
        std::iter::from_fn(|| lobby.poll_action()).collect()
    }

    fn type_keys(lobby: &mut Lobby, now: Instant, keys: &str, rooms: &mut Rooms) {
        for k in keys.chars() {
            lobby.handle_digit(now, k, rooms);
        }
    }

    #[test]
    fn room_then_pin_joins() {
        let t0 = Instant::now();
        let mut rooms = Rooms::default();
        let mut lobby = Lobby::new(t0, Duration::from_secs(1));
        assert_eq!(actions(&mut lobby), [Action::Play(Prompt::Welcome)]);
        type_keys(&mut lobby, t0, "4242#", &mut rooms);
        assert_eq!(
            actions(&mut lobby),
            [Action::StopPrompt, Action::Play(Prompt::EnterPin)]
        );
        type_keys(&mut lobby, t0, "1234#", &mut rooms);
        assert_eq!(
            actions(&mut lobby),
            [
                Action::StopPrompt,
                Action::Join {
                    room: "4242".into(),
                    moderator: false
                }
            ]
        );
        assert_eq!(lobby.poll_timeout(), None, "nothing left to wait for");
    }

    #[test]
    fn moderator_pin_and_open_rooms_and_inter_digit_timeout() {
        let t0 = Instant::now();
        let mut rooms = Rooms::default();
        let mut lobby = Lobby::new(t0, Duration::from_secs(1));
        type_keys(&mut lobby, t0, "4242#9999#", &mut rooms);
        assert!(actions(&mut lobby).contains(&Action::Join {
            room: "4242".into(),
            moderator: true
        }));
        // An open room joins without a PIN; the entry ends 5 s after the last key, without '#'.
        let mut lobby = Lobby::new(t0, Duration::from_secs(1));
        type_keys(&mut lobby, t0, "7", &mut rooms);
        assert_eq!(lobby.poll_timeout(), Some(t0 + INTER_DIGIT_TIMEOUT));
        lobby.handle_timeout(t0 + INTER_DIGIT_TIMEOUT, &mut rooms);
        assert!(actions(&mut lobby).contains(&Action::Join {
            room: "7".into(),
            moderator: false
        }));
    }

    #[test]
    fn three_wrong_pins_say_goodbye_and_hang_up() {
        let t0 = Instant::now();
        let mut rooms = Rooms::default();
        let mut lobby = Lobby::new(t0, Duration::from_secs(1));
        type_keys(&mut lobby, t0, "4242#", &mut rooms);
        let _ = actions(&mut lobby);
        type_keys(&mut lobby, t0, "1111#", &mut rooms);
        assert_eq!(
            actions(&mut lobby),
            [
                Action::StopPrompt,
                Action::Play(Prompt::WrongPin),
                Action::Play(Prompt::EnterPin)
            ]
        );
        type_keys(&mut lobby, t0, "2222#3333#", &mut rooms);
        let last = actions(&mut lobby);
        assert_eq!(last.last(), Some(&Action::Play(Prompt::Goodbye)));
        let at = lobby.poll_timeout().expect("hang-up armed");
        assert!(at <= t0 + Duration::from_secs(3));
        lobby.handle_timeout(at, &mut rooms);
        assert_eq!(actions(&mut lobby), [Action::Hangup]);
        assert_eq!(rooms.failures.len(), 3);
        assert!(rooms.failures.iter().all(|f| f.as_deref() == Some("4242")));
    }

    #[test]
    fn locked_out_room_refuses_even_the_right_pin() {
        let t0 = Instant::now();
        let mut rooms = Rooms {
            locked: true,
            ..Rooms::default()
        };
        let mut lobby = Lobby::new(t0, Duration::from_secs(1));
        type_keys(&mut lobby, t0, "4242#1234#", &mut rooms);
        let got = actions(&mut lobby);
        assert!(got.contains(&Action::Play(Prompt::WrongPin)), "{got:?}");
        assert!(!got.iter().any(|a| matches!(a, Action::Join { .. })));
    }

    #[test]
    fn unknown_room_counts_a_try() {
        let t0 = Instant::now();
        let mut rooms = Rooms::default();
        let mut lobby = Lobby::new(t0, Duration::from_secs(1));
        type_keys(&mut lobby, t0, "99#", &mut rooms);
        let got = actions(&mut lobby);
        assert!(got.contains(&Action::Play(Prompt::InvalidRoom)), "{got:?}");
        assert_eq!(rooms.failures, [None]);
    }
}
