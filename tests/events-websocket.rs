//! `GET /v1/events/ws` with a real WebSocket client (tokio-tungstenite): the hello, a call's
//! events in order, a reconnect with `after` across a kill -9 and restart that misses nothing,
//! a consumer that stops reading closed with 4008 while the mixer keeps its ticks, and the
//! token as a subprotocol for browsers.

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn connect(service: &Service, query: &str, headers: &[(&str, &str)]) -> Socket {
    try_connect(service, query, headers)
        .await
        .unwrap_or_else(|e| panic!("WebSocket {query}: {e}\n{}", service.log_tail()))
}

async fn try_connect(
    service: &Service,
    query: &str,
    headers: &[(&str, &str)],
) -> Result<Socket, tungstenite::Error> {
    let mut request = format!("ws://{}/v1/events/ws{query}", service.api)
        .into_client_request()
        .unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(
            tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    let (socket, _) = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::connect_async(request),
    )
    .await
    .expect("handshake within 5 s")?;
    Ok(socket)
}

/// The next JSON text message (pings skipped), within 5 s.
async fn next_json(socket: &mut Socket) -> serde_json::Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("a message within 5 s")
            .expect("the socket is open")
            .expect("a good frame");
        match message {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Events until one of `kind` for `leg` (or any leg), returning all read.
async fn read_until(socket: &mut Socket, kind: &str) -> Vec<serde_json::Value> {
    let mut read = Vec::new();
    for _ in 0..100 {
        let event = next_json(socket).await;
        let done = event["type"] == kind;
        read.push(event);
        if done {
            return read;
        }
    }
    panic!("no {kind} in {read:?}");
}

#[test]
fn hello_then_a_calls_events_in_order() {
    let service = Service::start(Options::default());
    runtime().block_on(async {
        let mut socket = connect(&service, "?room=1000", &[]).await;
        let hello = next_json(&mut socket).await;
        assert_eq!(hello["type"], "hello", "{hello}");
        assert_eq!(hello["missed"], 0);
        assert!(hello["next"].as_str().unwrap().contains(':'), "{hello}");
        let mut uac = Uac::new(service.sip, "1000");
        assert_eq!(uac.call(), 200);
        let joined = read_until(&mut socket, "participant_joined").await;
        let kinds: Vec<&str> = joined.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["room_created", "participant_joined"], "{joined:?}");
        assert_eq!(uac.hangup(), 200);
        let left = read_until(&mut socket, "participant_left").await;
        let ids: Vec<u64> = joined
            .iter()
            .chain(&left)
            .map(|e| e["id"].as_u64().unwrap())
            .collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "in order: {ids:?}");
        assert_eq!(
            left.last().unwrap()["participant"],
            joined[1]["participant"]
        );
        let _ = socket.close(None).await;
    });
}

#[test]
fn a_reconnect_with_after_misses_nothing_across_a_kill_and_restart() {
    let mut service = Service::start(Options::default());
    let rt = runtime();
    let cursor = rt.block_on(async {
        let mut socket = connect(&service, "", &[]).await;
        next_json(&mut socket).await;
        let mut uac = Uac::new(service.sip, "1000");
        assert_eq!(uac.call(), 200);
        let read = read_until(&mut socket, "participant_joined").await;
        drop(socket);
        assert_eq!(uac.hangup(), 200);
        read.last().unwrap()["cursor"].as_str().unwrap().to_string()
    });
    // While nobody listens: more calls, then the service dies without a shutdown.
    for room in ["2000", "3000"] {
        let mut uac = Uac::new(service.sip, room);
        assert_eq!(uac.call(), 200);
        assert_eq!(uac.hangup(), 200);
    }
    service.wait_participants("3000", 0);
    // Published events are in the journal already; give the last its fsync.
    std::thread::sleep(Duration::from_millis(300));
    service.kill9();
    service.start_again();
    let mut uac = Uac::new(service.sip, "4000");
    assert_eq!(uac.call(), 200);
    rt.block_on(async {
        let mut socket = connect(&service, &format!("?after={cursor}"), &[]).await;
        let hello = next_json(&mut socket).await;
        assert_eq!(
            (hello["type"].as_str(), hello["missed"].as_u64()),
            (Some("hello"), Some(0))
        );
        let read = read_until(&mut socket, "participant_joined").await;
        let read = if read.last().unwrap()["room"] == "4000" {
            read
        } else {
            let mut more = read;
            loop {
                let batch = read_until(&mut socket, "participant_joined").await;
                let done = batch.last().unwrap()["room"] == "4000";
                more.extend(batch);
                if done {
                    break more;
                }
            }
        };
        let first: u64 = cursor.rsplit(':').next().unwrap().parse().unwrap();
        let ids: Vec<u64> = read.iter().map(|e| e["id"].as_u64().unwrap()).collect();
        let expected: Vec<u64> = (first + 1..first + 1 + ids.len() as u64).collect();
        assert_eq!(
            ids, expected,
            "every event after the cursor, none twice: {read:?}"
        );
        let participants: Vec<&str> = read
            .iter()
            .filter(|e| e["type"].as_str().unwrap().starts_with("participant_"))
            .map(|e| e["room"].as_str().unwrap())
            .collect();
        assert_eq!(
            participants,
            ["1000", "2000", "2000", "3000", "3000", "4000"],
            "{read:?}"
        );
        // A bare number still works as a cursor (the first API's), and a bad one is refused.
        let (status, page) = service.http("GET", &format!("/v1/events?after={first}"), "");
        assert_eq!(status, 200);
        assert_eq!(page["events"][0]["id"], first + 1);
        assert_eq!(service.http("GET", "/v1/events?after=x:y", "").0, 400);
        assert!(try_connect(&service, "?after=nope", &[]).await.is_err());
    });
    assert_eq!(uac.hangup(), 200);
}

#[test]
fn a_consumer_that_stops_reading_is_closed_with_4008_and_the_mixer_keeps_time() {
    let service = Service::start(Options {
        toml: "[sip.limits]\nrequests_per_second = 100000\nburst = 100000\nhard_limit = 100000\n"
            .into(),
        ..Options::default()
    });
    let mut uac = Uac::new(service.sip, "1000");
    assert_eq!(uac.call(), 200);
    let media = uac.start_media(440.0, Duration::from_secs(30));
    let rt = runtime();
    rt.block_on(async {
        // A small receive window, so that a reader that stops stalls the bridge's writes soon.
        let tcp = tokio::net::TcpSocket::new_v4().unwrap();
        tcp.set_recv_buffer_size(4096).unwrap();
        let stream = tcp.connect(service.api).await.unwrap();
        let request = format!("ws://{}/v1/events/ws", service.api)
            .into_client_request()
            .unwrap();
        let stream = tokio_tungstenite::MaybeTlsStream::Plain(stream);
        let (mut socket, _) = tokio_tungstenite::client_async(request, stream)
            .await
            .unwrap();
        next_json(&mut socket).await;
        // Stop reading; events pile up, one per request, from four clients at once: enough to
        // fill the little the kernel holds (the API's sockets keep at most 16 KiB unsent) and
        // then the bridge's queue of 1,000.
        let (_, room) = service.http("GET", "/v1/rooms/1000", "");
        let leg = room["participants"][0]["id"].as_str().unwrap().to_string();
        let api = service.api;
        let clients: Vec<_> = (0..4)
            .map(|client| {
                let path = format!("/v1/rooms/1000/participants/{leg}");
                tokio::task::spawn_blocking(move || {
                    for i in 0..1000 {
                        let body = format!(r#"{{"input_gain_db":{}}}"#, -((client * 7 + i) % 20));
                        let (status, _) = http(api, "PATCH", &path, &body, None).unwrap();
                        assert_eq!(status, 200);
                    }
                })
            })
            .collect();
        for client in clients {
            client.await.unwrap();
        }
        // Reading again: what was buffered, then the close.
        let mut frames = 0;
        let code = loop {
            let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "no close after {frames} frames: {}",
                        service
                            .metrics()
                            .lines()
                            .filter(|l| l.contains("events_ws"))
                            .collect::<Vec<_>>()
                            .join("; ")
                    )
                })
                .map(|m| m.expect("a good frame"));
            match message {
                Some(Message::Close(Some(frame))) => break u16::from(frame.code),
                Some(Message::Close(None)) | None => panic!("closed without a code after {frames}"),
                Some(_) => frames += 1,
            }
        };
        assert_eq!(code, 4008, "after {frames} frames");
        assert!(frames < 4000, "closed before catching up: {frames}");
    });
    let metrics = service.metrics();
    assert!(
        metrics.contains("roundtable_events_ws_lagging_closed_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("roundtable_mixer_ticks_skipped_total 0"),
        "the bridge never waited for the consumer"
    );
    drop(media);
    assert_eq!(uac.hangup(), 200);
}

#[test]
fn the_token_may_come_as_a_subprotocol_and_a_wrong_one_is_refused() {
    let service = Service::start(Options {
        toml: "[api]\ntoken = \"s3cret-token\"\n".into(),
        ..Options::default()
    });
    runtime().block_on(async {
        let (socket, response) = {
            let mut request = format!("ws://{}/v1/events/ws", service.api)
                .into_client_request()
                .unwrap();
            request.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                "roundtable.v1, bearer.s3cret-token".parse().unwrap(),
            );
            tokio_tungstenite::connect_async(request).await.unwrap()
        };
        assert_eq!(
            response.headers()["sec-websocket-protocol"],
            "roundtable.v1",
            "the token is never echoed"
        );
        let mut socket = socket;
        assert_eq!(next_json(&mut socket).await["type"], "hello");
        let header = connect(&service, "", &[("Authorization", "Bearer s3cret-token")]).await;
        drop(header);
        for wrong in [
            vec![("Sec-WebSocket-Protocol", "roundtable.v1, bearer.wrong")],
            vec![("Sec-WebSocket-Protocol", "roundtable.v1")],
            vec![],
        ] {
            match try_connect(&service, "", &wrong).await {
                Err(tungstenite::Error::Http(response)) => {
                    assert_eq!(response.status(), 401, "{wrong:?}")
                }
                other => panic!("{wrong:?}: {:?}", other.map(|_| ())),
            }
        }
    });
    assert!(!service.log().contains("s3cret-token"), "never logged");
}

#[test]
fn a_recorded_calls_vocabulary_rooms_mutes_audit_and_the_sealed_manifest() {
    let service = Service::start(Options::default());
    runtime().block_on(async {
        let types = "room_created,room_ended,participant_muted,api_action,recording_uploaded,recording_sealed";
        let mut socket = connect(&service, &format!("?types={types}"), &[]).await;
        next_json(&mut socket).await;
        let mut uac = Uac::new(service.sip, "5000");
        assert_eq!(uac.call(), 200);
        let created = next_json(&mut socket).await;
        assert_eq!((created["type"].as_str(), created["room"].as_str()), (Some("room_created"), Some("5000")));
        let (_, room) = service.http("GET", "/v1/rooms/5000", "");
        let leg = room["participants"][0]["id"].as_str().unwrap().to_string();
        let path = format!("/v1/rooms/5000/participants/{leg}");
        assert_eq!(service.http("PATCH", &path, r#"{"muted":true}"#).0, 200);
        let muted = next_json(&mut socket).await;
        assert_eq!(muted["type"], "participant_muted", "{muted}");
        assert_eq!((muted["participant"].as_str(), muted["muted"].as_bool()), (Some(leg.as_str()), Some(true)));
        let audit = next_json(&mut socket).await;
        assert_eq!(audit["type"], "api_action", "{audit}");
        assert_eq!(audit["action"], "PATCH /v1/rooms/{room}/participants/{leg}");
        assert_eq!((audit["room"].as_str(), audit["status"].as_u64()), (Some("5000"), Some(200)));
        assert!(audit["source"].as_str().unwrap().starts_with("127.0.0.1:"), "{audit}");
        let media = uac.start_media(440.0, Duration::from_secs(3));
        for action in ["start", "stop"] {
            if action == "stop" {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            let body = format!(r#"{{"action":"{action}"}}"#);
            assert_eq!(service.http("POST", "/v1/rooms/5000/recording", &body).0, 200);
            assert_eq!(next_json(&mut socket).await["type"], "api_action");
        }
        let uploaded = next_json(&mut socket).await;
        assert_eq!(uploaded["type"], "recording_uploaded", "{uploaded}");
        assert!(uploaded["bytes"].as_u64().unwrap() > 16_000, "a second of audio: {uploaded}");
        drop(media);
        let sealed = next_json(&mut socket).await;
        assert_eq!(sealed["type"], "recording_sealed", "{sealed}");
        assert_eq!(sealed["recording"], uploaded["recording"]);
        // The event's fingerprint is the stored manifest's.
        let key = sealed["manifest"]["key"].as_str().unwrap();
        let stored = std::fs::read(service.storage().join(key)).unwrap();
        let fingerprint =
            roundtable_recorder::manifest::Fingerprint::of_reader(key.to_string(), &stored[..]).unwrap();
        assert_eq!(sealed["manifest"]["size"], fingerprint.size);
        assert_eq!(sealed["manifest"]["sha256"], fingerprint.sha256.as_str());
        assert_eq!(uac.hangup(), 200);
        let ended = next_json(&mut socket).await;
        assert_eq!((ended["type"].as_str(), ended["room"].as_str()), (Some("room_ended"), Some("5000")));
    });
}

#[test]
fn room_levels_come_every_quarter_second_while_someone_talks_and_only_on_the_websocket() {
    let service = Service::start(Options::default());
    let mut talker = Uac::new(service.sip, "6000");
    assert_eq!(talker.call(), 200);
    let mut other = Uac::new(service.sip, "7000");
    assert_eq!(other.call(), 200);
    let (_, room) = service.http("GET", "/v1/rooms/6000", "");
    let leg = room["participants"][0]["id"].as_str().unwrap().to_string();
    runtime().block_on(async {
        let mut socket = connect(&service, "?room=6000&types=room_levels", &[]).await;
        next_json(&mut socket).await;
        let media = talker.start_media(440.0, Duration::from_secs(4));
        let _other_media = other.start_media(440.0, Duration::from_secs(4));
        let mut reports = Vec::new();
        let started = tokio::time::Instant::now();
        while reports.len() < 6 {
            let report = next_json(&mut socket).await;
            assert_eq!(report["type"], "room_levels", "{report}");
            assert_eq!(report["room"], "6000", "only the room asked for: {report}");
            reports.push((started.elapsed(), report));
        }
        // A 6000-amplitude sine: -17.8 dBFS.
        for (_, report) in &reports[1..] {
            let levels = report["levels"].as_array().unwrap();
            assert_eq!(levels.len(), 1, "{report}");
            assert_eq!(levels[0]["participant"], leg.as_str());
            let db = levels[0]["dbfs"].as_f64().unwrap();
            assert!((db + 17.8).abs() < 1.5, "{report}");
        }
        let spacing = reports[5].0 - reports[1].0;
        assert!(
            spacing >= Duration::from_millis(900) && spacing <= Duration::from_millis(1100),
            "four intervals of 240 ms: {spacing:?}"
        );
        drop(media);
    });
    let (_, page) = service.http("GET", "/v1/events?types=room_levels", "");
    assert!(
        page["events"].as_array().unwrap().is_empty(),
        "never in the log: {page}"
    );
    assert_eq!(talker.hangup(), 200);
    assert_eq!(other.hangup(), 200);
}
