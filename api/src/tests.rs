//! Router tests against an in-memory [`Control`].

use std::sync::Mutex;

use axum::body::Body;
use axum::http::Request;
use tower::ServiceExt;

use super::*;

struct Fake {
    recording: Mutex<bool>,
    events: tokio::sync::watch::Sender<u64>,
    audited: Mutex<Vec<ApiAction>>,
}

/// The answers, as the service would give them.
impl Fake {
    fn rooms_now(&self) -> Vec<RoomSummary> {
        vec![RoomSummary {
            id: RoomId::parse("1000").unwrap(),
            participants: 1,
            recording: *self.recording.lock().unwrap(),
        }]
    }
    fn room_now(&self, id: &str) -> Option<RoomDetail> {
        (id == "1000").then(|| RoomDetail {
            id: RoomId::parse(id).unwrap(),
            recording: *self.recording.lock().unwrap(),
            recording_id: None,
            recording_paused: false,
            aec: AecSetting::Auto,
            locked: false,
            waiting_for_moderator: false,
            participants: vec![],
        })
    }
    fn recording_now(
        &self,
        room: &str,
        request: RecordingRequest,
        by: &str,
    ) -> Result<RoomDetail, ControlError> {
        self.room_now(room).ok_or(ControlError::RoomNotFound)?;
        assert_eq!(by, "unknown", "no connection info under oneshot");
        let mut r = self.recording.lock().unwrap();
        match (request.action, *r) {
            (RecordingAction::Start, true) => {
                return Err(ControlError::Conflict("already recording"));
            }
            (RecordingAction::Stop | RecordingAction::Pause | RecordingAction::Resume, false) => {
                return Err(ControlError::Conflict("not recording"));
            }
            (RecordingAction::Start, false) => *r = true,
            (RecordingAction::Stop, true) => *r = false,
            (RecordingAction::Pause | RecordingAction::Resume, true) => {}
        }
        drop(r);
        Ok(self.room_now(room).unwrap())
    }
    fn kick_now(&self, room: &str, leg: LegId) -> Result<(), ControlError> {
        self.room_now(room).ok_or(ControlError::RoomNotFound)?;
        if leg == LegId(7) {
            Ok(())
        } else {
            Err(ControlError::LegNotFound)
        }
    }
    fn update_participant_now(
        &self,
        room: &str,
        leg: LegId,
        patch: ParticipantPatch,
    ) -> Result<Participant, ControlError> {
        self.room_now(room).ok_or(ControlError::RoomNotFound)?;
        if leg != LegId(7) {
            return Err(ControlError::LegNotFound);
        }
        let audio = ParticipantAudio {
            muted: patch.muted.unwrap_or(false),
            deaf: patch.deaf.unwrap_or(false),
            input_gain_db: patch.input_gain_db.unwrap_or(0.0),
            output_gain_db: patch.output_gain_db.unwrap_or(0.0),
            aec: patch.aec.unwrap_or(AecSetting::Auto),
            aec_active: false,
            noise_suppression: patch.noise_suppression.unwrap_or(true),
            agc: patch.agc.unwrap_or(true),
            talking: false,
            hears: patch.hears.clone().unwrap_or_default(),
            heard_by: patch.heard_by().unwrap_or_default(),
        };
        Ok(Participant {
            id: leg,
            from: "sip:a@b".into(),
            codec: "PCMU".into(),
            joined_at: "2026-01-01T00:00:00Z".into(),
            packets_in: 0,
            packets_out: 0,
            receive: Default::default(),
            rtcp: Default::default(),
            audio,
            moderator: false,
            state: ParticipantState::Answered,
            failure: None,
        })
    }
    fn update_room_now(&self, room: &str, patch: RoomPatch) -> Result<RoomDetail, ControlError> {
        let mut detail = self.room_now(room).ok_or(ControlError::RoomNotFound)?;
        detail.locked = patch.locked.unwrap_or(false);
        Ok(detail)
    }
    fn put_room_now(&self, room: &str, spec: RoomSpec) -> Result<RoomDetail, ControlError> {
        if let Some((field, reason)) = spec.problem(200) {
            return Err(ControlError::Invalid(format!("{field}: {reason}")));
        }
        Ok(RoomDetail {
            id: RoomId::parse(room).unwrap(),
            recording: false,
            recording_id: None,
            recording_paused: false,
            aec: spec.aec.unwrap_or(AecSetting::Auto),
            locked: false,
            waiting_for_moderator: false,
            participants: vec![],
        })
    }
    fn delete_room_now(&self, room: &str) -> Result<(), ControlError> {
        self.room_now(room)
            .map(|_| ())
            .ok_or(ControlError::RoomNotFound)
    }
}

impl Control for Fake {
    fn trunks(&self) -> Vec<TrunkStatus> {
        vec![TrunkStatus {
            name: "carrier".into(),
            register: true,
            registered: false,
            expires_at: None,
            last_error: Some("408 Request Timeout".into()),
            failures: 2,
            breaker: "closed".into(),
        }]
    }
    fn rooms(&self) -> Reply<Vec<RoomSummary>> {
        Box::pin(std::future::ready(self.rooms_now()))
    }
    fn room(&self, id: &RoomId) -> Reply<Option<RoomDetail>> {
        Box::pin(std::future::ready(self.room_now(id.as_str())))
    }
    fn recording(
        &self,
        room: &RoomId,
        request: RecordingRequest,
        by: &str,
    ) -> Reply<Result<RoomDetail, ControlError>> {
        Box::pin(std::future::ready(self.recording_now(
            room.as_str(),
            request,
            by,
        )))
    }
    fn kick(&self, room: &RoomId, leg: LegId) -> Reply<Result<(), ControlError>> {
        Box::pin(std::future::ready(self.kick_now(room.as_str(), leg)))
    }
    fn dial(
        &self,
        room: &RoomId,
        request: DialRequest,
    ) -> Reply<Result<Participant, ControlError>> {
        let result = match (self.room_now(room.as_str()), request.trunk) {
            (None, _) => Err(ControlError::RoomNotFound),
            (_, Some(_)) => Err(ControlError::TrunkNotFound),
            (Some(_), None) => Err(ControlError::Invalid("not in the fake".into())),
        };
        Box::pin(std::future::ready(result))
    }
    fn move_participant(
        &self,
        room: &RoomId,
        leg: LegId,
        to: &RoomId,
    ) -> Reply<Result<Participant, ControlError>> {
        let result = match (self.room_now(room.as_str()), to.as_str()) {
            (None, _) => Err(ControlError::RoomNotFound),
            (Some(_), "full") => Err(ControlError::Conflict("room full")),
            (Some(_), _) if leg != LegId(7) => Err(ControlError::LegNotFound),
            (Some(_), _) => Err(ControlError::Invalid("not in the fake".into())),
        };
        Box::pin(std::future::ready(result))
    }
    fn update_participant(
        &self,
        room: &RoomId,
        leg: LegId,
        patch: ParticipantPatch,
    ) -> Reply<Result<Participant, ControlError>> {
        Box::pin(std::future::ready(self.update_participant_now(
            room.as_str(),
            leg,
            patch,
        )))
    }
    fn update_room(
        &self,
        room: &RoomId,
        patch: RoomPatch,
    ) -> Reply<Result<RoomDetail, ControlError>> {
        Box::pin(std::future::ready(
            self.update_room_now(room.as_str(), patch),
        ))
    }
    fn put_room(&self, room: &RoomId, spec: RoomSpec) -> Reply<Result<RoomDetail, ControlError>> {
        Box::pin(std::future::ready(self.put_room_now(room.as_str(), spec)))
    }
    fn delete_room(&self, room: &RoomId) -> Reply<Result<(), ControlError>> {
        Box::pin(std::future::ready(self.delete_room_now(room.as_str())))
    }
    fn recordings(&self, query: &RecordingQuery) -> Result<RecordingsPage, ControlError> {
        let all = vec![RecordingSummary {
            id: "1000/20261122T093000Z".into(),
            room: "1000".into(),
            start: "20261122T093000Z".into(),
        }];
        assert!(
            query
                .limit
                .is_some_and(|l| (1..=RECORDINGS_PAGE_MAX).contains(&l)),
            "the API checks and sets the limit"
        );
        Ok(RecordingsPage {
            recordings: all
                .into_iter()
                .filter(|r| query.room.as_ref().is_none_or(|room| room == &r.room))
                .collect(),
            next: None,
        })
    }
    fn recording_manifest(&self, id: &str) -> Result<serde_json::Value, ControlError> {
        if id == "1000/20261122T093000Z" {
            Ok(serde_json::json!({"id": id}))
        } else {
            Err(ControlError::RecordingNotFound)
        }
    }
    fn recording_object(&self, id: &str, object: &str) -> Result<Download, ControlError> {
        self.recording_manifest(id)?;
        if object != "legs/7.wav" {
            return Err(ControlError::RecordingNotFound);
        }
        Ok(Download {
            size: 5,
            content_type: "audio/wav",
            body: Box::new(std::io::Cursor::new(b"RIFF!".to_vec())),
        })
    }
    fn liveness(&self) -> Result<(), String> {
        Ok(())
    }
    /// Storage down: degraded; the rest fine.
    fn health(&self) -> HealthReport {
        HealthReport::new(vec![
            HealthComponent {
                name: "mixer_threads".into(),
                status: HealthStatus::Ok,
                value: Some(0.0),
                threshold: Some(0.0),
                reason: "threads that missed a tick in the last second".into(),
            },
            HealthComponent {
                name: "storage".into(),
                status: HealthStatus::Degraded,
                value: None,
                threshold: None,
                reason: "PutObject: connection refused".into(),
            },
        ])
    }
    fn readiness(&self) -> Readiness {
        Readiness::Draining
    }
    /// Events 1..=latest (the watch's value), numbered `j:<n>`.
    fn events(&self, query: &EventQuery) -> Result<EventsPage, ControlError> {
        let after: u64 = match query.after.as_str() {
            "" => 0,
            cursor => cursor
                .strip_prefix("j:")
                .unwrap_or(cursor)
                .parse()
                .map_err(|_| ControlError::Invalid("not a cursor".into()))?,
        };
        let latest = *self.events.borrow();
        Ok(EventsPage {
            events: (after + 1..=latest)
                .map(|n| serde_json::json!({"id": n, "cursor": format!("j:{n}"), "type": "dtmf"}))
                .collect(),
            next: format!("j:{}", latest.max(after)),
            missed: 0,
            behind: 0,
        })
    }
    fn events_in_memory(&self, query: &EventQuery) -> Option<Result<EventsPage, ControlError>> {
        // Cursors below 100 stand for events only the journal holds.
        let behind_ring = query
            .after
            .strip_prefix("j:")
            .and_then(|n| n.parse::<u64>().ok())
            .is_none_or(|n| n < 100);
        (!behind_ring).then(|| self.events(query))
    }
    fn room_levels(&self) -> tokio::sync::broadcast::Receiver<RoomLevels> {
        tokio::sync::broadcast::channel(1).1
    }
    fn audit(&self, action: ApiAction) {
        self.audited.lock().unwrap().push(action);
    }
    fn event_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.events.subscribe()
    }
}

/// Webhook endpoints in memory: `crm` is configured, others were added.
#[derive(Default)]
struct FakeWebhooks {
    added: Mutex<Vec<WebhookSpec>>,
}

fn view(spec: &WebhookSpec, source: WebhookSource) -> WebhookView {
    WebhookView {
        name: spec.name.clone(),
        url: spec.url.clone(),
        events: spec.events.clone(),
        rooms: spec.rooms.clone(),
        timeout_s: spec.timeout_s,
        source,
        state: WebhookState::Delivering,
        cursor: "j:0".into(),
        backlog: 0,
        delivered: 0,
        dead_letters: 0,
        last_error: None,
    }
}

impl WebhookControl for FakeWebhooks {
    fn list(&self) -> Reply<Vec<WebhookView>> {
        let crm = WebhookSpec {
            name: "crm".into(),
            url: "http://127.0.0.1:9/".into(),
            events: String::new(),
            rooms: String::new(),
            secret: None,
            timeout_s: 10,
        };
        let mut all = vec![view(&crm, WebhookSource::Config)];
        all.extend(
            self.added
                .lock()
                .unwrap()
                .iter()
                .map(|s| view(s, WebhookSource::Api)),
        );
        Box::pin(async move { all })
    }
    fn add(&self, endpoint: WebhookSpec) -> Reply<Result<WebhookCreated, ControlError>> {
        let mut added = self.added.lock().unwrap();
        let result = if endpoint.name == "crm" || added.iter().any(|s| s.name == endpoint.name) {
            Err(ControlError::Conflict(
                "a webhook endpoint of that name exists",
            ))
        } else {
            added.push(endpoint.clone());
            Ok(WebhookCreated {
                endpoint: view(&endpoint, WebhookSource::Api),
                secret: endpoint.secret.clone().unwrap(),
            })
        };
        Box::pin(async move { result })
    }
    fn remove(&self, name: &str) -> Reply<Result<(), ControlError>> {
        let mut added = self.added.lock().unwrap();
        let result = if name == "crm" {
            Err(ControlError::Conflict("configured"))
        } else if let Some(at) = added.iter().position(|s| s.name == name) {
            added.remove(at);
            Ok(())
        } else {
            Err(ControlError::WebhookNotFound)
        };
        Box::pin(async move { result })
    }
}

fn services(control: Arc<Fake>, token: Option<&str>) -> ApiServices {
    ApiServices {
        control,
        webhooks: Arc::new(FakeWebhooks::default()),
        config: serde_json::json!({"api": {"token": "<redacted>"}}),
        registry: Registry::new(),
        tokens: Tokens::new(
            token
                .map(|t| ApiToken::new("api.token", Role::Admin, t))
                .into_iter()
                .collect(),
            None,
            0,
        ),
    }
}

fn app(token: Option<&str>) -> Router {
    router(services(
        Arc::new(Fake {
            recording: Mutex::new(false),
            events: tokio::sync::watch::channel(1).0,
            audited: Mutex::default(),
        }),
        token,
    ))
}

async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    body: &str,
    token: Option<&str>,
) -> (StatusCode, serde_json::Value) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        request = request.header("authorization", format!("Bearer {t}"));
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test]
async fn recording_start_stop_and_conflicts() {
    let app = app(None);
    let (s, body) = call(
        &app,
        "POST",
        "/v1/rooms/1000/recording",
        r#"{"action":"start"}"#,
        None,
    )
    .await;
    assert_eq!(
        (s, body["recording"].as_bool()),
        (StatusCode::OK, Some(true))
    );
    let (s, body) = call(
        &app,
        "POST",
        "/v1/rooms/1000/recording",
        r#"{"action":"start"}"#,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert!(body["error"].is_string());
    let (s, _) = call(
        &app,
        "POST",
        "/v1/rooms/1000/recording",
        r#"{"action":"stop"}"#,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = call(
        &app,
        "POST",
        "/v1/rooms/1000/recording",
        r#"{"action":"stop"}"#,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
}

#[tokio::test]
async fn recordings_are_listed_read_and_streamed() {
    let app = app(None);
    let (s, body) = call(&app, "GET", "/v1/recordings?room=1000", "", None).await;
    assert_eq!(
        (s, body["recordings"][0]["id"].as_str()),
        (StatusCode::OK, Some("1000/20261122T093000Z"))
    );
    let (_, body) = call(&app, "GET", "/v1/recordings?room=2000", "", None).await;
    assert_eq!(body["recordings"].as_array().unwrap().len(), 0);
    assert_eq!(
        call(&app, "GET", "/v1/recordings?colour=red", "", None)
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    for bad in ["limit=0", "limit=1001", "limit=ten"] {
        assert_eq!(
            call(&app, "GET", &format!("/v1/recordings?{bad}"), "", None)
                .await
                .0,
            StatusCode::BAD_REQUEST,
            "{bad}"
        );
    }
    let (s, body) = call(
        &app,
        "GET",
        "/v1/recordings?limit=1000&after=0999/20261122T093000Z",
        "",
        None,
    )
    .await;
    assert_eq!((s, body["next"].is_null()), (StatusCode::OK, true));
    let (s, body) = call(
        &app,
        "GET",
        "/v1/recordings/1000/20261122T093000Z",
        "",
        None,
    )
    .await;
    assert_eq!(
        (s, body["id"].as_str()),
        (StatusCode::OK, Some("1000/20261122T093000Z"))
    );
    assert_eq!(
        call(
            &app,
            "GET",
            "/v1/recordings/1000/19990101T000000Z",
            "",
            None
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    let response = app
        .clone()
        .oneshot(
            Request::builder()
                .uri("/v1/recordings/1000/20261122T093000Z/legs/7.wav")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "audio/wav");
    assert_eq!(response.headers()["content-length"], "5");
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    assert_eq!(&bytes[..], b"RIFF!");
    let (s, _) = call(
        &app,
        "POST",
        "/v1/rooms/1000/recording",
        r#"{"action":"pause","mode":"mixed"}"#,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "mode only with start");
}

#[tokio::test]
async fn malformed_bodies_are_400_json() {
    let app = app(None);
    for body in [
        "",
        "{",
        r#"{"action":"rewind"}"#,
        r#"{"action":"start","x":1}"#,
        r#"{"action":"start","mode":"stereo"}"#,
        "[]",
    ] {
        let (s, json) = call(&app, "POST", "/v1/rooms/1000/recording", body, None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            json["error"].as_str().unwrap().starts_with("invalid body"),
            "{body}"
        );
    }
}

#[tokio::test]
async fn unknown_room_or_leg_is_404() {
    let app = app(None);
    assert_eq!(
        call(&app, "GET", "/v1/rooms/nope", "", None).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call(&app, "DELETE", "/v1/rooms/1000/participants/8", "", None)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call(&app, "DELETE", "/v1/rooms/1000/participants/7", "", None)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    let (s, body) = call(&app, "GET", "/nowhere", "", None).await;
    assert_eq!(
        (s, body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("not found"))
    );
}

#[tokio::test]
async fn a_token_guards_everything_but_live_and_ready() {
    let app = app(Some("s3cret"));
    assert_eq!(
        call(&app, "GET", "/v1/rooms", "", None).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(&app, "GET", "/v1/rooms", "", Some("wrong")).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (s, body) = call(&app, "GET", "/v1/rooms", "", Some("s3cret")).await;
    assert_eq!(
        (s, body["rooms"][0]["id"].as_str()),
        (StatusCode::OK, Some("1000"))
    );
    for path in [
        "/health",
        "/healthz",
        "/health/detailed",
        "/openapi.json",
        "/metrics",
    ] {
        let (s, _) = call(&app, "GET", path, "", None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{path} needs the token");
    }
    for path in ["/health", "/healthz"] {
        let (s, body) = call(&app, "GET", path, "", Some("s3cret")).await;
        assert_eq!(
            (s, body["status"].as_str()),
            (StatusCode::OK, Some("degraded"))
        );
        assert_eq!(body["reasons"][0], "storage: PutObject: connection refused");
    }
    let (s, body) = call(&app, "GET", "/health/detailed", "", Some("s3cret")).await;
    assert_eq!(
        (s, body["status"].as_str()),
        (StatusCode::OK, Some("degraded"))
    );
    assert_eq!(body["components"][1]["name"], "storage");
    assert_eq!(body["components"][0]["threshold"], 0.0);
    let (s, body) = call(&app, "GET", "/live", "", None).await;
    assert_eq!((s, body["status"].as_str()), (StatusCode::OK, Some("live")));
    let (s, body) = call(&app, "GET", "/ready", "", None).await;
    assert_eq!(
        (s, body["status"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("draining"))
    );
}

#[tokio::test]
async fn security_headers_and_the_body_limit() {
    let app = app(None);
    let response = app
        .clone()
        .oneshot(
            Request::builder()
                .uri("/v1/rooms")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    assert_eq!(response.headers()["cache-control"], "no-store");
    let response = app
        .clone()
        .oneshot(Request::builder().uri("/live").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    assert!(response.headers().get("cache-control").is_none());
    let big = format!(r#"{{"pin":"{}"}}"#, "1".repeat(100_000));
    let (status, body) = call(&app, "PUT", "/v1/rooms/1000", &big, None).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["error"], "the request body is over 64 KiB");
}

#[test]
fn a_report_is_as_bad_as_its_worst_component() {
    let component = |name: &str, status| HealthComponent {
        name: name.into(),
        status,
        value: None,
        threshold: None,
        reason: "why".into(),
    };
    let report = HealthReport::new(vec![
        component("a", HealthStatus::Degraded),
        component("b", HealthStatus::Unhealthy),
        component("c", HealthStatus::Ok),
    ]);
    assert_eq!(report.status, HealthStatus::Unhealthy);
    assert_eq!(report.reasons(), ["a: why", "b: why"]);
    assert_eq!(HealthReport::new(vec![]).status, HealthStatus::Ok);
    assert_eq!(HealthStatus::Unhealthy.value(), 2);
}

#[tokio::test]
async fn put_and_delete_rooms() {
    let app = app(None);
    let (s, body) = call(&app, "PUT", "/v1/rooms/77", r#"{"pin":"1234"}"#, None).await;
    assert_eq!((s, body["id"].as_str()), (StatusCode::OK, Some("77")));
    assert_eq!(
        call(&app, "PUT", "/v1/rooms/77", r#"{"pin":"12x"}"#, None)
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        call(&app, "PUT", "/v1/rooms/77", r#"{"pin":1}"#, None)
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        call(&app, "DELETE", "/v1/rooms/1000", "", None).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        call(&app, "DELETE", "/v1/rooms/nope", "", None).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(start_paused = true)]
async fn events_page_long_poll_and_bad_queries() {
    let app = app(None);
    let (s, page) = call(&app, "GET", "/v1/events", "", None).await;
    assert_eq!(
        (s, page["next"].as_str(), page["events"][0]["type"].as_str()),
        (StatusCode::OK, Some("j:1"), Some("dtmf"))
    );
    // Nothing after 1: waits the full 2 s (virtual time), then an empty page with the same cursor.
    let started = tokio::time::Instant::now();
    let (s, page) = call(
        &app,
        "GET",
        "/v1/events?after=1&wait_s=2&room=1000",
        "",
        None,
    )
    .await;
    assert_eq!(
        (
            s,
            page["next"].as_str(),
            page["events"].as_array().map(Vec::len)
        ),
        (StatusCode::OK, Some("j:1"), Some(0))
    );
    assert!(started.elapsed() >= std::time::Duration::from_secs(2));
    for bad in [
        "/v1/events?wait_s=31",
        "/v1/events?after=x",
        "/v1/events?color=red",
        "/v1/events?types=participant_joined,Nope",
    ] {
        let (s, body) = call(&app, "GET", bad, "", None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}");
        assert!(body["error"].is_string(), "{bad}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_waiting_long_poll_is_woken_by_a_new_event() {
    let control = Arc::new(Fake {
        recording: Mutex::new(false),
        events: tokio::sync::watch::channel(1).0,
        audited: Mutex::default(),
    });
    let app = router(services(control.clone(), None));
    let started = tokio::time::Instant::now();
    let poll =
        tokio::spawn(
            async move { call(&app, "GET", "/v1/events?after=j:1&wait_s=30", "", None).await },
        );
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert!(!poll.is_finished(), "nothing new yet: the poll waits");
    control.events.send_replace(2);
    let (s, page) = poll.await.unwrap();
    assert_eq!(s, StatusCode::OK);
    assert_eq!(page["events"][0]["cursor"], "j:2", "{page}");
    assert_eq!(page["next"], "j:2");
    let waited = started.elapsed();
    assert!(
        waited >= std::time::Duration::from_secs(3) && waited < std::time::Duration::from_secs(4),
        "woken by the event, not the timeout: {waited:?}"
    );
}

#[tokio::test]
async fn control_requests_are_audited_with_route_room_token_and_status() {
    let control = Arc::new(Fake {
        recording: Mutex::new(false),
        events: tokio::sync::watch::channel(1).0,
        audited: Mutex::default(),
    });
    let app = router(services(control.clone(), Some("tok")));
    call(&app, "GET", "/v1/rooms/1000", "", Some("tok")).await;
    call(
        &app,
        "PATCH",
        "/v1/rooms/1000/participants/7",
        r#"{"muted":true}"#,
        Some("tok"),
    )
    .await;
    call(
        &app,
        "DELETE",
        "/v1/rooms/1000/participants/8",
        "",
        Some("tok"),
    )
    .await;
    let audited = control.audited.lock().unwrap().clone();
    assert_eq!(audited.len(), 2, "reads are not audited: {audited:?}");
    assert_eq!(
        audited[0].action,
        "PATCH /v1/rooms/{room}/participants/{leg}"
    );
    assert_eq!(audited[0].path, "/v1/rooms/1000/participants/7");
    assert_eq!(audited[0].room.as_ref().map(RoomId::as_str), Some("1000"));
    assert_eq!(audited[0].token.as_deref(), Some("api.token"));
    assert_eq!((audited[0].status, audited[1].status), (200, 404));
    assert_eq!(audited[1].source, "unknown");
}

#[tokio::test]
async fn patch_participant_controls() {
    let app = app(None);
    let (s, body) = call(
        &app,
        "PATCH",
        "/v1/rooms/1000/participants/7",
        r#"{"muted":true,"aec":"on","output_gain_db":-6}"#,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (
            body["audio"]["muted"].as_bool(),
            body["audio"]["aec"].as_str()
        ),
        (Some(true), Some("on"))
    );
    assert_eq!(body["audio"]["output_gain_db"].as_f64(), Some(-6.0));
    for bad in [
        r#"{"aec":"sometimes"}"#,
        r#"{"input_gain_db":40}"#,
        r#"{"volume":3}"#,
        "not json",
    ] {
        let (s, body) = call(&app, "PATCH", "/v1/rooms/1000/participants/7", bad, None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{bad}: {body}"
        );
    }
    let (s, _) = call(&app, "PATCH", "/v1/rooms/1000/participants/8", "{}", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, body) = call(&app, "PUT", "/v1/rooms/2000", r#"{"aec":"off"}"#, None).await;
    assert_eq!((s, body["aec"].as_str()), (StatusCode::OK, Some("off")));
    let (s, body) = call(&app, "PATCH", "/v1/rooms/1000", r#"{"locked":true}"#, None).await;
    assert_eq!((s, body["locked"].as_bool()), (StatusCode::OK, Some(true)));
    let (s, _) = call(&app, "PATCH", "/v1/rooms/1000", r#"{"locked":"yes"}"#, None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = call(&app, "PATCH", "/v1/rooms/9", r#"{"locked":true}"#, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn dial_requests_are_checked_before_they_reach_the_bridge() {
    let app = app(None);
    let post = |body: &'static str| {
        let app = app.clone();
        async move { call(&app, "POST", "/v1/rooms/1000/participants", body, None).await }
    };
    for (body, status) in [
        (
            r#"{"to": "mailto:alice@example.com"}"#,
            StatusCode::BAD_REQUEST,
        ),
        (r#"{"to": "tel:+15551234567"}"#, StatusCode::BAD_REQUEST),
        (
            r#"{"to": "sip:a@127.0.0.1", "timeout_s": 0}"#,
            StatusCode::BAD_REQUEST,
        ),
        (
            r#"{"to": "sip:a@127.0.0.1", "display_name": "x\"y"}"#,
            StatusCode::BAD_REQUEST,
        ),
        (
            r#"{"to": "sip:a@127.0.0.1", "ring": true}"#,
            StatusCode::BAD_REQUEST,
        ),
        (r#"{"to": 5}"#, StatusCode::BAD_REQUEST),
        (
            r#"{"to": "tel:+15551234567", "trunk": "nope"}"#,
            StatusCode::NOT_FOUND,
        ),
    ] {
        let (got, answer) = post(body).await;
        assert_eq!(got, status, "{body}: {answer}");
        assert!(answer["error"].is_string(), "{answer}");
    }
}

#[test]
fn a_limit_answers_429_with_retry_after() {
    let error = ControlError::TooMany {
        what: "sip.dialout_cps reached".into(),
        retry_after_s: 2,
    };
    let response = ApiError::from(error).into_response();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()[axum::http::header::RETRY_AFTER], "2");
    let plain = ApiError::from(ControlError::RoomNotFound).into_response();
    assert!(
        plain
            .headers()
            .get(axum::http::header::RETRY_AFTER)
            .is_none()
    );
}

#[tokio::test]
async fn trunks_are_listed_with_their_registration() {
    let app = app(None);
    let (status, body) = call(&app, "GET", "/v1/trunks", "", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["trunks"][0]["name"], "carrier");
    assert_eq!(body["trunks"][0]["registered"], false);
    assert_eq!(body["trunks"][0]["last_error"], "408 Request Timeout");
    assert_eq!(body["trunks"][0]["breaker"], "closed");
}

#[tokio::test]
async fn move_requests_are_checked_and_answered_with_the_bridge_status() {
    let app = app(None);
    for (path, body, status) in [
        (
            "/v1/rooms/1000/participants/7/move",
            "{}",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/rooms/1000/participants/7/move",
            r#"{"room":"a","x":1}"#,
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/rooms/9/participants/7/move",
            r#"{"room":"a"}"#,
            StatusCode::NOT_FOUND,
        ),
        (
            "/v1/rooms/1000/participants/8/move",
            r#"{"room":"a"}"#,
            StatusCode::NOT_FOUND,
        ),
        (
            "/v1/rooms/1000/participants/7/move",
            r#"{"room":"full"}"#,
            StatusCode::CONFLICT,
        ),
    ] {
        let (got, answer) = call(&app, "POST", path, body, None).await;
        assert_eq!(got, status, "{path} {body}: {answer}");
    }
}

#[tokio::test]
async fn malformed_room_and_participant_ids_are_400_before_the_service_sees_them() {
    let app = app(None);
    for (method, path, body) in [
        ("GET", "/v1/rooms/a%20b", ""),
        ("PUT", "/v1/rooms/a%2Fb", "{}"),
        ("DELETE", &format!("/v1/rooms/{}", "x".repeat(65)), ""),
        (
            "POST",
            "/v1/rooms/%C3%A9/recording",
            r#"{"action":"start"}"#,
        ),
        ("DELETE", "/v1/rooms/1000/participants/seven", ""),
        ("PATCH", "/v1/rooms/1000/participants/-1", "{}"),
        (
            "POST",
            "/v1/rooms/1000/participants/7/move",
            r#"{"room":"a b"}"#,
        ),
        (
            "PATCH",
            "/v1/rooms/1000/participants/7",
            r#"{"whisper_to":"x"}"#,
        ),
        (
            "PATCH",
            "/v1/rooms/1000/participants/7",
            r#"{"hears":["1","y"]}"#,
        ),
        ("GET", "/v1/events?room=a%20b", ""),
    ] {
        let (status, answer) = call(&app, method, path, body, None).await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "{method} {path} {body}: {answer}"
        );
        assert!(answer["error"].is_string(), "{method} {path}: {answer}");
    }
    let (_, answer) = call(&app, "GET", "/v1/rooms/a%20b", "", None).await;
    assert_eq!(answer["error"], "a room id is [A-Za-z0-9_.-]{1,64}");
    let (_, answer) = call(
        &app,
        "DELETE",
        "/v1/rooms/1000/participants/seven",
        "",
        None,
    )
    .await;
    assert_eq!(answer["error"], r#""seven" is not a participant id"#);
}

#[tokio::test]
async fn relations_are_read_as_all_or_ids_and_whisper_to_is_heard_by_one() {
    let app = app(None);
    let patch = |body: &'static str| {
        let app = app.clone();
        async move { call(&app, "PATCH", "/v1/rooms/1000/participants/7", body, None).await }
    };
    let (status, body) = patch(r#"{"whisper_to": "9"}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["audio"]["heard_by"], serde_json::json!(["9"]));
    assert_eq!(body["audio"]["hears"], "all");
    let (status, body) = patch(r#"{"whisper_to": null, "hears": ["3", "4"]}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["audio"]["heard_by"], "all");
    assert_eq!(body["audio"]["hears"], serde_json::json!(["3", "4"]));
    for bad in [
        r#"{"hears": "everyone"}"#,
        r#"{"hears": 3}"#,
        r#"{"whisper_to": "9", "heard_by": ["9"]}"#,
    ] {
        let (status, body) = patch(bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
}

#[tokio::test]
async fn webhook_endpoints_are_added_listed_and_removed() {
    let app = app(None);
    let (s, created) = call(
        &app,
        "POST",
        "/v1/webhooks",
        r#"{"name":"billing","url":"https://billing.example/hook","events":"participant_joined,participant_left","rooms":"1000"}"#,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let secret = created["secret"].as_str().unwrap();
    assert!(
        WebhookSecret::parse(secret).is_ok(),
        "a secret is made: {created}"
    );
    assert_eq!(created["events"], "participant_joined,participant_left");
    let (s, list) = call(&app, "GET", "/v1/webhooks", "", None).await;
    assert_eq!(s, StatusCode::OK);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["crm", "billing"]);
    assert!(
        !list.to_string().contains("whsec_"),
        "secrets are never listed: {list}"
    );
    let (s, one) = call(&app, "GET", "/v1/webhooks/billing", "", None).await;
    assert_eq!((s, one["source"].as_str()), (StatusCode::OK, Some("api")));
    for (body, want) in [
        (r#"{"name":"billing","url":"http://a/"}"#, "exists"),
        (r#"{"name":"x y","url":"http://a/"}"#, "name:"),
        (r#"{"name":"a","url":"ftp://a/"}"#, "url:"),
        (r#"{"name":"a","url":"http://u:p@a/"}"#, "credentials"),
        (
            r#"{"name":"a","url":"http://a/","events":"joined"}"#,
            "events:",
        ),
        (r#"{"name":"a","url":"http://a/","rooms":"a b"}"#, "rooms:"),
        (
            r#"{"name":"a","url":"http://a/","secret":"s3cret"}"#,
            "secret:",
        ),
        (
            r#"{"name":"a","url":"http://a/","timeout_s":0}"#,
            "timeout_s:",
        ),
        (r#"{"name":"a","url":"http://a/","colour":"red"}"#, "colour"),
    ] {
        let (s, error) = call(&app, "POST", "/v1/webhooks", body, None).await;
        let message = error["error"].as_str().unwrap_or_default();
        assert!(
            (s == StatusCode::BAD_REQUEST || s == StatusCode::CONFLICT) && message.contains(want),
            "{body}: {s} {error}"
        );
    }
    let (s, _) = call(&app, "DELETE", "/v1/webhooks/crm", "", None).await;
    assert_eq!(s, StatusCode::CONFLICT, "a configured endpoint stays");
    let (s, _) = call(&app, "DELETE", "/v1/webhooks/billing", "", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = call(&app, "DELETE", "/v1/webhooks/billing", "", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = call(&app, "GET", "/v1/events?types=bogus", "", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "types= names known event types");
}

/// The routes the OpenAPI document lists, `METHOD /path`, sorted.
fn document_routes(document: &serde_json::Value) -> Vec<String> {
    let mut routes: Vec<String> = document["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|m| ["get", "put", "post", "patch", "delete"].contains(&m.as_str()))
                .map(move |m| format!("{} {path}", m.to_uppercase()))
        })
        .collect();
    routes.sort();
    routes
}

#[tokio::test]
async fn the_openapi_document_covers_every_route_and_the_readme_lists_the_same() {
    let (s, document) = call(&app(None), "GET", "/openapi.json", "", None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(document["openapi"].as_str().unwrap().starts_with("3.1"));
    let routes = document_routes(&document);
    for route in [
        "GET /v1/rooms",
        "PATCH /v1/rooms/{room}/participants/{leg}",
        "GET /v1/recordings/{room}/{start}/{object}",
        "POST /v1/webhooks",
        "GET /v1/events/ws",
        "GET /live",
        "GET /openapi.json",
    ] {
        assert!(routes.contains(&route.to_string()), "{route} in {routes:?}");
    }
    // Every operation answers errors as {"error": ...}.
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            for (status, response) in operation["responses"].as_object().unwrap() {
                if status.starts_with('4') || (status.starts_with('5') && path.starts_with("/v1")) {
                    assert_eq!(
                        response["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/ErrorBody",
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }
    let types: Vec<&str> = document["components"]["schemas"]["EventType"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(types, EVENT_TYPES, "the event types' schema is EVENT_TYPES");

    let readme = include_str!("../../README.md");
    let section = &readme[readme.find("## REST API").unwrap()..];
    let section = &section[..section[3..].find("\n## ").unwrap()];
    let mut listed: Vec<String> = section
        .lines()
        .filter(|l| l.starts_with("| `"))
        .flat_map(|row| {
            let first = row[2..].split(" | ").next().unwrap_or_default();
            first
                .split('`')
                .skip(1)
                .step_by(2)
                .filter_map(|code| {
                    let (method, path) = code.split_once(' ')?;
                    ["GET", "PUT", "POST", "PATCH", "DELETE"]
                        .contains(&method)
                        .then(|| format!("{method} {}", path.split('?').next().unwrap()))
                })
                .collect::<Vec<_>>()
        })
        .collect();
    listed.sort();
    listed.dedup();
    assert_eq!(
        listed, routes,
        "the README's REST table lists the document's routes"
    );
}

/// A path of the document with its parameters filled in with values the fake knows.
fn concrete(path: &str) -> String {
    path.replace("{room}", "1000")
        .replace("{leg}", "7")
        .replace("{start}", "20261122T093000Z")
        .replace("{object}", "mix.wav")
        .replace("{name}", "crm")
}

#[tokio::test]
async fn every_role_against_every_route_is_refused_exactly_where_the_table_says() {
    let tokens = Tokens::new(
        Role::ALL
            .iter()
            .map(|role| ApiToken::new(role.as_str(), *role, &format!("{}-token", role.as_str())))
            .collect(),
        Some("metrics-token"),
        0,
    );
    let app = router(ApiServices {
        tokens,
        ..services(
            Arc::new(Fake {
                recording: Mutex::new(false),
                events: tokio::sync::watch::channel(1).0,
                audited: Mutex::default(),
            }),
            None,
        )
    });
    let (_, document) = call(&app, "GET", "/openapi.json", "", Some("viewer-token")).await;
    let routes = document_routes(&document);
    let mut table: Vec<String> = ROUTES.iter().map(|(m, p, _)| format!("{m} {p}")).collect();
    table.sort();
    assert_eq!(
        table, routes,
        "the role table lists exactly the document's routes"
    );
    for (method, path, access) in ROUTES {
        let uri = concrete(path);
        let body = if *method == "GET" { "" } else { "{}" };
        for role in Role::ALL {
            let token = format!("{}-token", role.as_str());
            let (status, answer) = call(&app, method, &uri, body, Some(&token)).await;
            assert_eq!(
                status == StatusCode::FORBIDDEN,
                !access.allows(role),
                "{} on {method} {path}: {status} {answer}",
                role.as_str()
            );
        }
        let (status, _) = call(&app, method, &uri, body, None).await;
        assert_eq!(
            status == StatusCode::UNAUTHORIZED,
            *access != Access::Open,
            "no token on {method} {path}: {status}"
        );
        let (status, _) = call(&app, method, &uri, body, Some("metrics-token")).await;
        assert_eq!(
            status == StatusCode::UNAUTHORIZED,
            *access != Access::Open && *path != "/metrics",
            "api.metrics_token on {method} {path}: {status}"
        );
        let operation = &document["paths"][*path][method.to_lowercase()];
        let roles: Vec<&str> = operation["x-roles"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap())
            .collect();
        assert_eq!(roles, access.role_names(), "x-roles of {method} {path}");
    }

    let readme = include_str!("../../README.md");
    let section = &readme[readme.find("### Tokens and roles").unwrap()..];
    let rows: Vec<(String, Vec<&str>)> = section
        .lines()
        .skip_while(|l| !l.starts_with("| route |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|row| {
            let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
            (cells[0].trim_matches('`').to_string(), cells[1..].to_vec())
        })
        .collect();
    let expected: Vec<(String, Vec<&str>)> = ROUTES
        .iter()
        .map(|(m, p, access)| {
            let cells = Role::ALL
                .iter()
                .map(|role| match access {
                    Access::Open => "open",
                    _ if access.allows(*role) => "yes",
                    _ => "no",
                })
                .collect();
            (format!("{m} {p}"), cells)
        })
        .collect();
    assert_eq!(rows, expected, "the README's role table is access::ROUTES");
}

#[tokio::test]
async fn audit_entries_name_the_token_and_a_spent_budget_is_429() {
    let control = Arc::new(Fake {
        recording: Mutex::new(false),
        events: tokio::sync::watch::channel(1).0,
        audited: Mutex::default(),
    });
    let app = router(ApiServices {
        tokens: Tokens::new(
            vec![
                ApiToken::new("night-shift", Role::Operator, "op-token"),
                ApiToken::new("wallboard", Role::Viewer, "view-token"),
            ],
            None,
            1,
        ),
        ..services(control.clone(), None)
    });
    let (s, _) = call(
        &app,
        "PATCH",
        "/v1/rooms/1000",
        r#"{"locked":true}"#,
        Some("op-token"),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = call(
        &app,
        "PATCH",
        "/v1/rooms/1000",
        r#"{"locked":true}"#,
        Some("view-token"),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let audited = control.audited.lock().unwrap().clone();
    let seen: Vec<(Option<&str>, u16)> = audited
        .iter()
        .map(|a| (a.token.as_deref(), a.status))
        .collect();
    assert_eq!(
        seen,
        [(Some("night-shift"), 200), (Some("wallboard"), 403)],
        "refused attempts are audited too"
    );
    // 1 a second, a burst of 2: the operator spent one above.
    let (s, _) = call(&app, "GET", "/v1/rooms", "", Some("op-token")).await;
    assert_eq!(s, StatusCode::OK);
    let response = app
        .clone()
        .oneshot(
            Request::builder()
                .uri("/v1/rooms")
                .header("authorization", "Bearer op-token")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "1");
    let (s, _) = call(&app, "GET", "/v1/rooms", "", Some("view-token")).await;
    assert_eq!(s, StatusCode::OK, "another token's budget is its own");
}

#[tokio::test]
async fn html_gets_a_strict_content_security_policy() {
    let html = Response::builder()
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .body(axum::body::Body::from("<p>console</p>"))
        .unwrap();
    let answer = security_headers("/console/".parse().unwrap(), html).await;
    let headers = answer.headers();
    assert_eq!(headers[header::CONTENT_SECURITY_POLICY], HTML_POLICY);
    assert!(HTML_POLICY.contains("script-src 'self'") && !HTML_POLICY.contains("unsafe"));
    assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
    let json = security_headers("/v1/rooms".parse().unwrap(), Json(1).into_response()).await;
    assert!(
        json.headers()
            .get(header::CONTENT_SECURITY_POLICY)
            .is_none()
    );
}
