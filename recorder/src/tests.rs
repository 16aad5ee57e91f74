//! The recorder end to end on real files: frames in, WAV tracks, ledger and a signed manifest
//! out; tampering found; a recording left open by a crash recovered.

use std::sync::mpsc::sync_channel;

use roundtable_media::frames::LegId;
use roundtable_media::frames::{FrameSource, LegFrame, MixFrame};
use roundtable_storage::LocalStore;

use super::*;
use crate::ledger::Event;
use crate::manifest::Retention;

const RATE: u32 = 8000;
const N: usize = 160;

fn spec(dir: &Path, mode: Mode) -> Spec {
    Spec {
        room: "1000".into(),
        start: "20261122T093000Z".into(),
        start_unix_ms: 1_795_340_000_000,
        rate: RATE,
        mode,
        spool: dir.to_path_buf(),
        fsync_delay: std::time::Duration::ZERO,
    }
}

fn archive(dir: &Path, account: Arc<SpoolAccount>) -> Archive {
    let signer = Arc::new(Signer::load(&dir.join("signing-key.pk8"), true).unwrap());
    let retention = Retention {
        backend: "local".into(),
        ..Retention::default()
    };
    Archive::new(
        Arc::new(LocalStore::new(dir)),
        Target::Local,
        dir.to_path_buf(),
        String::new(),
        signer,
        retention,
        account,
    )
}

fn frame(tick: u64, mix: i16, legs: &[(u64, i16, FrameSource)]) -> MixFrame {
    MixFrame {
        tick,
        samples: vec![mix; N].into(),
        legs: legs
            .iter()
            .map(|&(id, v, source)| LegFrame {
                leg: LegId(id),
                source,
                samples: vec![v; N].into(),
            })
            .collect(),
    }
}

fn samples(path: &Path) -> Vec<i16> {
    hound::WavReader::open(path)
        .unwrap()
        .into_samples()
        .map(Result::unwrap)
        .collect()
}

/// The value of each 20 ms frame of a track (its first sample).
fn frames_of(path: &Path) -> Vec<i16> {
    samples(path).chunks(N).map(|c| c[0]).collect()
}

#[test]
fn tracks_line_up_with_the_mix_and_the_manifest_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let account = Arc::new(SpoolAccount::new(1 << 30));
    let (tx, rx) = sync_channel(1000);
    let rec = Recording::start(spec(dir.path(), Mode::Both), rx, account.clone()).unwrap();
    use FrameSource::*;
    rec.control(Control::Joined {
        leg: "1".into(),
        from: "sip:a@x".into(),
        codec: "PCMU".into(),
    });
    // Leg 1 from tick 100, leg 2 joins at frame 3 and leaves after frame 5; tick 106 never
    // arrives (a gap in every track); frames 8-9 are paused.
    let mut tick = 100;
    for i in 0..12u64 {
        if i == 3 {
            rec.control(Control::Joined {
                leg: "2".into(),
                from: "sip:b@x".into(),
                codec: "PCMA".into(),
            });
        }
        let legs: Vec<(u64, i16, FrameSource)> = match i {
            3..=5 => vec![
                (1, 1, Received),
                (2, 2, if i == 4 { Concealed } else { Received }),
            ],
            _ => vec![(1, 1, Received)],
        };
        if i == 6 {
            tick += 1;
            continue;
        }
        if i == 8 {
            rec.control(Control::Pause);
            rec.control(Control::Action {
                action: "pause".into(),
                by: "127.0.0.1:5000".into(),
            });
        }
        if i == 10 {
            rec.control(Control::Resume);
        }
        if i == 5 {
            tx.send(frame(tick, 10, &legs)).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(50));
            rec.control(Control::Left { leg: "2".into() });
            tick += 1;
            continue;
        }
        tx.send(frame(tick, 10, &legs)).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(30));
        tick += 1;
    }
    drop(tx);
    let closed = rec.join().unwrap();
    assert_eq!((closed.frames, closed.gap_frames), (12, 1));
    let folder = dir.path().join("recordings/1000/20261122T093000Z");
    assert_eq!(
        frames_of(&folder.join("mix.wav")),
        [10, 10, 10, 10, 10, 10, 0, 10, 0, 0, 10, 10]
    );
    assert_eq!(
        frames_of(&folder.join("legs/1.wav")),
        [1, 1, 1, 1, 1, 1, 0, 1, 0, 0, 1, 1]
    );
    // Leg 2's track starts with silence up to the first frame naming it (frame 3).
    assert_eq!(
        frames_of(&folder.join("legs/2.wav")),
        [0, 0, 0, 2, 2, 2, 0, 0, 0, 0, 0, 0]
    );
    assert!(account.used() > 0);

    let archive = archive(dir.path(), account.clone());
    let sealed = archive.finish(closed).unwrap();
    // The sealed fingerprint is the stored manifest's.
    let stored = std::fs::read(dir.path().join(&sealed.object.key)).unwrap();
    assert_eq!(stored.len() as u64, sealed.object.size);
    assert_eq!(
        sealed.object.key,
        "recordings/1000/20261122T093000Z/manifest.json"
    );
    let manifest = sealed.manifest;
    assert_eq!(account.used(), 0, "spool bytes released");
    assert_eq!(manifest.duration_ms, 240);
    assert_eq!(manifest.objects.len(), 3);
    assert_eq!(manifest.objects[0].size, 44 + 12 * 320);
    let events: Vec<&Event> = manifest.ledger.iter().map(|e| &e.event).collect();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Missing { leg, ms: 20, concealed: true } if leg == "2")),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Gap { ms: 20, .. }))
    );
    assert!(
        manifest
            .ledger
            .iter()
            .any(|e| e.event == Event::Paused && e.t_ms == 160),
        "{:?}",
        manifest.ledger
    );
    assert!(
        manifest
            .ledger
            .iter()
            .any(|e| e.event == Event::Resumed && e.t_ms == 200)
    );
    assert!(!events.iter().any(|e| matches!(e, Event::Checkpoint)));
    let leg2 = manifest.legs.iter().find(|l| l.id == "2").unwrap();
    assert_eq!((leg2.codec.as_str(), leg2.left_ms), ("PCMA", 120));
    assert!(!folder.join(writer::LEDGER_FILE).exists());

    let store = LocalStore::new(dir.path());
    let read = read_manifest(&store, "", "1000/20261122T093000Z", None).unwrap();
    assert_eq!(read, manifest);
    assert_eq!(
        list_recordings(&store, "").unwrap(),
        ["1000/20261122T093000Z"]
    );
    let mut read_bytes = 0;
    verify_objects(&store, &read, |n| read_bytes = n).unwrap();
    assert_eq!(
        read_bytes,
        manifest.objects.iter().map(|o| o.size).sum::<u64>()
    );

    // One changed sample is found, and named.
    let leg1 = folder.join("legs/1.wav");
    let mut bytes = std::fs::read(&leg1).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&leg1, &bytes).unwrap();
    let err = verify_objects(&store, &read, |_| {}).unwrap_err();
    assert!(
        matches!(&err, RecordError::Mismatch { key, mismatch: manifest::Mismatch::Chunk(0) } if key.ends_with("legs/1.wav")),
        "{err}"
    );
    // An edited manifest fails its signature; so does one with a field added anywhere.
    let path = folder.join(MANIFEST);
    let original = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, original.replace("sip:a@x", "sip:z@x")).unwrap();
    assert!(matches!(
        read_manifest(&store, "", "1000/20261122T093000Z", None),
        Err(RecordError::Manifest { .. })
    ));
    std::fs::write(
        &path,
        original.replacen(
            r#""event": "paused""#,
            r#""event": "paused", "note": "forged""#,
            1,
        ),
    )
    .unwrap();
    let err = read_manifest(&store, "", "1000/20261122T093000Z", None).unwrap_err();
    assert!(err.to_string().contains("altered"), "{err}");
    std::fs::write(&path, &original).unwrap();
    read_manifest(&store, "", "1000/20261122T093000Z", None).unwrap();
}

#[test]
fn a_recording_left_open_is_recovered_at_the_shortest_open_track() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, rx) = sync_channel(1000);
    let rec = Recording::start(
        spec(dir.path(), Mode::Both),
        rx,
        Arc::new(SpoolAccount::new(1 << 30)),
    )
    .unwrap();
    for tick in 0..(CHECKPOINT_FRAMES + 10) {
        tx.send(frame(tick, 5, &[(1, 1, FrameSource::Received)]))
            .unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    // What a kill -9 leaves: the thread's buffered frames never reach the disk. Simulate it by
    // copying the folder as it is now, before the recording closes.
    let folder = dir.path().join("recordings/1000/20261122T093000Z");
    let crashed = tempfile::tempdir().unwrap();
    let copy = crashed.path().join("recordings/1000/20261122T093000Z");
    std::fs::create_dir_all(copy.join("legs")).unwrap();
    for name in ["mix.wav", "legs/1.wav", writer::LEDGER_FILE] {
        std::fs::copy(folder.join(name), copy.join(name)).unwrap();
    }
    // A torn frame at the end of the mix.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(copy.join("mix.wav"))
        .unwrap();
    std::io::Write::write_all(&mut f, &[1; 33]).unwrap();
    drop(tx);
    rec.join().unwrap();

    let archive = archive(crashed.path(), Arc::new(SpoolAccount::new(1 << 30)));
    let recovered = archive.recover();
    assert_eq!(recovered.len(), 1);
    let manifest = recovered.into_iter().next().unwrap().1.unwrap().manifest;
    assert_eq!(
        manifest.duration_ms,
        CHECKPOINT_FRAMES * 20,
        "cut at the last checkpoint's audio"
    );
    let lost = manifest
        .ledger
        .iter()
        .find(|e| matches!(e.event, Event::Lost { .. }))
        .unwrap();
    assert_eq!(lost.t_ms, CHECKPOINT_FRAMES * 20);
    assert!(matches!(
        lost.event,
        Event::Lost {
            at_most_ms: 1000,
            ..
        }
    ));
    assert_eq!(
        samples(&copy.join("mix.wav")).len(),
        samples(&copy.join("legs/1.wav")).len()
    );
    let store = LocalStore::new(crashed.path());
    let read = read_manifest(&store, "", "1000/20261122T093000Z", None).unwrap();
    verify_objects(&store, &read, |_| {}).unwrap();
    assert!(archive.recover().is_empty(), "finished once");
}

#[test]
fn a_second_recording_in_the_same_second_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let (_tx, rx) = sync_channel(1);
    let _first = Recording::start(
        spec(dir.path(), Mode::Mixed),
        rx,
        Arc::new(SpoolAccount::new(1 << 30)),
    )
    .unwrap();
    let (_tx2, rx2) = sync_channel(1);
    assert!(matches!(
        Recording::start(
            spec(dir.path(), Mode::Mixed),
            rx2,
            Arc::new(SpoolAccount::new(1))
        ),
        Err(RecordError::Exists(_))
    ));
}

#[test]
fn the_quota_refuses_new_recordings_past_eighty_percent() {
    let account = SpoolAccount::new(1000);
    account.add(790);
    assert!(account.accepts_new());
    account.add(20);
    assert!(!account.accepts_new());
    account.release(5000);
    assert_eq!(account.used(), 0);
}

proptest::proptest! {
    /// What the recorder reads back from disk or a store (ledgers after a crash, manifests,
    /// WAV headers) may be torn or hostile: reading it gives an error, never a panic.
    #[test]
    fn readers_of_stored_data_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4000)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = ledger::parse(&text);
        let _ = serde_json::from_slice::<Manifest>(&bytes);
        let _ = wav::parse_header(&bytes);
        let _ = serde_json::from_slice::<upload::UploadState>(&bytes);
    }

    /// Ledger lines cut anywhere: the entries before the cut come back (and the last one too if
    /// the cut fell just after its closing brace).
    #[test]
    fn a_ledger_cut_anywhere_keeps_its_whole_lines(cut in 0usize..400) {
        let entries: Vec<ledger::Entry> = (0..6)
            .map(|i| ledger::Entry { t_ms: i * 20, event: Event::Muted { leg: i.to_string(), muted: i % 2 == 0 } })
            .collect();
        let text: String = entries.iter().map(|e| serde_json::to_string(e).unwrap() + "\n").collect();
        let cut = cut.min(text.len());
        let parsed = ledger::parse(&text[..cut]).unwrap();
        let whole = text[..cut].matches('\n').count();
        let complete_tail = usize::from(text[..cut].ends_with('}'));
        proptest::prop_assert_eq!(parsed.len(), whole + complete_tail);
        proptest::prop_assert_eq!(&parsed[..], &entries[..parsed.len()]);
    }
}

#[test]
fn recordings_list_page_by_page() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new(dir.path());
    let ids = [
        "1000/20261122T090000Z",
        "1000/20261122T100000Z",
        "1000/20261122T110000Z",
        "2000/20261122T090000Z",
        "2000/20261122T093000Z",
    ];
    for id in ids {
        for object in [MANIFEST, "mix.wav", "legs/1.wav"] {
            store
                .put(
                    &roundtable_storage::ObjectKey::new(format!("recordings/{id}/{object}"))
                        .unwrap(),
                    b"x",
                )
                .unwrap();
        }
    }
    // A recording still being written has no manifest: it is not listed.
    store
        .put(
            &roundtable_storage::ObjectKey::new("recordings/1000/20261122T120000Z/mix.wav")
                .unwrap(),
            b"x",
        )
        .unwrap();
    let all = |_: &str| true;
    let first = list_recordings_page(&store, "", None, None, 2, &all).unwrap();
    assert_eq!(first.ids, ids[..2]);
    assert_eq!(first.next.as_deref(), Some(ids[1]));
    let second = list_recordings_page(&store, "", None, first.next.as_deref(), 2, &all).unwrap();
    assert_eq!(second.ids, ids[2..4]);
    let last = list_recordings_page(&store, "", None, second.next.as_deref(), 2, &all).unwrap();
    assert_eq!(last.ids, ids[4..]);
    assert_eq!(last.next, None);
    // A room's own, and a filter that counts toward the page (a full page holds matches only).
    let room = list_recordings_page(&store, "", Some("2000"), None, 10, &all).unwrap();
    assert_eq!(room.ids, ids[3..]);
    let nine = |id: &str| id.ends_with("T090000Z");
    let filtered = list_recordings_page(&store, "", None, None, 1, &nine).unwrap();
    assert_eq!(filtered.ids, ids[..1]);
    assert_eq!(filtered.next.as_deref(), Some(ids[0]));
    let rest = list_recordings_page(&store, "", None, filtered.next.as_deref(), 1, &nine).unwrap();
    assert_eq!((rest.ids, rest.next), (vec![ids[3].to_string()], None));
    assert_eq!(list_recordings(&store, "").unwrap(), ids);
}
