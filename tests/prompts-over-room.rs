//! Prompts never hide the room: a caller alone in a room hears the alone prompt, and when a
//! second caller joins, the first hears the second's speech within 100 ms of its first packet
//! (the prompt stops, and tones and prompts are mixed over the room, never instead of it).

mod common;

use std::time::Duration;

use common::*;

/// A tone at this frequency, in a 20 ms packet, counts as the second caller's voice.
const VOICE: f64 = 1100.0;
/// Goertzel power in dB of the voice clearly present: a 6000-amplitude tone is about 69 dB; the
/// alone prompt's speech reaches about 52 dB at that frequency in a packet now and then.
const HEARD_DB: f64 = 60.0;

#[test]
fn the_first_caller_hears_the_second_at_once_though_its_alone_prompt_played() {
    let service = Service::start(Options {
        toml: "[room]\nalone_prompt = true\njoin_leave_tones = true".into(),
        ..Options::default()
    });
    let mut first = Uac::new(service.sip, "1000");
    assert_eq!(first.call(), 200, "{}", service.log());
    let listening = first.start_media(0.0, Duration::from_millis(3000));
    std::thread::sleep(Duration::from_millis(600));

    let mut second = Uac::new(service.sip, "1000");
    assert_eq!(second.call(), 200, "{}", service.log());
    let speaking = second.start_media(VOICE, Duration::from_millis(1500));
    let heard = listening.finish();
    let spoke_at = speaking.finish().started() - heard.started();

    let rms = rms(&heard.window(Duration::from_millis(100), Duration::from_millis(500)));
    assert!(
        rms > 300.0,
        "the first caller heard no alone prompt (RMS {rms:.0})"
    );

    // The first 20 ms packet after the second caller's first packet (in steps of 5 ms) that
    // carries its voice, as do the packets of the next 40 ms: the voice goes on.
    let step = Duration::from_millis(5);
    let voice = |from: Duration, to: Duration| {
        let samples = heard.window(from, to);
        !samples.is_empty() && tone_db(&samples, VOICE) > HEARD_DB
    };
    let onset = (0..100u32)
        .map(|k| spoke_at + step * k)
        .find(|&from| {
            voice(from, from + step) && voice(from + step, from + Duration::from_millis(45))
        })
        .map(|at| at - spoke_at);
    let levels: Vec<String> = (0..40u32)
        .map(|k| {
            let from = spoke_at + step * k;
            format!("{:.0}", tone_db(&heard.window(from, from + step), VOICE))
        })
        .collect();
    let onset = onset.unwrap_or_else(|| panic!("never heard the second caller: {levels:?}"));
    assert!(
        onset <= Duration::from_millis(100),
        "heard the second caller {onset:?} after its first packet: {levels:?}"
    );
}
