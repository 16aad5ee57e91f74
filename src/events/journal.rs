//! The event journal: every event, one JSON object per line, appended to segment files in
//! `<storage.path>/events/` and fsynced in batches, so that a client's cursor survives a restart
//! and, after a crash, the events since it are still there (or it is told how many are gone).
//!
//! Segments are named by their first event's sequence number (`00000000000000000001.jsonl`) and
//! rolled at [`SEGMENT_BYTES`]; the oldest are removed beyond the size bound. A line torn by a
//! crash (the tail after the last newline) is cut off when the journal is opened. The folder's
//! `journal-id` names this journal in cursors, so a cursor from another journal (a wiped store)
//! is never read as one of this one's.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde_json::Value;

/// Called with a segment's file (read it with [`segment_events`], only if needed), the
/// sequence number of its last event, and why it goes (`outbox_full` or `expired`), before the
/// segment is removed: the webhook outbox sends what an endpoint has not received to its dead
/// letters. An error keeps the segment.
pub type PruneHook = Box<dyn FnMut(&Path, u64, &'static str) -> io::Result<()> + Send>;

/// The events of one segment file, oldest first (a torn line is skipped).
pub fn segment_events(path: &Path) -> io::Result<Vec<(u64, Value)>> {
    Ok(read_segment(path, false)?
        .into_iter()
        .map(|(seq, _, event)| (seq, event))
        .collect())
}

/// A segment is rolled once it holds this many bytes (unless the bounds say otherwise).
pub const SEGMENT_BYTES: u64 = 16 << 20;

/// How much the journal keeps.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Segments go, oldest first, while they hold more bytes than this.
    pub max_bytes: u64,
    /// ... or when their newest event is older than this.
    pub max_age: std::time::Duration,
    /// A segment is rolled once it holds this many bytes.
    pub segment_bytes: u64,
}

impl Bounds {
    /// `max_bytes` and `max_age` in segments of [`SEGMENT_BYTES`].
    pub fn new(max_bytes: u64, max_age: std::time::Duration) -> Bounds {
        Bounds {
            max_bytes,
            max_age,
            segment_bytes: SEGMENT_BYTES,
        }
    }
}

/// One segment file.
#[derive(Debug, Clone)]
struct Segment {
    /// The sequence number of its first event.
    first: u64,
    path: PathBuf,
    bytes: u64,
}

/// The journal's files and the segment being written.
pub struct Journal {
    dir: PathBuf,
    id: String,
    /// Oldest first; the last is the one appended to.
    segments: Vec<Segment>,
    file: Option<File>,
    /// The sequence number of the last event written.
    last: u64,
    bounds: Bounds,
    before_prune: Option<PruneHook>,
}

/// What opening found: the journal, and its newest events (at most the `tail` asked for).
pub struct Opened {
    /// The journal, ready to append after the last event.
    pub journal: Journal,
    /// Its newest events, oldest first.
    pub tail: Vec<(u64, Value)>,
}

impl Journal {
    /// Opens (or creates) the journal in `dir`, cutting a torn last line, keeping what
    /// `bounds` allow, and reading back its last `tail` events.
    pub fn open(dir: &Path, bounds: Bounds, tail: usize) -> io::Result<Opened> {
        std::fs::create_dir_all(dir)?;
        let id = journal_id(dir)?;
        let segments = list_segments(dir)?;
        let mut journal = Journal {
            dir: dir.to_path_buf(),
            id,
            segments,
            file: None,
            last: 0,
            bounds,
            before_prune: None,
        };
        if let Some(segment) = journal.segments.last_mut() {
            let events = read_segment(&segment.path, true)?;
            let good = events.last().map_or(0, |(_, end, _)| *end);
            if good < segment.bytes {
                tracing::warn!(
                    path = %segment.path.display(),
                    cut = segment.bytes - good,
                    "event journal: cutting a line torn by a crash"
                );
                let file = OpenOptions::new().write(true).open(&segment.path)?;
                file.set_len(good)?;
                file.sync_all()?;
                segment.bytes = good;
            }
            journal.last = events
                .last()
                .map_or(segment.first.saturating_sub(1), |(seq, _, _)| *seq);
        }
        let tail = journal.read_after(journal.last.saturating_sub(tail as u64), tail)?;
        Ok(Opened { journal, tail })
    }

    /// Sets what is called before a segment goes.
    pub fn set_prune_hook(&mut self, hook: PruneHook) {
        self.before_prune = Some(hook);
    }

    /// This journal's id, for cursors.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The sequence number of the last event written (0 when none was).
    pub fn last(&self) -> u64 {
        self.last
    }

    /// The sequence number of the oldest event still kept (`last + 1` when none is).
    pub fn oldest(&self) -> u64 {
        self.segments.first().map_or(self.last + 1, |s| s.first)
    }

    /// Appends events (numbered on from [`Journal::last`]) and fsyncs them: once this returns,
    /// they survive a crash.
    pub fn append(&mut self, events: &[(u64, String)]) -> io::Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let roll = self
            .segments
            .last()
            .is_none_or(|s| s.bytes >= self.bounds.segment_bytes);
        if roll || self.file.is_none() {
            self.open_segment(roll, events[0].0)?;
        }
        let mut buffer = Vec::with_capacity(events.iter().map(|(_, l)| l.len() + 1).sum());
        for (_, line) in events {
            buffer.extend_from_slice(line.as_bytes());
            buffer.push(b'\n');
        }
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("no segment"))?;
        file.write_all(&buffer)?;
        file.sync_data()?;
        if let Some(segment) = self.segments.last_mut() {
            segment.bytes += buffer.len() as u64;
        }
        self.last = events[events.len() - 1].0;
        Ok(())
    }

    /// Opens the segment to append to: a new one starting at `first` when rolling, else the
    /// last one (at start). Old segments beyond the size bound go.
    fn open_segment(&mut self, roll: bool, first: u64) -> io::Result<()> {
        if roll {
            let path = self.dir.join(format!("{first:020}.jsonl"));
            let file = OpenOptions::new().create(true).append(true).open(&path)?;
            File::open(&self.dir)?.sync_all()?;
            self.segments.push(Segment {
                first,
                path,
                bytes: 0,
            });
            self.file = Some(file);
            self.prune()?;
        } else if let Some(segment) = self.segments.last() {
            self.file = Some(OpenOptions::new().append(true).open(&segment.path)?);
        }
        Ok(())
    }

    /// Removes the oldest segments while all of them hold more than the size bound, or while
    /// the oldest was last written before the age bound (the one being written stays).
    fn prune(&mut self) -> io::Result<()> {
        while self.segments.len() > 1 {
            let too_big =
                self.segments.iter().map(|s| s.bytes).sum::<u64>() > self.bounds.max_bytes;
            let too_old = std::fs::metadata(&self.segments[0].path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|written| written.elapsed().ok())
                .is_some_and(|age| age > self.bounds.max_age);
            if !too_big && !too_old {
                break;
            }
            if let Some(hook) = self.before_prune.as_mut() {
                let last = self.segments[1].first.saturating_sub(1);
                hook(
                    &self.segments[0].path,
                    last,
                    if too_big { "outbox_full" } else { "expired" },
                )?;
            }
            let gone = self.segments.remove(0);
            std::fs::remove_file(&gone.path)?;
        }
        Ok(())
    }

    /// Up to `max` events after `after`, oldest first, read from the files (blocking).
    pub fn read_after(&self, after: u64, max: usize) -> io::Result<Vec<(u64, Value)>> {
        read_segments_after(&self.segments, after, self.last, max)
    }
}

/// Up to `max` events numbered after `after` and at most `until`, oldest first, read from the
/// journal in `dir` while its thread may write on (blocking).
pub fn read_dir_after(
    dir: &Path,
    after: u64,
    until: u64,
    max: usize,
) -> io::Result<Vec<(u64, Value)>> {
    read_segments_after(&list_segments(dir)?, after, until, max)
}

fn read_segments_after(
    segments: &[Segment],
    after: u64,
    until: u64,
    max: usize,
) -> io::Result<Vec<(u64, Value)>> {
    let mut events = Vec::new();
    let start = segments
        .iter()
        .rposition(|s| s.first <= after + 1)
        .unwrap_or(0);
    for segment in segments.get(start..).unwrap_or_default() {
        let read = match read_segment(&segment.path, false) {
            Ok(read) => read,
            // Pruned while we listed: its events are gone, the next segment's follow.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for (seq, _, event) in read {
            if seq > until {
                return Ok(events);
            }
            if seq > after {
                events.push((seq, event));
                if events.len() == max {
                    return Ok(events);
                }
            }
        }
    }
    Ok(events)
}

/// The segment files in `dir`, oldest first.
fn list_segments(dir: &Path) -> io::Result<Vec<Segment>> {
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(first) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".jsonl"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        segments.push(Segment {
            first,
            path: entry.path(),
            bytes: entry.metadata()?.len(),
        });
    }
    segments.sort_by_key(|s| s.first);
    Ok(segments)
}

/// The events of a segment file with each one's end offset; stops at the first line that does
/// not parse (a torn tail) when `stop_at_torn`, skips it otherwise.
fn read_segment(path: &Path, stop_at_torn: bool) -> io::Result<Vec<(u64, u64, Value)>> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(0))?;
    let mut reader = BufReader::new(file);
    let mut events = Vec::new();
    let mut offset = 0u64;
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = reader.read_until(b'\n', &mut line)?;
        if read == 0 {
            break;
        }
        offset += read as u64;
        let parsed = line
            .ends_with(b"\n")
            .then(|| serde_json::from_slice::<Value>(&line).ok())
            .flatten()
            .and_then(|event| Some((event["id"].as_u64()?, event)));
        match parsed {
            Some((seq, event)) => events.push((seq, offset, event)),
            None if stop_at_torn => break,
            None => {}
        }
    }
    Ok(events)
}

/// The journal's id, made once with the folder.
fn journal_id(dir: &Path) -> io::Result<String> {
    let path = dir.join("journal-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut bytes = [0u8; 6];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| io::Error::other("no random bytes"))?;
    let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let tmp = dir.join("journal-id.tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(id.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    File::open(dir)?.sync_all()?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: std::time::Duration = std::time::Duration::from_secs(86_400);

    fn line(seq: u64) -> (u64, String) {
        (seq, format!(r#"{{"id":{seq},"type":"dtmf"}}"#))
    }

    #[test]
    fn events_survive_reopening_and_a_torn_line_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let opened = Journal::open(dir.path(), Bounds::new(1 << 30, DAY), 10).unwrap();
        let mut journal = opened.journal;
        assert!(opened.tail.is_empty());
        assert_eq!((journal.last(), journal.oldest()), (0, 1));
        let id = journal.id().to_string();
        journal.append(&[line(1), line(2)]).unwrap();
        journal.append(&[line(3)]).unwrap();
        drop(journal);
        // A crash in the middle of a write leaves half a line.
        let segment = dir.path().join(format!("{:020}.jsonl", 1));
        let mut file = OpenOptions::new().append(true).open(&segment).unwrap();
        file.write_all(br#"{"id":4,"ty"#).unwrap();
        let opened = Journal::open(dir.path(), Bounds::new(1 << 30, DAY), 2).unwrap();
        let mut journal = opened.journal;
        assert_eq!(journal.id(), id, "the id stays with the folder");
        assert_eq!(journal.last(), 3);
        let tail: Vec<u64> = opened.tail.iter().map(|(s, _)| *s).collect();
        assert_eq!(tail, [2, 3]);
        journal.append(&[line(4)]).unwrap();
        let after: Vec<u64> = journal
            .read_after(1, 10)
            .unwrap()
            .iter()
            .map(|(s, _)| *s)
            .collect();
        assert_eq!(after, [2, 3, 4]);
        let text = std::fs::read_to_string(&segment).unwrap();
        assert_eq!(text.lines().count(), 4, "{text}");
    }

    #[test]
    fn old_segments_go_beyond_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(dir.path(), Bounds::new(0, DAY), 0)
            .unwrap()
            .journal;
        let told = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let hook_told = told.clone();
        journal.set_prune_hook(Box::new(move |path, last, why| {
            let seqs: Vec<u64> = segment_events(path)
                .unwrap()
                .iter()
                .map(|(s, _)| *s)
                .collect();
            hook_told.lock().unwrap().push((seqs, last, why));
            Ok(())
        }));
        journal.append(&[line(1)]).unwrap();
        // Force a roll: the segment counts as full.
        journal.segments.last_mut().unwrap().bytes = SEGMENT_BYTES;
        journal.append(&[line(2)]).unwrap();
        assert_eq!(journal.oldest(), 2, "the full segment went");
        assert_eq!(
            *told.lock().unwrap(),
            [(vec![1], 1, "outbox_full")],
            "the hook saw its events first"
        );
        assert!(!dir.path().join(format!("{:020}.jsonl", 1)).exists());
        let kept: Vec<u64> = journal
            .read_after(0, 10)
            .unwrap()
            .iter()
            .map(|(s, _)| *s)
            .collect();
        assert_eq!(kept, [2]);
    }
}
