//! The byte pipelines every backup kind shares.
//!
//! Write: chunks from a source stream → sha256 (raw) → zstd → optional age → sha256 (stored)
//! → parts of `part_size` → [`Upload`]. Hashing, compression and encryption run on one blocking
//! thread; the source and the uploads stay async. Channels between the stages are bounded, so
//! memory stays near `part_size × (parts_in_flight + 2)` plus zstd's window, whatever the size
//! of the payload — nothing is ever held whole in memory or written to local disk.
//!
//! Read: stored object → sha256 (stored) → age → zstd → sha256 (raw) → optional sink file.
//! For etcd snapshots both directions also check etcd's own integrity hash: the last 32 bytes
//! of a snapshot are the sha256 of everything before them (etcd's `Maintenance.Snapshot`
//! appends it and `etcdctl snapshot restore` checks it).

use std::cell::RefCell;
use std::io::{Read, Write};
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::crypto::{Decrypt, Encrypt};
use crate::error::BackupError;
use crate::manifest::{Encryption, Manifest};
use crate::store::{Store, Upload};

/// What the write pipeline measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub raw_size: u64,
    pub stored_size: u64,
    pub sha256_raw: String,
    pub sha256_stored: String,
    /// etcd's trailing hash (hex) when `etcd_integrity` was asked for.
    pub integrity_sha256: Option<String>,
}

/// Settings of the write pipeline.
#[derive(Debug, Clone)]
pub struct WriteSettings {
    /// zstd level (1 fastest … 19; 3 is zstd's default).
    pub compression_level: i32,
    pub encrypt: Encrypt,
    /// Check etcd's trailing sha256 at the end of the stream.
    pub etcd_integrity: bool,
}

/// Tracks the last 32 bytes of a stream and hashes everything before them.
#[derive(Default)]
pub struct TrailingHash {
    hasher: Sha256,
    tail: Vec<u8>,
}

impl TrailingHash {
    pub fn update(&mut self, chunk: &[u8]) {
        if chunk.len() >= 32 {
            self.hasher.update(&self.tail);
            self.hasher.update(&chunk[..chunk.len() - 32]);
            self.tail.clear();
            self.tail.extend_from_slice(&chunk[chunk.len() - 32..]);
        } else {
            self.tail.extend_from_slice(chunk);
            if self.tail.len() > 32 {
                let extra = self.tail.len() - 32;
                self.hasher.update(&self.tail[..extra]);
                self.tail.drain(..extra);
            }
        }
    }

    /// The sha256 (hex) of the whole stream, tail included, without hashing it twice: the
    /// hasher's state covers everything before the tail, so a copy of it fed the tail is the
    /// hash of the whole.
    pub fn whole_sha256(&self) -> String {
        let mut whole = self.hasher.clone();
        whole.update(&self.tail);
        hex::encode(whole.finalize())
    }

    /// The trailing hash (hex) if it matches the bytes before it, else why not.
    pub fn check(self) -> Result<String, IntegrityError> {
        if self.tail.len() < 32 {
            return Err(IntegrityError::Short);
        }
        let computed = self.hasher.finalize();
        if computed[..] != self.tail[..] {
            return Err(IntegrityError::Mismatch {
                stored: hex::encode(&self.tail),
                computed: hex::encode(computed),
            });
        }
        Ok(hex::encode(&self.tail))
    }
}

/// Why a snapshot fails etcd's own integrity hash (its trailing sha256).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntegrityError {
    #[error("the snapshot is shorter than its 32-byte integrity hash")]
    Short,
    #[error("etcd integrity hash mismatch: the snapshot ends with {stored} but its content hashes to {computed}")]
    Mismatch { stored: String, computed: String },
}

/// Sentinel message of the io errors the encoder sees when a later stage has gone away.
const DOWNSTREAM_GONE: &str = "downstream stage stopped";

/// Cuts what it is given into parts and hands them to the uploader.
struct PartSink {
    tx: mpsc::Sender<Bytes>,
    part_size: usize,
    buf: BytesMut,
    hasher: Sha256,
    size: u64,
    /// Time spent waiting for the uploader to take a part (for the stage profile).
    waited: Duration,
}

impl PartSink {
    fn flush_part(&mut self) -> std::io::Result<()> {
        let part = std::mem::replace(&mut self.buf, BytesMut::with_capacity(self.part_size));
        let t = Instant::now();
        let sent = self
            .tx
            .blocking_send(part.freeze())
            .map_err(|_| std::io::Error::other(DOWNSTREAM_GONE));
        self.waited += t.elapsed();
        sent
    }

    fn finish(mut self) -> std::io::Result<(String, u64)> {
        if !self.buf.is_empty() {
            self.flush_part()?;
        }
        Ok((hex::encode(self.hasher.finalize()), self.size))
    }
}

impl Write for PartSink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let room = self.part_size - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        self.hasher.update(&data[..n]);
        self.size += n as u64;
        if self.buf.len() == self.part_size {
            self.flush_part()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn encode(
    mut raw: mpsc::Receiver<Bytes>,
    parts: mpsc::Sender<Bytes>,
    part_size: usize,
    settings: WriteSettings,
) -> Result<Written, BackupError> {
    let io = |e: std::io::Error| {
        if e.to_string() == DOWNSTREAM_GONE {
            BackupError::Cancelled
        } else {
            BackupError::Pipeline(e.to_string())
        }
    };
    let sink = PartSink {
        tx: parts,
        part_size,
        buf: BytesMut::with_capacity(part_size),
        hasher: Sha256::new(),
        size: 0,
        waited: Duration::ZERO,
    };
    let started = Instant::now();
    let mut source_wait = Duration::ZERO;
    let enc = settings.encrypt.wrap(sink).map_err(io)?;
    let mut zstd =
        zstd::stream::write::Encoder::new(enc, settings.compression_level).map_err(io)?;
    zstd.include_checksum(true).map_err(io)?;
    // For etcd snapshots one hasher serves both the raw sha256 and etcd's integrity hash
    // (see `TrailingHash::whole_sha256`): one pass over the bytes instead of two.
    let mut raw_hash = Sha256::new();
    let mut trailing = TrailingHash::default();
    let mut raw_size = 0u64;
    loop {
        let t = Instant::now();
        let Some(chunk) = raw.blocking_recv() else {
            source_wait += t.elapsed();
            break;
        };
        source_wait += t.elapsed();
        if settings.etcd_integrity {
            trailing.update(&chunk);
        } else {
            raw_hash.update(&chunk);
        }
        raw_size += chunk.len() as u64;
        zstd.write_all(&chunk).map_err(io)?;
    }
    // The source ended; before anything becomes final, check etcd's own hash.
    let (sha256_raw, integrity) = if settings.etcd_integrity {
        let whole = trailing.whole_sha256();
        (
            whole,
            Some(trailing.check().map_err(BackupError::Integrity)?),
        )
    } else {
        (hex::encode(raw_hash.finalize()), None)
    };
    let enc = zstd.finish().map_err(io)?;
    let sink = enc.finish().map_err(io)?;
    let upload_wait = sink.waited;
    let (sha256_stored, stored_size) = sink.finish().map_err(io)?;
    let total = started.elapsed();
    // Where the time went, for tuning (bench/backup): the encoder thread is either working
    // (hash, zstd, encryption), waiting for the source, or waiting for the uploads.
    tracing::info!(
        total_s = total.as_secs_f64(),
        encoder_busy_s = total
            .saturating_sub(source_wait + upload_wait)
            .as_secs_f64(),
        waiting_for_source_s = source_wait.as_secs_f64(),
        waiting_for_upload_s = upload_wait.as_secs_f64(),
        raw_size,
        stored_size,
        "write pipeline stages"
    );
    Ok(Written {
        raw_size,
        stored_size,
        sha256_raw,
        sha256_stored,
        integrity_sha256: integrity,
    })
}

/// Streams `source` through the write pipeline into `upload`. On any error the caller must
/// abort the upload. The source's errors are reported as they are; a failure of one stage
/// stops the others.
pub async fn write_stream<S>(
    source: S,
    upload: &mut dyn Upload,
    part_size: usize,
    settings: WriteSettings,
) -> Result<Written, BackupError>
where
    S: Stream<Item = Result<Bytes, BackupError>> + Send,
{
    // A part is allocated whole: refuse sizes no store takes before asking for the memory.
    if part_size == 0 || part_size > crate::store::MAX_PART_SIZE {
        return Err(BackupError::Invalid(format!(
            "part size {part_size} bytes is outside 1..={} bytes",
            crate::store::MAX_PART_SIZE
        )));
    }
    // Room for 64 source chunks (2 MiB of etcd's 32 KiB snapshot chunks): the source keeps
    // streaming while the encoder compresses a burst, instead of stalling etcd's gRPC window
    // (bench/backup: the encoder waits for the source most of the time).
    let (raw_tx, raw_rx) = mpsc::channel::<Bytes>(64);
    let (part_tx, mut part_rx) = mpsc::channel::<Bytes>(1);
    let worker = tokio::task::spawn_blocking(move || encode(raw_rx, part_tx, part_size, settings));

    let feed = async move {
        futures::pin_mut!(source);
        while let Some(item) = source.next().await {
            let chunk = item?;
            if raw_tx.send(chunk).await.is_err() {
                return Err(BackupError::Cancelled);
            }
        }
        Ok(())
    };
    let send = async move {
        while let Some(part) = part_rx.recv().await {
            upload.write_part(part).await?;
        }
        // (Returning drops the receiver, which tells the encoder to stop if the upload failed.)
        Ok::<(), BackupError>(())
    };
    let (fed, sent) = tokio::join!(feed, send);
    let encoded = worker
        .await
        .map_err(|e| BackupError::Pipeline(format!("encoder task failed: {e}")))?;
    // Report the cause, not the echo: a stage that stopped because another failed says Cancelled.
    for r in [fed.err(), sent.err()].into_iter().flatten() {
        if !matches!(r, BackupError::Cancelled) {
            return Err(r);
        }
    }
    encoded
}

/// What reading a stored backup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadSummary {
    pub raw_size: u64,
    pub stored_size: u64,
}

struct Tee<R> {
    inner: R,
    hasher: Sha256,
    size: u64,
}

/// Shares one tee between the decoders and the final drain.
struct SharedTee<R>(Rc<RefCell<Tee<R>>>);

impl<R: Read> Read for SharedTee<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut t = self.0.borrow_mut();
        let n = t.inner.read(buf)?;
        t.hasher.update(&buf[..n]);
        t.size += n as u64;
        Ok(n)
    }
}

/// Downloads, decrypts and decompresses a backup, checking sizes, both sha256 sums and (for
/// etcd) the integrity hash; writes the raw bytes to `sink` when given (which the caller
/// `Corrupt` unless what was read (`found`: bytes, sha256) is what the manifest recorded.
fn same_as_manifest(
    m: &Manifest,
    what: &str,
    found: (u64, &str),
    expected: (u64, &str),
) -> Result<(), BackupError> {
    if found == expected {
        return Ok(());
    }
    Err(BackupError::Corrupt {
        id: m.id.clone(),
        what: format!(
            "{what} differs from the manifest: {} bytes with sha256 {}, expected {} bytes with \
             sha256 {}",
            found.0, found.1, expected.0, expected.1
        ),
    })
}

/// deletes on error). Nothing is trusted until the whole object has been read.
pub async fn read_and_check(
    store: &dyn Store,
    manifest: &Manifest,
    decrypt: &Decrypt,
    sink: Option<&Path>,
) -> Result<ReadSummary, BackupError> {
    let reader = store.open(&manifest.data_key).await?;
    let bridge = tokio_util::io::SyncIoBridge::new(reader);
    let manifest = manifest.clone();
    let decrypt = decrypt.clone();
    let sink = sink.map(Path::to_path_buf);
    tokio::task::spawn_blocking(move || {
        check_blocking(bridge, &manifest, &decrypt, sink.as_deref())
    })
    .await
    .map_err(|e| BackupError::Pipeline(format!("verify task failed: {e}")))?
}

fn check_blocking<R: Read>(
    input: R,
    m: &Manifest,
    decrypt: &Decrypt,
    sink: Option<&Path>,
) -> Result<ReadSummary, BackupError> {
    let tee = Rc::new(RefCell::new(Tee {
        inner: input,
        hasher: Sha256::new(),
        size: 0,
    }));
    let etcd = m.etcd.is_some();
    // Two threads: this one reads, hashes the stored bytes, decrypts and decompresses; a second
    // hashes the raw bytes and writes them out, so the two halves overlap on two cores (the
    // drill's download+verify step in bench/backup/RESULTS.md).
    let decoded: Result<(TrailingHash, Sha256, u64), BackupError> = (|| {
        let plain = decrypt.reader(&m.encryption, SharedTee(tee.clone()))?;
        let mut zstd = zstd::stream::read::Decoder::new(plain)
            .map_err(|e| BackupError::Pipeline(e.to_string()))?;
        let out = match sink {
            Some(p) => Some(std::io::BufWriter::with_capacity(
                1 << 20,
                std::fs::File::create(p).map_err(|e| BackupError::LocalIo {
                    path: p.to_path_buf(),
                    source: e,
                })?,
            )),
            None => None,
        };
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(8);
        std::thread::scope(|scope| {
            let worker = std::thread::Builder::new()
                .name("verify-raw".into())
                .spawn_scoped(scope, move || {
                    let mut out = out;
                    let mut raw_hash = Sha256::new();
                    let mut trailing = TrailingHash::default();
                    let mut raw_size = 0u64;
                    let io = |e: std::io::Error| BackupError::LocalIo {
                        path: sink.unwrap_or(Path::new("")).to_path_buf(),
                        source: e,
                    };
                    for chunk in rx {
                        // etcd snapshots: one hasher serves the raw sha256 and the integrity
                        // hash (see `TrailingHash::whole_sha256`), one pass instead of two.
                        if etcd {
                            trailing.update(&chunk);
                        } else {
                            raw_hash.update(&chunk);
                        }
                        raw_size += chunk.len() as u64;
                        if let Some(o) = out.as_mut() {
                            o.write_all(&chunk).map_err(io)?;
                        }
                    }
                    // No fsync: the file is read back at once by the restore, which syncs what
                    // it writes; a crash in between means running the restore again anyway.
                    if let Some(mut o) = out {
                        o.flush().map_err(io)?;
                    }
                    Ok::<_, BackupError>((trailing, raw_hash, raw_size))
                })
                .map_err(|e| BackupError::Pipeline(format!("cannot start a thread: {e}")))?;
            let produced = loop {
                let mut buf = vec![0u8; 256 << 10];
                let n = match zstd.read(&mut buf) {
                    Ok(n) => n,
                    Err(e) => {
                        break Err(BackupError::Corrupt {
                            id: m.id.clone(),
                            what: format!("cannot decode the stored bytes: {e}"),
                        })
                    }
                };
                if n == 0 {
                    break Ok(());
                }
                buf.truncate(n);
                // A closed channel means the writer failed: its error is the one reported.
                if tx.send(buf).is_err() {
                    break Ok(());
                }
            };
            drop(tx);
            let written = worker
                .join()
                .map_err(|_| BackupError::Pipeline("the verifying thread panicked".into()))?;
            produced?;
            written
        })
    })();
    // Read whatever the decoders left so the stored checksum covers the whole object; a
    // corrupt object is then reported as such rather than as a decoding symptom.
    let drained = std::io::copy(&mut SharedTee(tee.clone()), &mut std::io::sink());
    let (stored_sha, stored_size) = {
        let t = tee.borrow();
        (hex::encode(t.hasher.clone().finalize()), t.size)
    };
    if let Err(e) = drained {
        return Err(BackupError::Pipeline(format!(
            "reading {}: {e}",
            m.data_key
        )));
    }
    same_as_manifest(
        m,
        "stored object",
        (stored_size, &stored_sha),
        (m.stored_size, &m.sha256_stored),
    )?;
    let (trailing, raw_hash, raw_size) = decoded?;
    let raw_sha = if etcd {
        trailing.whole_sha256()
    } else {
        hex::encode(raw_hash.finalize())
    };
    same_as_manifest(
        m,
        "decoded snapshot",
        (raw_size, &raw_sha),
        (m.raw_size, &m.sha256_raw),
    )?;
    if let Some(etcd) = &m.etcd {
        let found = trailing.check().map_err(|e| BackupError::Corrupt {
            id: m.id.clone(),
            what: e.to_string(),
        })?;
        if found != etcd.integrity_sha256 {
            return Err(BackupError::Corrupt {
                id: m.id.clone(),
                what: "etcd integrity hash differs from the manifest".into(),
            });
        }
    }
    Ok(ReadSummary {
        raw_size,
        stored_size,
    })
}

/// Encryption recorded for a pipeline's settings (for manifests).
pub fn encryption_of(settings: &WriteSettings) -> Encryption {
    settings.encrypt.describe()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_hash_any_chunking() {
        let body: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let mut snap = body.clone();
        snap.extend_from_slice(&Sha256::digest(&body));
        for chunk in [1usize, 5, 31, 32, 33, 100, 2000] {
            let mut t = TrailingHash::default();
            for c in snap.chunks(chunk) {
                t.update(c);
            }
            assert_eq!(
                t.whole_sha256(),
                hex::encode(Sha256::digest(&snap)),
                "chunk {chunk}"
            );
            assert!(t.check().is_ok(), "chunk {chunk}");
        }
        let mut t = TrailingHash::default();
        t.update(b"short");
        assert_eq!(t.whole_sha256(), hex::encode(Sha256::digest(b"short")));
        let mut bad = snap.clone();
        bad[10] ^= 1;
        let mut t = TrailingHash::default();
        t.update(&bad);
        assert!(matches!(
            t.check().unwrap_err(),
            IntegrityError::Mismatch { .. }
        ));
        let mut t = TrailingHash::default();
        t.update(b"short");
        assert_eq!(t.check().unwrap_err(), IntegrityError::Short);
    }
}
