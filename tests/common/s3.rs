//! A real S3-compatible server for end-to-end tests: s3s-fs (SigV4 checked, S3's multipart
//! rules enforced, objects stored as plain files), served in-process on a loopback port, and
//! stoppable and restartable on the same port to simulate an outage.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

pub const ACCESS_KEY: &str = "roundtable-test";
pub const SECRET_KEY: &str = "roundtable-test-secret";
pub const BUCKET: &str = "recordings";

/// A running (or stopped) s3s-fs server.
pub struct S3Server {
    pub addr: SocketAddr,
    pub root: PathBuf,
    runtime: tokio::runtime::Runtime,
    stop: Option<tokio::sync::watch::Sender<bool>>,
}

impl S3Server {
    /// Starts a server on a free loopback port with bucket [`BUCKET`] under `root`.
    pub fn start(root: &Path) -> S3Server {
        std::fs::create_dir_all(root.join(BUCKET)).unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let mut server = S3Server {
            addr,
            root: root.to_path_buf(),
            runtime,
            stop: None,
        };
        server.serve(listener);
        server
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let fs = s3s_fs::FileSystem::new(&self.root).unwrap();
        let mut builder = S3ServiceBuilder::new(fs);
        builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build();
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        self.runtime.spawn(async move {
            let connections = Arc::new(tokio::sync::Mutex::new(tokio::task::JoinSet::new()));
            loop {
                let socket = tokio::select! {
                    accepted = listener.accept() => match accepted { Ok((socket, _)) => socket, Err(_) => continue },
                    _ = stop_rx.changed() => break,
                };
                let service = service.clone();
                connections.lock().await.spawn(async move {
                    let _ = ConnBuilder::new(TokioExecutor::new()).serve_connection(TokioIo::new(socket), service).await;
                });
            }
            // An outage: every open connection dies with the listener.
            connections.lock().await.abort_all();
        });
        self.stop = Some(stop_tx);
    }

    /// Stops answering: the listener and every connection close.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    /// Answers again on the same port.
    pub fn resume(&mut self) {
        let listener = self.runtime.block_on(async {
            for _ in 0..100 {
                if let Ok(l) = tokio::net::TcpListener::bind(self.addr).await {
                    return l;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            panic!("could not bind {} again", self.addr);
        });
        self.serve(listener);
    }

    /// The TOML that points the service at this server.
    pub fn toml(&self, part_size_mib: u32) -> String {
        format!(
            "[storage]\nbackend = \"s3\"\n[storage.s3]\nendpoint = \"http://{}\"\nbucket = \"{BUCKET}\"\n\
             access_key = \"{ACCESS_KEY}\"\nsecret_key = \"{SECRET_KEY}\"\npart_size_mib = {part_size_mib}\n",
            self.addr
        )
    }

    /// The file s3s-fs keeps an object in.
    pub fn object_path(&self, key: &str) -> PathBuf {
        self.root.join(BUCKET).join(key)
    }
}
