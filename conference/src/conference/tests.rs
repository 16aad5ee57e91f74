//! The conference core on simulated time: no sockets, no clock, every action checked.

use super::*;
use crate::lockout::Scope;

/// Rooms as the tests define them: `4242` has PINs, `small` holds two, `auto` records, `mod`
/// waits for and ends with its moderator; every other id is an open room of ten.
struct Book;

impl RoomDirectory for Book {
    fn defined(&self, room: &RoomId) -> bool {
        matches!(room.as_str(), "4242" | "small" | "auto" | "mod")
    }

    fn rules(&self, room: &RoomId) -> RoomRules {
        let mut rules = RoomRules {
            pin: None,
            moderator_pin: None,
            max_participants: 10,
            record: false,
            aec: None,
            policy: PolicySettings::default(),
        };
        match room.as_str() {
            "4242" => {
                rules.pin = Some(Secret::new("1234".into()));
                rules.moderator_pin = Some(Secret::new("9999".into()));
            }
            "small" => rules.max_participants = 2,
            "auto" => rules.record = true,
            "mod" => {
                rules.policy.wait_for_moderator = true;
                rules.policy.end_with_moderator = true;
            }
            _ => {}
        }
        rules
    }
}

fn limits() -> Limits {
    Limits {
        max_calls: 5,
        lockout: Lockout {
            max_failures: 3,
            window: Duration::from_secs(300),
            backoff: Duration::from_secs(60),
        },
        goodbye_length: Duration::from_secs(1),
        dial_outs: DialLimits {
            max_concurrent: 3,
            per_second: 2,
        },
    }
}

fn core() -> Conference {
    let mut core = Conference::new(limits());
    core.set_accepting(true);
    core
}

fn id(room: &str) -> RoomId {
    RoomId::parse(room).unwrap()
}

fn ip(last: u8) -> IpAddr {
    IpAddr::from([192, 0, 2, last])
}

fn drain(core: &mut Conference) -> Vec<Action> {
    std::iter::from_fn(|| core.poll_action()).collect()
}

fn to_room(room: &str, moderator: bool) -> Destination {
    Destination::Room {
        room: id(room),
        moderator,
    }
}

/// A caller that dialled `room` and whose media came up.
fn join(core: &mut Conference, now: Instant, room: &str, moderator: bool) -> (LegId, Vec<Action>) {
    let leg = core
        .handle_call(now, ip(1), to_room(room, moderator), &Book)
        .expect("admitted");
    assert!(
        drain(core).is_empty(),
        "nothing happens before its media is up"
    );
    core.handle_media_ready(now, leg, &Book).expect("joined");
    (leg, drain(core))
}

fn events(actions: &[Action]) -> Vec<Event> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Event { event, .. } => Some(event.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn the_first_caller_opens_the_room_and_hears_it_is_alone_until_the_second() {
    let t0 = Instant::now();
    let mut core = core();
    let room = id("1000");
    let (a, actions) = join(&mut core, t0, "1000", false);
    assert_eq!(
        actions,
        [
            Action::OpenRoom(room.clone()),
            Action::AddLeg {
                room: room.clone(),
                leg: a
            },
            Action::Play {
                room: room.clone(),
                leg: a,
                sound: Sound::Prompt(Prompt::Alone)
            },
            Action::Record {
                room: room.clone(),
                note: RecordNote::Joined(a)
            },
            Action::Event {
                room: room.clone(),
                event: Event::Joined {
                    leg: a,
                    moderator: false
                }
            },
        ]
    );
    let (b, actions) = join(&mut core, t0, "1000", false);
    assert_eq!(
        actions[..3],
        [
            Action::AddLeg {
                room: room.clone(),
                leg: b
            },
            Action::StopSound {
                room: room.clone(),
                leg: a,
                only: Some(Sound::Prompt(Prompt::Alone))
            },
            Action::Announce {
                room: room.clone(),
                sound: Sound::JoinTone
            },
        ]
    );
    let view = core.room(&id("1000")).expect("up");
    assert_eq!(
        view.members.iter().map(|m| m.leg).collect::<Vec<_>>(),
        [a, b]
    );
    assert_eq!(core.rooms().count(), 1);
}

#[test]
fn leaving_tells_the_room_and_the_last_one_out_closes_it() {
    let t0 = Instant::now();
    let mut core = core();
    let room = id("1000");
    let (a, _) = join(&mut core, t0, "1000", false);
    let (b, _) = join(&mut core, t0, "1000", false);
    core.handle_ended(t0, b, Departure::Hangup);
    let actions = drain(&mut core);
    assert!(
        !actions.contains(&Action::Hangup(b)),
        "no BYE to who hung up"
    );
    assert_eq!(
        actions,
        [
            Action::RemoveLeg {
                room: room.clone(),
                leg: b
            },
            Action::Record {
                room: room.clone(),
                note: RecordNote::Left(b)
            },
            Action::Event {
                room: room.clone(),
                event: Event::Left {
                    leg: b,
                    why: Departure::Hangup
                }
            },
            Action::Announce {
                room: room.clone(),
                sound: Sound::LeaveTone
            },
            Action::Play {
                room: room.clone(),
                leg: a,
                sound: Sound::Prompt(Prompt::Alone)
            },
            Action::Ended {
                leg: b,
                why: Departure::Hangup
            },
        ]
    );
    assert_eq!(core.kick(&id("1000"), b), Err(ConferenceError::LegNotFound));
    assert_eq!(core.kick(&id("9"), a), Err(ConferenceError::RoomNotFound));
    core.kick(&id("1000"), a).unwrap();
    let actions = drain(&mut core);
    assert_eq!(actions[0], Action::Hangup(a), "a kicked leg is sent BYE");
    assert!(actions.contains(&Action::CloseRoom(room)));
    assert_eq!(core.rooms().count(), 0);
    assert_eq!(core.active_legs(), 0);
    // Ending a leg twice does nothing more.
    core.handle_ended(t0, a, Departure::Hangup);
    assert!(drain(&mut core).is_empty());
}

#[test]
fn admission_limits_refuse_at_once() {
    let t0 = Instant::now();
    let mut core = Conference::new(limits());
    assert_eq!(
        core.handle_call(t0, ip(1), to_room("1", false), &Book),
        Err(Refusal::NotAccepting)
    );
    core.set_accepting(true);
    join(&mut core, t0, "small", false);
    join(&mut core, t0, "small", false);
    assert_eq!(
        core.handle_call(t0, ip(1), to_room("small", false), &Book),
        Err(Refusal::RoomFull)
    );
    for room in ["a", "b", "c"] {
        join(&mut core, t0, room, false);
    }
    assert_eq!(
        core.handle_call(t0, ip(1), to_room("d", false), &Book),
        Err(Refusal::MaxCalls),
        "five calls up"
    );
    core.set_accepting(false);
    assert_eq!(
        core.handle_call(t0, ip(1), to_room("a", false), &Book),
        Err(Refusal::NotAccepting)
    );
}

#[test]
fn a_room_that_filled_while_media_was_set_up_refuses_then() {
    let t0 = Instant::now();
    let mut core = core();
    let late = core
        .handle_call(t0, ip(1), to_room("small", false), &Book)
        .unwrap();
    join(&mut core, t0, "small", false);
    join(&mut core, t0, "small", false);
    assert_eq!(
        core.handle_media_ready(t0, late, &Book),
        Err(Refusal::RoomFull)
    );
    assert_eq!(
        drain(&mut core),
        [Action::Ended {
            leg: late,
            why: Departure::Refused
        }]
    );
    assert_eq!(core.active_legs(), 2);
    // A caller who hung up while its media was set up is simply gone.
    let gone = core
        .handle_call(t0, ip(1), to_room("x", false), &Book)
        .unwrap();
    core.handle_ended(t0, gone, Departure::Cancelled);
    assert_eq!(
        drain(&mut core),
        [Action::Ended {
            leg: gone,
            why: Departure::Cancelled
        }]
    );
    assert_eq!(core.handle_media_ready(t0, gone, &Book), Ok(()));
    assert!(drain(&mut core).is_empty());
}

#[test]
fn key_commands_mute_oneself_and_let_moderators_lock() {
    let t0 = Instant::now();
    let mut core = core();
    let room = id("1000");
    let (member, _) = join(&mut core, t0, "1000", false);
    let (moderator, _) = join(&mut core, t0, "1000", true);
    core.handle_digit(t0, member, '*', &Book);
    core.handle_digit(t0, member, '6', &Book);
    let actions = drain(&mut core);
    assert!(actions.contains(&Action::Mute {
        room: room.clone(),
        leg: member,
        muted: true
    }));
    assert!(actions.contains(&Action::Record {
        room: room.clone(),
        note: RecordNote::Muted(member, true)
    }));
    assert_eq!(
        events(&actions),
        [
            Event::Dtmf {
                leg: member,
                digit: '*'
            },
            Event::Dtmf {
                leg: member,
                digit: '6'
            }
        ]
    );
    assert!(core.room(&id("1000")).unwrap().members[0].muted);
    // *5 locks only for moderators.
    core.handle_digit(t0, member, '*', &Book);
    core.handle_digit(t0, member, '5', &Book);
    assert!(!core.room(&id("1000")).unwrap().locked);
    core.handle_digit(t0, moderator, '*', &Book);
    core.handle_digit(t0, moderator, '5', &Book);
    assert!(core.room(&id("1000")).unwrap().locked);
    assert!(events(&drain(&mut core)).contains(&Event::Locked(true)));
    assert_eq!(
        core.handle_call(t0, ip(1), to_room("1000", false), &Book),
        Err(Refusal::RoomLocked)
    );
    // A 5 without the star is just a key.
    core.handle_digit(t0, moderator, '5', &Book);
    assert!(core.room(&id("1000")).unwrap().locked);
    core.set_locked(&id("1000"), false).unwrap();
    assert_eq!(
        events(&drain(&mut core)).last(),
        Some(&Event::Locked(false))
    );
    assert_eq!(
        core.set_locked(&id("nope"), true),
        Err(ConferenceError::RoomNotFound)
    );
}

#[test]
fn a_room_waits_for_its_moderator_and_ends_with_it() {
    let t0 = Instant::now();
    let mut core = core();
    let room = id("mod");
    let (a, actions) = join(&mut core, t0, "mod", false);
    assert!(actions.contains(&Action::Hold {
        room: room.clone(),
        on: true
    }));
    assert!(events(&actions).contains(&Event::WaitingForModerator(true)));
    let (b, _) = join(&mut core, t0, "mod", false);
    assert!(core.room(&id("mod")).unwrap().waiting_for_moderator);
    let (boss, actions) = join(&mut core, t0, "mod", true);
    assert!(actions.contains(&Action::Hold {
        room: room.clone(),
        on: false
    }));
    assert!(actions.contains(&Action::Record {
        room: room.clone(),
        note: RecordNote::Hold(false)
    }));
    core.handle_ended(t0, boss, Departure::Hangup);
    let actions = drain(&mut core);
    for leg in [a, b] {
        assert!(actions.contains(&Action::Hangup(leg)), "{leg} is hung up");
        assert!(actions.contains(&Action::Ended {
            leg,
            why: Departure::ModeratorLeft
        }));
    }
    assert_eq!(
        actions.last(),
        Some(&Action::Ended {
            leg: boss,
            why: Departure::Hangup
        })
    );
    assert!(actions.contains(&Action::CloseRoom(room)));
    assert_eq!(core.active_legs(), 0);
}

#[test]
fn a_room_set_to_record_starts_recording_at_its_first_join_only() {
    let t0 = Instant::now();
    let mut core = core();
    let (_, first) = join(&mut core, t0, "auto", false);
    assert_eq!(first.last(), Some(&Action::AutoRecord(id("auto"))));
    let (_, second) = join(&mut core, t0, "auto", false);
    assert!(!second.iter().any(|a| matches!(a, Action::AutoRecord(_))));
}

/// A caller in the lobby: returns the leg and its private mixer room.
fn lobby_caller(core: &mut Conference, now: Instant, source: u8) -> (LegId, RoomId) {
    let leg = core
        .handle_call(now, ip(source), Destination::Lobby, &Book)
        .unwrap();
    core.handle_media_ready(now, leg, &Book).unwrap();
    let private = RoomId::lobby(leg);
    assert_eq!(
        drain(core),
        [
            Action::OpenRoom(private.clone()),
            Action::AddLeg {
                room: private.clone(),
                leg
            },
            Action::Play {
                room: private.clone(),
                leg,
                sound: Sound::Prompt(Prompt::Welcome)
            },
        ]
    );
    (leg, private)
}

fn keys(core: &mut Conference, now: Instant, leg: LegId, keys: &str) -> Vec<Action> {
    for k in keys.chars() {
        core.handle_digit(now, leg, k, &Book);
    }
    drain(core)
}

#[test]
fn the_lobby_moves_a_caller_with_the_right_pin_into_its_room() {
    let t0 = Instant::now();
    let mut core = core();
    let (leg, private) = lobby_caller(&mut core, t0, 1);
    assert!(
        core.poll_timeout().is_some(),
        "a caller who never types times out"
    );
    let actions = keys(&mut core, t0, leg, "4242#9999#");
    let room = id("4242");
    assert!(actions.contains(&Action::Tally(Tally::LobbyJoined)));
    let at = actions
        .iter()
        .position(|a| *a == Action::OpenRoom(room.clone()))
        .expect("the room opens");
    assert_eq!(
        actions[at + 1],
        Action::MoveLeg {
            leg,
            from: private,
            to: room.clone()
        }
    );
    assert!(events(&actions).contains(&Event::Joined {
        leg,
        moderator: true
    }));
    assert!(
        !events(&actions)
            .iter()
            .any(|e| matches!(e, Event::Dtmf { .. })),
        "lobby keys are not room events"
    );
    assert_eq!(core.room_of(leg), Some(&room));
    assert_eq!(core.poll_timeout(), None);
    // In the room, keys are the room's.
    assert_eq!(
        events(&keys(&mut core, t0, leg, "1")),
        [Event::Dtmf { leg, digit: '1' }]
    );
}

#[test]
fn wrong_pins_hang_up_after_the_goodbye_and_lock_the_caller_out() {
    let t0 = Instant::now();
    let mut core = core();
    let (leg, private) = lobby_caller(&mut core, t0, 7);
    let actions = keys(&mut core, t0, leg, "4242#1111#2222#3333#");
    let wrong = actions
        .iter()
        .filter(|a| **a == Action::Tally(Tally::WrongPin))
        .count();
    assert_eq!(wrong, 3);
    assert!(actions.contains(&Action::Tally(Tally::Lockout {
        scope: Scope::Source,
        source: ip(7),
        room: Some("4242".into())
    })));
    assert!(actions.contains(&Action::Play {
        room: private.clone(),
        leg,
        sound: Sound::Prompt(Prompt::Goodbye)
    }));
    // Nothing before the goodbye has played.
    let at = core.poll_timeout().expect("the hang-up is armed");
    core.handle_timeout(at - Duration::from_millis(1), &Book);
    assert!(drain(&mut core).is_empty());
    core.handle_timeout(at, &Book);
    assert_eq!(
        drain(&mut core),
        [
            Action::Tally(Tally::LobbyHungUp),
            Action::Hangup(leg),
            Action::RemoveLeg {
                room: private.clone(),
                leg
            },
            Action::CloseRoom(private),
            Action::Ended {
                leg,
                why: Departure::LobbyFailed
            },
        ]
    );
    assert_eq!(
        core.handle_call(at, ip(7), Destination::Lobby, &Book),
        Err(Refusal::LockedOut)
    );
    assert!(
        core.handle_call(at, ip(8), Destination::Lobby, &Book)
            .is_ok(),
        "only that address"
    );
    // The lockout ends after its back-off.
    let later = at + Duration::from_secs(61);
    assert!(
        core.handle_call(later, ip(7), Destination::Lobby, &Book)
            .is_ok()
    );
}

#[test]
fn a_lobby_caller_whose_room_filled_is_hung_up() {
    let t0 = Instant::now();
    let mut core = core();
    join(&mut core, t0, "small", false);
    join(&mut core, t0, "small", false);
    let (leg, private) = lobby_caller(&mut core, t0, 1);
    let actions = keys(&mut core, t0, leg, "small#");
    assert!(actions.contains(&Action::Hangup(leg)));
    assert!(actions.contains(&Action::CloseRoom(private)));
    assert!(actions.contains(&Action::Ended {
        leg,
        why: Departure::RoomFull
    }));
    assert_eq!(core.room(&id("small")).unwrap().members.len(), 2);
}

#[test]
fn shutdown_hangs_up_everyone_in_rooms_and_lobbies() {
    let t0 = Instant::now();
    let mut core = core();
    let (a, _) = join(&mut core, t0, "1000", false);
    let (b, _) = lobby_caller(&mut core, t0, 1);
    let pending = core
        .handle_call(t0, ip(2), to_room("1000", false), &Book)
        .unwrap();
    core.hang_up_all();
    let actions = drain(&mut core);
    for leg in [a, b, pending] {
        assert!(actions.contains(&Action::Hangup(leg)), "{leg}");
    }
    assert_eq!(core.active_legs(), 0);
    assert_eq!(core.rooms().count(), 0);
}

#[test]
fn time_never_runs_backwards() {
    let t0 = Instant::now();
    let mut core = core();
    let (leg, _) = lobby_caller(&mut core, t0 + Duration::from_secs(20), 1);
    let deadline = core.poll_timeout().unwrap();
    // An older `now` is taken as the latest one seen.
    core.handle_timeout(t0, &Book);
    assert!(drain(&mut core).is_empty());
    assert_eq!(core.poll_timeout(), Some(deadline));
    core.handle_ended(t0, leg, Departure::Hangup);
}

fn dial(room: &str) -> DialOut {
    DialOut {
        room: id(room),
        moderator: false,
        muted: true,
        timeout: Duration::from_secs(30),
    }
}

fn dial_states(actions: &[Action]) -> Vec<DialState> {
    events(actions)
        .into_iter()
        .filter_map(|e| match e {
            Event::DialState { state, .. } => Some(state),
            _ => None,
        })
        .collect()
}

#[test]
fn a_dial_out_rings_is_answered_and_joins_its_room_muted() {
    let t0 = Instant::now();
    let mut core = core();
    let leg = core.dial_out(t0, dial("2000"), &Book).expect("placed");
    assert_eq!(dial_states(&drain(&mut core)), [DialState::Dialing]);
    assert!(
        core.room(&id("2000")).is_none(),
        "no room before the answer"
    );
    assert_eq!(core.dial_outs(&id("2000"))[0].state, DialState::Dialing);
    core.handle_dial_progress(t0, leg);
    core.handle_dial_progress(t0, leg);
    assert_eq!(
        dial_states(&drain(&mut core)),
        [DialState::Ringing],
        "reported once"
    );
    core.handle_dial_answered(t0, leg);
    assert_eq!(dial_states(&drain(&mut core)), [DialState::Answered]);
    assert_eq!(core.dial_outs(&id("2000"))[0].state, DialState::Answered);
    core.handle_media_ready(t0, leg, &Book).expect("joins");
    let actions = drain(&mut core);
    assert!(
        actions.contains(&Action::OpenRoom(id("2000"))),
        "it creates the room"
    );
    assert!(actions.contains(&Action::Mute {
        room: id("2000"),
        leg,
        muted: true
    }));
    assert!(core.dial_outs(&id("2000")).is_empty());
    assert_eq!(core.room(&id("2000")).unwrap().members[0].leg, leg);
    // Its hang-up later ends it.
    core.handle_ended(t0, leg, Departure::Hangup);
    assert_eq!(dial_states(&drain(&mut core)), [DialState::Ended]);
}

#[test]
fn a_failed_dial_out_reports_its_code_and_leaves_without_a_hangup() {
    let t0 = Instant::now();
    let mut core = core();
    let leg = core.dial_out(t0, dial("2000"), &Book).unwrap();
    drain(&mut core);
    core.handle_dial_failed(t0, leg, 486, "Busy Here");
    let actions = drain(&mut core);
    assert_eq!(
        dial_states(&actions),
        [DialState::Failed {
            code: 486,
            reason: "Busy Here".into()
        }]
    );
    assert!(!actions.contains(&Action::Hangup(leg)));
    assert!(actions.contains(&Action::Ended {
        leg,
        why: Departure::DialFailed
    }));
    assert_eq!(core.active_legs(), 0);
}

#[test]
fn nobody_answering_cancels_at_the_timeout_and_fails_as_no_answer() {
    let t0 = Instant::now();
    let mut core = core();
    let leg = core.dial_out(t0, dial("2000"), &Book).unwrap();
    drain(&mut core);
    assert_eq!(core.poll_timeout(), Some(t0 + Duration::from_secs(30)));
    core.handle_timeout(t0 + Duration::from_secs(30), &Book);
    assert_eq!(drain(&mut core), [Action::Hangup(leg)], "CANCEL");
    assert_eq!(core.poll_timeout(), None, "given up: no second CANCEL");
    // The 487 that follows the CANCEL reads as no answer.
    core.handle_dial_failed(t0 + Duration::from_secs(31), leg, 487, "Request Terminated");
    assert_eq!(
        dial_states(&drain(&mut core)),
        [DialState::Failed {
            code: 480,
            reason: "No Answer".into()
        }]
    );
}

#[test]
fn kicking_a_ringing_dial_out_cancels_it_and_it_ends() {
    let t0 = Instant::now();
    let mut core = core();
    let leg = core.dial_out(t0, dial("2000"), &Book).unwrap();
    core.handle_dial_progress(t0, leg);
    drain(&mut core);
    assert_eq!(
        core.kick(&id("other"), leg),
        Err(ConferenceError::RoomNotFound),
        "only from its own room"
    );
    assert!(core.still_dialing(leg));
    core.kick(&id("2000"), leg).expect("cancelled");
    assert_eq!(drain(&mut core), [Action::Hangup(leg)]);
    assert!(!core.still_dialing(leg), "a redirect now is not followed");
    core.handle_dial_failed(t0, leg, 487, "Request Terminated");
    assert_eq!(dial_states(&drain(&mut core)), [DialState::Ended]);
}

#[test]
fn dial_outs_obey_limits_and_a_room_that_filled_meanwhile_hangs_up_the_answered_call() {
    let t0 = Instant::now();
    let mut core = core();
    let leg = core.dial_out(t0, dial("small"), &Book).unwrap();
    drain(&mut core);
    join(&mut core, t0, "small", false);
    join(&mut core, t0, "small", false);
    assert_eq!(
        core.dial_out(t0, dial("small"), &Book),
        Err(DialRefusal::Admission(Refusal::RoomFull))
    );
    core.handle_dial_answered(t0, leg);
    drain(&mut core);
    assert_eq!(
        core.handle_media_ready(t0, leg, &Book),
        Err(Refusal::RoomFull)
    );
    let actions = drain(&mut core);
    assert!(
        actions.contains(&Action::Hangup(leg)),
        "BYE to the answered callee"
    );
    core.set_accepting(false);
    assert_eq!(
        core.dial_out(t0, dial("2000"), &Book),
        Err(DialRefusal::Admission(Refusal::NotAccepting))
    );
}

#[test]
fn dial_outs_are_limited_at_once_and_per_second() {
    let t0 = Instant::now();
    let mut core = core();
    // The bucket holds two calls (per_second 2): the third in the same instant waits half a
    // second for its token.
    let first = core.dial_out(t0, dial("2000"), &Book).unwrap();
    core.dial_out(t0, dial("2000"), &Book).unwrap();
    assert_eq!(
        core.dial_out(t0, dial("2000"), &Book),
        Err(DialRefusal::Rate {
            retry: Duration::from_millis(500)
        })
    );
    let t1 = t0 + Duration::from_millis(500);
    core.dial_out(t1, dial("2000"), &Book).expect("refilled");
    // Three placed calls are up (max_concurrent 3), whatever the rate allows.
    let t2 = t0 + Duration::from_secs(5);
    assert_eq!(
        core.dial_out(t2, dial("2000"), &Book),
        Err(DialRefusal::MaxDialOuts)
    );
    // A caller does not count; one placed call ending frees a place.
    drain(&mut core);
    join(&mut core, t2, "2000", false);
    core.handle_dial_failed(t2, first, 486, "Busy Here");
    core.dial_out(t2, dial("2000"), &Book)
        .expect("a place is free");
}

#[test]
fn a_moved_leg_leaves_one_room_and_joins_the_other_with_its_call_up() {
    let t0 = Instant::now();
    let mut core = core();
    let (alice, _) = join(&mut core, t0, "2000", false);
    let (bob, _) = join(&mut core, t0, "2000", false);
    core.set_muted(bob, true).unwrap();
    drain(&mut core);
    core.move_leg(&id("2000"), bob, &id("3000"), &Book)
        .expect("moved");
    let actions = drain(&mut core);
    assert!(actions.contains(&Action::OpenRoom(id("3000"))));
    assert!(actions.contains(&Action::MoveLeg {
        leg: bob,
        from: id("2000"),
        to: id("3000")
    }));
    assert!(
        !actions.iter().any(|a| matches!(
            a,
            Action::Hangup(_) | Action::Ended { .. } | Action::RemoveLeg { .. }
        )),
        "the call stays up: {actions:?}"
    );
    assert!(actions.contains(&Action::Record {
        room: id("2000"),
        note: RecordNote::Left(bob)
    }));
    assert!(actions.contains(&Action::Record {
        room: id("3000"),
        note: RecordNote::Joined(bob)
    }));
    assert!(
        actions.contains(&Action::Record {
            room: id("3000"),
            note: RecordNote::Muted(bob, true)
        }),
        "its mute carries over"
    );
    assert!(events(&actions).contains(&Event::Moved {
        leg: bob,
        to: id("3000")
    }));
    assert_eq!(core.room(&id("2000")).unwrap().members.len(), 1);
    assert_eq!(core.room(&id("3000")).unwrap().members[0].leg, bob);
    // The last one out: its old room closes after the move.
    core.move_leg(&id("2000"), alice, &id("3000"), &Book)
        .unwrap();
    let actions = drain(&mut core);
    let moved = actions
        .iter()
        .position(|a| matches!(a, Action::MoveLeg { .. }))
        .unwrap();
    let closed = actions
        .iter()
        .position(|a| *a == Action::CloseRoom(id("2000")))
        .expect("the empty room closes");
    assert!(moved < closed, "{actions:?}");
    assert!(core.room(&id("2000")).is_none());
}

#[test]
fn a_move_is_refused_by_a_full_room_and_needs_the_leg_in_its_room() {
    let t0 = Instant::now();
    let mut core = core();
    let (alice, _) = join(&mut core, t0, "2000", false);
    join(&mut core, t0, "small", false);
    join(&mut core, t0, "small", false);
    drain(&mut core);
    assert_eq!(
        core.move_leg(&id("2000"), alice, &id("small"), &Book),
        Err(ConferenceError::Refused(Refusal::RoomFull))
    );
    assert_eq!(
        core.move_leg(&id("other"), alice, &id("3000"), &Book),
        Err(ConferenceError::RoomNotFound)
    );
    assert_eq!(
        core.move_leg(&id("2000"), LegId(99), &id("3000"), &Book),
        Err(ConferenceError::LegNotFound)
    );
    core.move_leg(&id("2000"), alice, &id("2000"), &Book)
        .expect("to its own room: nothing to do");
    assert!(drain(&mut core).is_empty());
    assert_eq!(core.room(&id("2000")).unwrap().members[0].leg, alice);
}

#[test]
fn relations_name_other_members_are_noted_and_dropped_when_their_leg_leaves() {
    use roundtable_media::relations::{Audience, Relations};
    let t0 = Instant::now();
    let mut core = core();
    let (agent, _) = join(&mut core, t0, "2000", false);
    let (coach, _) = join(&mut core, t0, "2000", false);
    let (other, _) = join(&mut core, t0, "3000", false);
    drain(&mut core);
    let whisper = Relations {
        hears: Audience::All,
        heard_by: Audience::Only(vec![agent]),
    };
    assert_eq!(
        core.set_relations(
            &id("2000"),
            coach,
            Relations {
                heard_by: Audience::Only(vec![other]),
                ..Relations::default()
            }
        ),
        Err(ConferenceError::NotInRoom(other)),
        "a leg of another room"
    );
    assert_eq!(
        core.set_relations(
            &id("2000"),
            coach,
            Relations {
                hears: Audience::Only(vec![coach]),
                ..Relations::default()
            }
        ),
        Err(ConferenceError::NotInRoom(coach)),
        "itself"
    );
    core.set_relations(&id("2000"), coach, whisper.clone())
        .unwrap();
    let actions = drain(&mut core);
    assert!(actions.contains(&Action::Relations {
        room: id("2000"),
        leg: coach,
        relations: whisper.clone()
    }));
    assert!(actions.contains(&Action::Record {
        room: id("2000"),
        note: RecordNote::Relations(coach, whisper.clone())
    }));
    assert!(events(&actions).contains(&Event::Relations {
        leg: coach,
        relations: whisper.clone()
    }));
    assert_eq!(core.relations(coach), whisper);
    core.set_relations(&id("2000"), coach, whisper.clone())
        .unwrap();
    assert!(drain(&mut core).is_empty(), "no change, no news");
    // The agent hangs up: the coach's whisper goes to nobody (not to the room).
    core.handle_ended(t0, agent, Departure::Hangup);
    let actions = drain(&mut core);
    let pruned = Relations {
        hears: Audience::All,
        heard_by: Audience::Only(Vec::new()),
    };
    assert!(actions.contains(&Action::Relations {
        room: id("2000"),
        leg: coach,
        relations: pruned.clone()
    }));
    assert_eq!(core.relations(coach), pruned);
    // Moved to another room, its relations are cleared.
    core.move_leg(&id("2000"), coach, &id("3000"), &Book)
        .unwrap();
    assert_eq!(core.relations(coach), Relations::default());
}
