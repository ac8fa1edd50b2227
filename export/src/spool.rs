//! The on-disk spool: append-only segment files of CRC-framed records, one cursor per
//! sink.
//!
//! - Segment `seg-<first seq, 20 digits>.log` holds frames
//!   `len u32 LE | crc32(seq || payload) u32 LE | seq u64 LE | payload`.
//! - Appends are fsync'd once per batch; only then is the new head published, so readers
//!   never see a frame that a crash could still take back.
//! - `cursor-<sink>` holds the next seq the sink has not delivered, replaced atomically
//!   (temp file, fsync, rename, fsync of the directory) after each delivered batch.
//! - A segment is deleted once every sink's cursor is past it.
//! - On open, the last segment is scanned: a torn or corrupt tail (crash mid-write) fails
//!   its CRC or length and is truncated, with a warning.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Write as _};
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::config::{DropPolicy, SpoolConfig};
use crate::metrics::{self, Metrics};

const HEADER: usize = 16;
/// A record larger than this is refused (and counted) rather than spooled.
pub const MAX_RECORD: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {}: {err}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        err: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |err| SpoolError::Io {
        path: path.to_owned(),
        err,
    }
}

#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    config: SpoolConfig,
    metrics: Arc<Metrics>,
    inner: Mutex<Inner>,
    head: watch::Sender<u64>,
}

#[derive(Debug)]
struct Inner {
    /// First seq -> bytes on disk, every segment including the active (last) one.
    segments: BTreeMap<u64, u64>,
    active: File,
    next_seq: u64,
    total_bytes: u64,
    /// Next undelivered seq of each sink, as last persisted.
    cursors: HashMap<String, u64>,
    /// Whether the last append found the spool full (one warning per episode).
    full: bool,
}

fn segment_path(dir: &Path, start: u64) -> PathBuf {
    dir.join(format!("seg-{start:020}.log"))
}

fn cursor_path(dir: &Path, sink: &str) -> PathBuf {
    dir.join(format!("cursor-{sink}"))
}

fn frame(seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&seq.to_le_bytes());
    crc.update(payload);
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Reads one frame; `Ok(None)` at a clean end of file, `Err(())` for a torn or corrupt one.
fn read_frame(reader: &mut impl std::io::Read) -> Result<Option<(u64, Vec<u8>)>, ()> {
    let mut header = [0u8; HEADER];
    let mut got = 0;
    while got < HEADER {
        match reader.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(()),
            Ok(n) => got += n,
            Err(_) => return Err(()),
        }
    }
    let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    let seq = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
    if len > MAX_RECORD {
        return Err(());
    }
    let mut payload = vec![0u8; len];
    reader.read_exact(&mut payload).map_err(|_| ())?;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&seq.to_le_bytes());
    hasher.update(&payload);
    if hasher.finalize() != crc {
        return Err(());
    }
    Ok(Some((seq, payload)))
}

fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

impl Spool {
    /// Opens (creating) the spool for `sinks`, repairing a torn tail.
    pub fn open(
        config: SpoolConfig,
        sinks: &[String],
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, SpoolError> {
        let dir = config.dir.clone();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io(&dir))?;
        let mut segments = BTreeMap::new();
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let entry = entry.map_err(io(&dir))?;
            let name = entry.file_name();
            let Some(start) = name.to_str().and_then(|n| {
                n.strip_prefix("seg-")?
                    .strip_suffix(".log")?
                    .parse::<u64>()
                    .ok()
            }) else {
                continue;
            };
            let len = entry.metadata().map_err(io(&entry.path()))?.len();
            segments.insert(start, len);
        }
        let mut cursors = HashMap::new();
        for sink in sinks {
            let path = cursor_path(&dir, sink);
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    let seq = text.trim().parse::<u64>().map_err(|_| SpoolError::Io {
                        path: path.clone(),
                        err: std::io::Error::other("cursor file is not a number"),
                    })?;
                    cursors.insert(sink.clone(), seq);
                }
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => return Err(io(&path)(err)),
            }
        }

        // The last segment may end in a frame a crash cut short.
        let mut next_seq = cursors.values().copied().max().unwrap_or(0);
        if let Some((&start, _)) = segments.iter().next_back() {
            let path = segment_path(&dir, start);
            let file = File::open(&path).map_err(io(&path))?;
            let mut reader = BufReader::new(file);
            let mut good = 0u64;
            let mut seq = start;
            loop {
                match read_frame(&mut reader) {
                    Ok(Some((s, payload))) => {
                        good += (HEADER + payload.len()) as u64;
                        seq = s + 1;
                    }
                    Ok(None) => break,
                    Err(()) => {
                        let len = segments[&start];
                        tracing::warn!(
                            segment = %path.display(),
                            at = good,
                            dropped_bytes = len - good,
                            "export spool: torn or corrupt tail after a crash, truncated"
                        );
                        OpenOptions::new()
                            .write(true)
                            .open(&path)
                            .and_then(|f| {
                                f.set_len(good)?;
                                f.sync_all()
                            })
                            .map_err(io(&path))?;
                        segments.insert(start, good);
                        break;
                    }
                }
            }
            next_seq = next_seq.max(seq);
        }
        let start = match segments.iter().next_back() {
            Some((&start, _)) => start,
            None => {
                segments.insert(next_seq, 0);
                next_seq
            }
        };
        let path = segment_path(&dir, start);
        let active = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        sync_dir(&dir)?;
        let oldest = *segments.keys().next().expect("a segment");
        for sink in sinks {
            // A new sink starts with what is spooled.
            cursors.entry(sink.clone()).or_insert(oldest);
        }
        let total_bytes = segments.values().sum();
        metrics.set(metrics::SPOOL_BYTES, "", total_bytes);
        let (head, _) = watch::channel(next_seq);
        Ok(Arc::new(Self {
            dir,
            config,
            metrics,
            inner: Mutex::new(Inner {
                segments,
                active,
                next_seq,
                total_bytes,
                cursors,
                full: false,
            }),
            head,
        }))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The next seq to be written; changes when a batch is durable.
    pub fn head(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }

    /// Appends `payloads` durably (one fsync), applying the drop policy if the spool is
    /// full. Returns how many were written.
    pub fn append(&self, payloads: &[Vec<u8>]) -> Result<usize, SpoolError> {
        let mut inner = self.inner.lock().expect("spool lock");
        let mut written = 0;
        for payload in payloads {
            if payload.len() > MAX_RECORD {
                tracing::warn!(
                    bytes = payload.len(),
                    "export spool: event too large, dropped"
                );
                self.count_drop_all(&inner, "too_large", 1);
                continue;
            }
            let framed = frame(inner.next_seq, payload);
            if !self.make_room(&mut inner, framed.len() as u64)? {
                continue;
            }
            let start = *inner.segments.keys().next_back().expect("active segment");
            inner
                .active
                .write_all(&framed)
                .map_err(io(&segment_path(&self.dir, start)))?;
            *inner.segments.get_mut(&start).expect("active segment") += framed.len() as u64;
            inner.total_bytes += framed.len() as u64;
            inner.next_seq += 1;
            written += 1;
            if inner.segments[&start] >= self.config.segment_bytes {
                self.rotate(&mut inner)?;
            }
        }
        let start = *inner.segments.keys().next_back().expect("active segment");
        inner
            .active
            .sync_data()
            .map_err(io(&segment_path(&self.dir, start)))?;
        self.metrics
            .set(metrics::SPOOL_BYTES, "", inner.total_bytes);
        let next = inner.next_seq;
        drop(inner);
        self.head.send_replace(next);
        Ok(written)
    }

    /// Makes room for `bytes` more; `false`: the record is dropped (policy "newest").
    fn make_room(&self, inner: &mut Inner, bytes: u64) -> Result<bool, SpoolError> {
        if inner.total_bytes + bytes <= self.config.max_bytes {
            inner.full = false;
            return Ok(true);
        }
        if !inner.full {
            tracing::warn!(
                dir = %self.dir.display(),
                max_bytes = self.config.max_bytes,
                policy = ?self.config.drop_policy,
                "export spool full: sinks are not keeping up; dropping events per drop_policy"
            );
            inner.full = true;
        }
        match self.config.drop_policy {
            DropPolicy::Newest => {
                self.count_drop_all(inner, "spool_full", 1);
                Ok(false)
            }
            DropPolicy::Oldest => {
                while inner.total_bytes + bytes > self.config.max_bytes {
                    if inner.segments.len() < 2 {
                        self.rotate(inner)?;
                    }
                    let mut starts = inner.segments.keys().copied();
                    let (oldest, next) = (starts.next().expect("two"), starts.next().expect("two"));
                    let len = inner.segments.remove(&oldest).expect("oldest");
                    let path = segment_path(&self.dir, oldest);
                    std::fs::remove_file(&path).map_err(io(&path))?;
                    inner.total_bytes -= len;
                    let mut sinks: Vec<_> = inner.cursors.iter_mut().collect();
                    sinks.sort();
                    for (sink, cursor) in sinks {
                        if *cursor < next {
                            let lost = next - (*cursor).max(oldest);
                            tracing::warn!(
                                sink,
                                lost,
                                "export spool full: oldest segment deleted before delivery"
                            );
                            self.metrics.add(metrics::DROPPED, sink, "spool_full", lost);
                            *cursor = next;
                        }
                    }
                }
                Ok(true)
            }
        }
    }

    fn count_drop_all(&self, inner: &Inner, reason: &str, n: u64) {
        for sink in inner.cursors.keys() {
            self.metrics.add(metrics::DROPPED, sink, reason, n);
        }
    }

    fn rotate(&self, inner: &mut Inner) -> Result<(), SpoolError> {
        let old = *inner.segments.keys().next_back().expect("active segment");
        inner
            .active
            .sync_data()
            .map_err(io(&segment_path(&self.dir, old)))?;
        let start = inner.next_seq;
        if start == old {
            return Ok(()); // empty active segment: nothing to rotate
        }
        let path = segment_path(&self.dir, start);
        inner.active = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        sync_dir(&self.dir)?;
        inner.segments.insert(start, 0);
        Ok(())
    }

    /// The persisted cursor of `sink`.
    pub fn cursor(&self, sink: &str) -> u64 {
        self.inner.lock().expect("spool lock").cursors[sink]
    }

    /// Persists `sink`'s cursor at `next` and deletes segments every sink is past.
    pub fn commit(&self, sink: &str, next: u64) -> Result<(), SpoolError> {
        let path = cursor_path(&self.dir, sink);
        let tmp = self.dir.join(format!(".cursor-{sink}.tmp"));
        (|| {
            let mut file = File::create(&tmp)?;
            file.write_all(next.to_string().as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)
        })()
        .map_err(io(&path))?;
        sync_dir(&self.dir)?;
        let mut inner = self.inner.lock().expect("spool lock");
        let cursor = inner.cursors.get_mut(sink).expect("known sink");
        *cursor = (*cursor).max(next);
        let min = inner.cursors.values().copied().min().unwrap_or(next);
        self.metrics
            .set(metrics::LAG, sink, inner.next_seq.saturating_sub(next));
        // Segments before the active one whose successor starts at or below every cursor.
        let starts: Vec<u64> = inner.segments.keys().copied().collect();
        for pair in starts.windows(2) {
            if pair[1] > min {
                break;
            }
            let path = segment_path(&self.dir, pair[0]);
            std::fs::remove_file(&path).map_err(io(&path))?;
            let len = inner.segments.remove(&pair[0]).unwrap_or(0);
            inner.total_bytes -= len;
        }
        self.metrics
            .set(metrics::SPOOL_BYTES, "", inner.total_bytes);
        Ok(())
    }

    /// A reader for `sink`, from its persisted cursor.
    pub fn reader(self: &Arc<Self>, sink: &str) -> Reader {
        Reader {
            next: self.cursor(sink),
            spool: Arc::clone(self),
            sink: sink.to_owned(),
            open: None,
        }
    }
}

/// Reads one sink's records in order, from its cursor.
#[derive(Debug)]
pub struct Reader {
    spool: Arc<Spool>,
    sink: String,
    /// Next seq to return.
    next: u64,
    /// The segment being read (its first seq) and the reader positioned at `next`.
    open: Option<(u64, BufReader<File>)>,
}

impl Reader {
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// Goes back to `next` (a failed delivery is read again).
    pub fn rewind(&mut self, next: u64) {
        if next != self.next {
            self.next = next;
            self.open = None;
        }
    }

    /// Up to `max` durable records from the cursor on (fewer at the head).
    pub fn read(&mut self, max: usize) -> Result<Vec<(u64, Vec<u8>)>, SpoolError> {
        let head = *self.spool.head.borrow();
        let mut out = Vec::new();
        while out.len() < max && self.next < head {
            if self.open.is_none() {
                let (start, dropped_to) = {
                    let inner = self.spool.inner.lock().expect("spool lock");
                    // The policy "oldest" may have deleted what this reader was at.
                    let cursor = inner.cursors.get(&self.sink).copied().unwrap_or(0);
                    let oldest = *inner.segments.keys().next().expect("a segment");
                    let next = self.next.max(cursor.min(head)).max(oldest);
                    let start = *inner
                        .segments
                        .range(..=next)
                        .next_back()
                        .map(|(s, _)| s)
                        .unwrap_or(&oldest);
                    (start, next)
                };
                self.next = dropped_to;
                let path = segment_path(&self.spool.dir, start);
                let file = File::open(&path).map_err(io(&path))?;
                // Frames before `next` are skipped as they come: segments are bounded by
                // segment_bytes, and so is the scan.
                self.open = Some((start, BufReader::with_capacity(256 * 1024, file)));
                continue;
            }
            let (start, reader) = self.open.as_mut().expect("open");
            match read_frame(reader) {
                Ok(Some((seq, payload))) => {
                    if seq < self.next {
                        continue;
                    }
                    self.next = seq + 1;
                    out.push((seq, payload));
                }
                Ok(None) => {
                    // End of this segment: the next one starts where this one ended.
                    let start = *start;
                    let later = {
                        let inner = self.spool.inner.lock().expect("spool lock");
                        inner.segments.range(start + 1..).next().map(|(s, _)| *s)
                    };
                    match later {
                        Some(_) => self.open = None,
                        None => break, // the active segment: nothing more is durable yet
                    }
                }
                Err(()) => {
                    let start = *start;
                    let later = {
                        let inner = self.spool.inner.lock().expect("spool lock");
                        inner.segments.range(start + 1..).next().map(|(s, _)| *s)
                    };
                    let skip_to = later.unwrap_or(head);
                    tracing::error!(
                        sink = %self.sink,
                        segment = %segment_path(&self.spool.dir, start).display(),
                        lost = skip_to.saturating_sub(self.next),
                        "export spool: corrupt record, skipping the rest of the segment"
                    );
                    self.spool.metrics.add(
                        metrics::DROPPED,
                        &self.sink,
                        "corrupt",
                        skip_to.saturating_sub(self.next),
                    );
                    self.next = skip_to;
                    self.open = None;
                }
            }
        }
        Ok(out)
    }
}
