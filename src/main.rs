//! `roundtable`: the SIP conference bridge and compliance recorder.
//!
//! - [`config`]: defaults, file, environment and flags, validated.
//! - [`bridge`]: calls, rooms, legs and recordings wired together.
//! - [`metrics`]: service-level metrics.
//! - [`time`]: wall-clock formatting.

mod api_tls;
mod archive;
mod bridge;
mod config;
mod events;
mod health;
mod metrics;
mod prompts;
mod recordings_cli;
mod rooms;
mod sip_events;
mod time;
mod trunks;
mod webhooks;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use prometheus::Registry;
use roundtable_media::metrics::MediaMetrics;
use roundtable_mixer::metrics::MixerMetrics;
use roundtable_mixer::pool::MixerPool;
use roundtable_sip::endpoint::EndpointConfig;
use roundtable_sip::metrics::SipMetrics;
use roundtable_sip::transport::{self, CallHandler};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::bridge::Bridge;
use crate::config::{Config, LogFormat, Overrides};

/// Command line.
#[derive(Debug, Parser)]
#[command(
    name = "roundtable",
    version,
    about = "SIP conference bridge and compliance recorder"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service (the default).
    Serve(ServeArgs),
    /// Validate the configuration (including the data dir) and exit.
    CheckConfig(ConfigArgs),
    /// Finished recordings in the configured store: list, download, verify.
    Recordings {
        #[command(subcommand)]
        command: RecordingsCommand,
        #[command(flatten)]
        config: ConfigArgs,
    },
}

#[derive(Debug, Subcommand)]
enum RecordingsCommand {
    /// List finished recordings (`<room>/<START>`), with their length and objects.
    List {
        /// Only this room's.
        #[arg(long)]
        room: Option<String>,
    },
    /// Download a recording's objects (and manifest) into a folder.
    Get {
        /// `<room>/<START>`.
        id: String,
        /// Where to put them (default: the current folder); files go under `<room>/<START>/`.
        #[arg(long, value_name = "DIR", default_value = ".")]
        out: PathBuf,
    },
    /// Re-read every object of a recording and check sizes, hashes, the hash chain and the
    /// manifest's signature; exits 1 at the first mismatch.
    Verify {
        /// `<room>/<START>`.
        id: String,
        /// The public key (hex) the manifest must be signed with (default: this service's).
        #[arg(long, value_name = "HEX")]
        key: Option<String>,
    },
    /// Print the public key manifests are signed with (hex).
    Pubkey,
}

#[derive(Debug, Args, Default)]
struct ConfigArgs {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
}

#[derive(Debug, Args, Default)]
struct ServeArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// SIP listening socket, e.g. `udp:0.0.0.0:5060` (repeatable; replaces `sip.listen`).
    #[arg(long, value_name = "PROTO:HOST:PORT")]
    sip_listen: Vec<String>,
    /// REST API address (`api.listen`).
    #[arg(long, value_name = "HOST:PORT")]
    api_listen: Option<String>,
    /// Local storage folder (`storage.path`).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<String>,
    /// Record every room from its first join (`recording.auto_start`).
    #[arg(long)]
    auto_record: bool,
    /// Log level (`log.level`).
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve(ServeArgs::default()));
    let (file, overrides, serve) = match &command {
        Command::CheckConfig(args) | Command::Recordings { config: args, .. } => {
            (args.config.clone(), Overrides::default(), false)
        }
        Command::Serve(args) => (
            args.config.config.clone(),
            Overrides {
                sip_listen: (!args.sip_listen.is_empty()).then(|| args.sip_listen.clone()),
                api_listen: args.api_listen.clone(),
                storage_path: args.data_dir.clone(),
                auto_record: args.auto_record.then_some(true),
                log_level: args.log_level.clone(),
            },
            true,
        ),
    };
    let config = match config::load(file.as_deref(), std::env::vars(), &overrides) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("roundtable: {error}");
            return ExitCode::from(2);
        }
    };
    if let Command::Recordings { command, .. } = command {
        return match recordings_cli::run(&config, command) {
            Ok(code) => code,
            Err(error) => {
                eprintln!("roundtable: {error:#}");
                ExitCode::from(1)
            }
        };
    }
    if !serve {
        // The store must answer; a signing key, if there is one yet, must load.
        let checked = archive::open_store(&config)
            .and_then(|(store, _)| store.check_writable())
            .map_err(|e| format!("storage: {e}"))
            .and_then(|()| {
                if !config.recording.signing_key.exists() {
                    return Ok(());
                }
                roundtable_recorder::Signer::load(&config.recording.signing_key, false)
                    .map(drop)
                    .map_err(|e| format!("recording.signing_key: {e}"))
            });
        if let Err(error) = checked {
            eprintln!("roundtable: {error}");
            return ExitCode::from(2);
        }
        println!("configuration OK");
        return ExitCode::SUCCESS;
    }
    init_logging(&config);
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("roundtable: {error:#}");
            ExitCode::from(1)
        }
    }
}

fn init_logging(config: &Config) {
    // hyper's connection pool (the webhook client) logs every reuse at debug: kept at info
    // unless the level names it.
    let level = &config.log.level;
    let filter = if level.contains("hyper") {
        tracing_subscriber::EnvFilter::new(level)
    } else {
        tracing_subscriber::EnvFilter::new(format!("{level},hyper_util=info,hyper=info"))
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn run(config: Config) -> anyhow::Result<()> {
    // The store's calls block (S3 on a runtime of its own): open and check it before tokio.
    let storage = archive::open(&config, true).context("opening the recording archive")?;
    archive::check(&storage).context("storage: the store is not usable")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting tokio")?;
    runtime.block_on(serve(config, storage))
}

async fn serve(config: Config, storage: archive::Storage) -> anyhow::Result<()> {
    let hooks = config.testing.hooks_set();
    if !hooks.is_empty() {
        warn!(
            hooks = hooks.join(", "),
            "test hooks are set ([testing]): this configuration is for tests, not production"
        );
    }
    match roundtable_media::socket::raise_descriptor_limit() {
        Ok(limit) => info!(
            limit,
            legs = limit / roundtable_media::socket::DESCRIPTORS_PER_LEG,
            "open descriptor limit (about that many legs)"
        ),
        Err(error) => warn!(%error, "could not read the open descriptor limit"),
    }
    let registry = Registry::new();
    let sip_metrics = SipMetrics::register(&registry)?;
    let media_metrics = MediaMetrics::register(&registry)?;
    let mixer_metrics = MixerMetrics::register(&registry)?;
    let bridge_metrics = metrics::BridgeMetrics::register(&registry)?;
    let trunk_metrics = metrics::TrunkMetrics::register(&registry)?;
    let (trunk_view, trunks_published) = tokio::sync::watch::channel(trunks::TrunkView::default());
    let (mixer_events, mixer_events_rx) =
        std::sync::mpsc::sync_channel(roundtable_mixer::pool::EVENT_QUEUE);
    let mixer = MixerPool::start(
        config.audio.mixer_threads,
        roundtable_mixer::RoomConfig {
            rate: config.audio.rate,
            jitter: config.media.jitter,
            audio: config.audio.processing,
        },
        mixer_metrics.clone(),
        media_metrics.clone(),
        mixer_events,
    )
    .context("starting mixer threads")?;
    if !config.testing.mixer_stall.is_zero() {
        mixer.stall_thread(0, config.testing.mixer_stall);
    }
    archive::sample_metrics(&storage, metrics::StorageMetrics::register(&registry)?);
    let unjournaled = events::unjournaled_counter();
    registry.register(Box::new(unjournaled.clone()))?;
    let outbox = webhooks::Outbox::open(
        &config.storage.path,
        webhooks::WebhookMetrics::register(&registry)?,
    )
    .context("storage.path: opening the webhook outbox (webhooks/)")?;
    let mut bounds = events::Bounds::new(config.webhooks.outbox_max, config.webhooks.max_age);
    if config.testing.outbox_max != 0 {
        bounds.max_bytes = config.testing.outbox_max;
        bounds.segment_bytes = config.testing.outbox_max / 4;
    }
    let event_log = events::EventLog::open(
        &config.storage.path.join("events"),
        bounds,
        unjournaled.clone(),
        Some(outbox.prune_hook()),
    )
    .context("storage.path: opening the event journal (events/)")?;
    let sip_down = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let health = health::start(health::Inputs {
        config: config.health,
        heartbeats: mixer.heartbeats(),
        mixer: mixer_metrics,
        archive: storage.archive.clone(),
        storage_path: config.storage.path.clone(),
        unjournaled,
        webhooks: outbox.clone(),
        events: event_log.subscribe(),
        trunks: trunks_published.clone(),
        sip_down: sip_down.clone(),
        gauge: health::register(&registry)?,
        stop: storage.stop.clone(),
    })
    .context("starting the health monitor")?;
    {
        // Recordings the last run left open are finished while the service runs.
        let archive = storage.archive.clone();
        let events = event_log.clone();
        std::thread::Builder::new()
            .name("recovery".into())
            .spawn(move || archive::recover(&archive, &events))
            .context("starting recording recovery")?;
    }
    let book_path = config.storage.path.join("rooms.json");
    let service = roundtable_conference::settings::ServiceDefaults {
        max_legs_per_room: config.media.max_legs_per_room,
        auto_record: config.recording.auto_start,
    };
    let book = rooms::RoomBook::load(
        config.rooms.clone(),
        config.room_defaults.clone(),
        service,
        book_path,
    )
    .context("storage.path: reading rooms.json")?;
    let locator = roundtable_sip::locate::Locator::new(&config.sip.dns_servers);
    if let Some(problem) = locator.problem() {
        warn!(%problem, "dial-outs to host names will fail; set sip.dns_servers");
    }
    if let Err(problem) = &config.sip.tls_client {
        warn!(%problem, "dial-outs over TLS will fail");
    }
    let bridge = Bridge::spawn(
        config.clone(),
        bridge::Services {
            mixer,
            archive: storage.archive.clone(),
            clock: Arc::new(time::SystemClock),
            metrics: bridge_metrics,
            media_metrics,
            book,
            locator: locator.clone(),
            trunks: trunks_published,
            events: event_log.clone(),
            health,
        },
    );
    // Room events (talking, echo cancellation) from the mixer threads; ends when they stop.
    let events = bridge.clone();
    std::thread::Builder::new()
        .name("mixer-events".into())
        .spawn(move || {
            while let Ok(event) = mixer_events_rx.recv() {
                events.mixer_event(event);
            }
        })
        .context("starting the mixer event thread")?;

    let shutdown = CancellationToken::new();
    let api_listener = tokio::net::TcpListener::bind(config.api.listen)
        .await
        .with_context(|| format!("api.listen: cannot bind {}", config.api.listen))?;
    info!(addr = %api_listener.local_addr()?, "API listening");
    let webhooks_stop = CancellationToken::new();
    let (webhooks, webhooks_task) = webhooks::spawn(webhooks::Setup {
        config: config.webhooks.clone(),
        outbox,
        log: event_log.clone(),
        book: config.storage.path.join("webhooks.json"),
        stop: webhooks_stop.clone(),
    })
    .context("storage.path: starting the webhooks")?;
    let router = roundtable_api::router(roundtable_api::ApiServices {
        control: Arc::new(bridge.clone()),
        webhooks: Arc::new(webhooks),
        config: config.effective.clone(),
        registry,
        tokens: roundtable_api::Tokens::new(
            config.api.tokens.clone(),
            config.api.metrics_token.as_ref().map(|t| t.expose()),
            config.api.rate_limit_per_s,
        ),
    });
    let app = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
    let api_shutdown = shutdown.clone().cancelled_owned();
    let api = match config.api.tls.clone() {
        None => {
            let listener = axum::serve::ListenerExt::tap_io(api_listener, |s| tune_api_socket(s));
            tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(api_shutdown)
                    .await
            })
        }
        Some(tls) => {
            let listener =
                api_tls::TlsListener::new(api_listener, tls).context("api.listen: starting TLS")?;
            let listener = axum::serve::ListenerExt::tap_io(listener, |s| {
                tune_api_socket(s.get_ref().0);
            });
            tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(api_shutdown)
                    .await
            })
        }
    };

    let sip_shutdown = CancellationToken::new();
    let trunk_commands = tokio::sync::mpsc::unbounded_channel();
    let handler: Arc<dyn CallHandler> = Arc::new(sip_events::SipEvents {
        bridge: bridge.clone(),
        trunks: trunk_commands.0.clone(),
    });
    let mut endpoint = EndpointConfig::default();
    endpoint.timers.t1 = config.sip.timer_t1;
    endpoint.answer_delay = config.sip.answer_delay;
    endpoint.allow = config.sip.allow.clone();
    endpoint.limits = config.sip.limits;
    endpoint.trusted = config.sip.trusted.clone();
    endpoint.auth = config.sip.auth.clone();
    endpoint.session_expires = config.sip.session_expires;
    endpoint.min_session_expires = config.sip.min_session_expires;
    endpoint.ping_interval = config.sip.options_ping;
    let transport_config = transport::TransportConfig {
        listen: config.sip.listen.clone(),
        tls: config.sip.tls.clone(),
        tls_client: config.sip.tls_client.clone(),
        tcp_idle_timeout: config.sip.tcp_idle_timeout,
    };
    let (sip, bound, sip_task) = transport::spawn(
        transport_config,
        endpoint,
        handler,
        sip_metrics,
        sip_shutdown.clone(),
    )
    .await
    .context("sip.listen: cannot bind")?;
    for addr in &bound {
        info!(transport = ?addr.transport, addr = %addr.addr, "SIP listening");
    }
    // The listeners are up while the driver runs: a driver that ends takes them all down.
    let sip_task = tokio::spawn(async move {
        let ended = sip_task.await;
        sip_down.store(true, std::sync::atomic::Ordering::Relaxed);
        ended
    });
    bridge.attach_sip(sip.clone());
    let trunks_shutdown = CancellationToken::new();
    let trunks_task = trunks::spawn(
        config.trunks.clone(),
        trunks::TrunkServices {
            sip: sip.clone(),
            locator: locator.clone(),
            metrics: trunk_metrics,
            clock: Arc::new(time::SystemClock),
            published: trunk_view,
            events: bridge.event_log(),
        },
        trunk_commands,
        trunks_shutdown.clone(),
    );
    bridge.set_ready();
    info!("ready");

    wait_for_signal().await;
    info!(
        drain_s = config.drain.as_secs(),
        "shutting down: refusing new calls"
    );
    bridge.start_draining();
    let drain_deadline = tokio::time::Instant::now() + config.drain;
    while bridge.active_calls().await > 0 && tokio::time::Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let remaining = bridge.active_calls().await;
    if remaining > 0 {
        info!(
            calls = remaining,
            "drain time over: sending BYE to remaining calls"
        );
    }
    bridge.hang_up_all().await;
    // Recordings close (spooled, fsynced, ledger closed) at once; their uploads get a few
    // seconds, then stop and resume at the next start.
    if tokio::time::timeout(Duration::from_secs(8), bridge.wait_for_tasks())
        .await
        .is_err()
    {
        storage
            .stop
            .store(true, std::sync::atomic::Ordering::Relaxed);
        if tokio::time::timeout(Duration::from_secs(3), bridge.wait_for_tasks())
            .await
            .is_err()
        {
            warn!("recordings did not close within 11 s");
        }
    }
    storage
        .stop
        .store(true, std::sync::atomic::Ordering::Relaxed);
    // The trunks' bindings are removed while the SIP driver still runs.
    trunks_shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(3), trunks_task).await;
    // A round trip through the SIP driver: every BYE queued before it has been sent.
    let _ = tokio::time::timeout(Duration::from_secs(1), sip.active_calls()).await;
    sip_shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(1), sip_task).await;
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(1), api).await;
    if tokio::time::timeout(Duration::from_secs(3), bridge.stop())
        .await
        .is_err()
    {
        warn!("the mixer threads did not stop within 3 s; they end with the process");
    }
    // The last events (the calls' ends) reach the journal before the process goes; webhook
    // deliveries then stop where they are (what they had not sent goes at the next start).
    let _ = tokio::task::spawn_blocking(move || event_log.flush(Duration::from_secs(2))).await;
    webhooks_stop.cancel();
    if tokio::time::timeout(Duration::from_secs(2), webhooks_task)
        .await
        .is_err()
    {
        warn!("webhook deliveries did not stop within 2 s; they resume at the next start");
    }
    info!("stopped");
    Ok(())
}

/// At most 16 KiB of an answer waits unsent in the kernel: a WebSocket consumer that stops
/// reading then shows as behind in the bridge's queue (closed at 1,000 events) rather than
/// hiding megabytes of events in socket buffers; bulk downloads keep their speed.
fn tune_api_socket(stream: &tokio::net::TcpStream) {
    if let Err(error) = socket2::SockRef::from(stream).set_tcp_notsent_lowat(16 << 10) {
        tracing::debug!(%error, "TCP_NOTSENT_LOWAT not set");
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
