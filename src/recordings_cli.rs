//! `roundtable recordings list|get|verify|pubkey`: the operator's view of finished recordings,
//! against whichever store the configuration names.

use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use roundtable_recorder::{MANIFEST, RecordError, list_recordings, read_manifest, verify_objects};
use roundtable_storage::ObjectKey;

use crate::RecordingsCommand;
use crate::archive;
use crate::config::Config;

/// Runs one `recordings` command.
pub fn run(config: &Config, command: RecordingsCommand) -> anyhow::Result<ExitCode> {
    if let RecordingsCommand::Pubkey = command {
        let signer = roundtable_recorder::Signer::load(&config.recording.signing_key, false)
            .context("no signing key yet (the service creates one at its first start, or set recording.signing_key)")?;
        println!("{}", signer.public_key_hex());
        return Ok(ExitCode::SUCCESS);
    }
    let (store, prefix) = archive::open_store(config)?;
    let (store, prefix) = (store.as_ref(), prefix.as_str());
    match command {
        RecordingsCommand::List { room } => {
            for id in list_recordings(store, prefix)? {
                if room
                    .as_deref()
                    .is_some_and(|r| !id.starts_with(&format!("{r}/")))
                {
                    continue;
                }
                match read_manifest(store, prefix, &id, None) {
                    Ok(m) => println!(
                        "{id}\t{}\t{:.1} s\t{} objects\t{} legs",
                        m.start,
                        m.duration_ms as f64 / 1000.0,
                        m.objects.len(),
                        m.legs.len()
                    ),
                    Err(error) => println!("{id}\tmanifest unreadable: {error}"),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        RecordingsCommand::Get { id, out } => {
            let manifest = read_manifest(store, prefix, &id, None)?;
            let folder = out.join(&id);
            std::fs::create_dir_all(&folder)
                .with_context(|| format!("creating {}", folder.display()))?;
            let total: u64 = manifest.objects.iter().map(|o| o.size).sum();
            let mut bar = Progress::new(total);
            let mut keys: Vec<String> = manifest.objects.iter().map(|o| o.key.clone()).collect();
            keys.push(format!("{prefix}recordings/{id}/{MANIFEST}"));
            for key in keys {
                let relative = key
                    .rsplit_once(&format!("{id}/"))
                    .map_or(key.as_str(), |(_, r)| r);
                let path = folder.join(relative);
                download(store, &key, &path, &mut bar)?;
            }
            bar.done();
            println!("{}", folder.display());
            Ok(ExitCode::SUCCESS)
        }
        RecordingsCommand::Verify { id, key } => {
            let trusted = match key {
                Some(key) => key,
                None => roundtable_recorder::Signer::load(&config.recording.signing_key, false)
                    .context("no signing key to check against: pass --key HEX")?
                    .public_key_hex(),
            };
            let manifest = match read_manifest(store, prefix, &id, Some(&trusted)) {
                Ok(m) => m,
                Err(error) => {
                    eprintln!("FAILED {id}: {error}");
                    return Ok(ExitCode::from(1));
                }
            };
            let total: u64 = manifest.objects.iter().map(|o| o.size).sum();
            let mut bar = Progress::new(total);
            let result = verify_objects(store, &manifest, |n| bar.set(n));
            bar.done();
            match result {
                Ok(()) => {
                    println!(
                        "OK {id}: signature and {} objects ({total} bytes) verified",
                        manifest.objects.len()
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(
                    error @ (RecordError::Mismatch { .. }
                    | RecordError::Storage(_)
                    | RecordError::Manifest { .. }),
                ) => {
                    eprintln!("FAILED {id}: {error}");
                    Ok(ExitCode::from(1))
                }
                Err(error) => bail!(error),
            }
        }
        RecordingsCommand::Pubkey => unreachable!("handled above"),
    }
}

fn download(
    store: &dyn roundtable_storage::ObjectStore,
    key: &str,
    path: &Path,
    bar: &mut Progress,
) -> anyhow::Result<()> {
    let reader = store.open(&ObjectKey::new(key)?)?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut body = reader.body;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = body
            .read(&mut buf)
            .with_context(|| format!("reading {key}"))?;
        if n == 0 {
            return Ok(());
        }
        file.write_all(&buf[..n])?;
        bar.add(n as u64);
    }
}

/// A progress bar on stderr, redrawn at most every 1 %.
struct Progress {
    total: u64,
    done: u64,
    shown: Option<u64>,
}

impl Progress {
    fn new(total: u64) -> Progress {
        Progress {
            total: total.max(1),
            done: 0,
            shown: None,
        }
    }

    fn add(&mut self, n: u64) {
        self.set(self.done + n);
    }

    fn set(&mut self, done: u64) {
        self.done = done.min(self.total);
        let percent = self.done * 100 / self.total;
        if self.shown == Some(percent) {
            return;
        }
        self.shown = Some(percent);
        let filled = (percent / 5) as usize;
        eprint!(
            "\r[{}{}] {percent:3}% {:.1}/{:.1} MiB",
            "#".repeat(filled),
            ".".repeat(20 - filled),
            self.done as f64 / 1048576.0,
            self.total as f64 / 1048576.0
        );
    }

    fn done(&mut self) {
        self.set(self.total);
        eprintln!();
    }
}
