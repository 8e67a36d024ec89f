//! Content prepared once and uploaded to many hosts: [`SharedUpload`].
//!
//! A large file (a Kubernetes binary from the offline bundle) is read once, hashed and, when
//! the hosts can unpack it, compressed with zstd once; every host's upload then sends the same
//! reference-counted bytes (`Bytes`), so N hosts cost one copy in memory, not N.
//!
//! Limits: the (compressed) content is held in memory while it is shared; the caller decides
//! how long (the playbook engine drops it at the end of each play).

use std::borrow::Cow;
use std::io::{self, Read, Write};
use std::path::Path;

use bytes::Bytes;
use sha2::{Digest, Sha256};

/// zstd level for uploads: level 3 (zstd's default) packs a Kubernetes binary about 4× at
/// ~250 MB/s on one core here; higher levels cost several times the CPU for a few percent.
pub const ZSTD_LEVEL: i32 = 3;

/// How the bytes of a [`SharedUpload`] travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// As they are.
    Raw,
    /// One zstd frame carrying its content checksum, unpacked on the host by `zstd -d` (which
    /// checks it).
    Zstd,
}

impl Encoding {
    /// The host-side filter from the bytes sent on stdin to the content on stdout.
    pub fn unpack_command(self) -> &'static str {
        match self {
            Encoding::Raw => "cat",
            Encoding::Zstd => "zstd -dcq",
        }
    }
}

/// A file's content ready to upload to any number of hosts (see the module docs).
#[derive(Clone)]
pub struct SharedUpload {
    /// What travels: the content itself or its zstd frame.
    pub data: Bytes,
    pub encoding: Encoding,
    /// The content's size once unpacked; the host checks it before the file replaces the old one.
    pub size: u64,
    /// sha256 (hex) of the unpacked content.
    pub sha256: String,
}

impl std::fmt::Debug for SharedUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedUpload")
            .field("encoding", &self.encoding)
            .field("size", &self.size)
            .field("sent", &self.data.len())
            .field("sha256", &self.sha256)
            .finish()
    }
}

impl SharedUpload {
    /// Content sent as it is.
    pub fn raw(data: impl Into<Bytes>) -> Self {
        let data = data.into();
        SharedUpload {
            size: data.len() as u64,
            sha256: hex::encode(Sha256::digest(&data)),
            data,
            encoding: Encoding::Raw,
        }
    }

    /// Content compressed with zstd.
    pub fn zstd(data: &[u8]) -> io::Result<Self> {
        Self::read(data, Encoding::Zstd, data.len() as u64)
    }

    /// Reads a file once, in chunks, hashing it and (for `Zstd`) compressing it on the way: the
    /// uncompressed content is never held whole.
    pub fn from_file(path: &Path, encoding: Encoding) -> io::Result<Self> {
        let file = std::fs::File::open(path)?;
        let size = file.metadata()?.len();
        Self::read(file, encoding, size)
    }

    fn read(mut source: impl Read, encoding: Encoding, size_hint: u64) -> io::Result<Self> {
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut chunk = vec![0u8; 1 << 20];
        let data = match encoding {
            Encoding::Raw => {
                let mut out = Vec::with_capacity(size_hint as usize);
                loop {
                    let n = source.read(&mut chunk)?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&chunk[..n]);
                    out.extend_from_slice(&chunk[..n]);
                    size += n as u64;
                }
                out
            }
            Encoding::Zstd => {
                let mut encoder = zstd::stream::write::Encoder::new(
                    Vec::with_capacity(size_hint as usize / 3),
                    ZSTD_LEVEL,
                )?;
                encoder.include_checksum(true)?;
                encoder.set_pledged_src_size(Some(size_hint))?;
                loop {
                    let n = source.read(&mut chunk)?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&chunk[..n]);
                    encoder.write_all(&chunk[..n])?;
                    size += n as u64;
                }
                if size != size_hint {
                    return Err(io::Error::other(format!(
                        "the file changed while it was read ({size_hint} bytes expected, {size} read)"
                    )));
                }
                encoder.finish()?
            }
        };
        Ok(SharedUpload {
            data: Bytes::from(data),
            encoding,
            size,
            sha256: hex::encode(hasher.finalize()),
        })
    }

    /// The content itself (decompressed when needed), for executors that write it locally.
    pub fn unpacked(&self) -> io::Result<Cow<'_, [u8]>> {
        match self.encoding {
            Encoding::Raw => Ok(Cow::Borrowed(&self.data)),
            Encoding::Zstd => {
                let data = zstd::stream::decode_all(&self.data[..])?;
                if data.len() as u64 != self.size {
                    return Err(io::Error::other(format!(
                        "unpacked {} bytes, expected {}",
                        data.len(),
                        self.size
                    )));
                }
                Ok(Cow::Owned(data))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zstd_round_trip_keeps_size_and_digest() {
        let content: Vec<u8> = (0..300_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let raw = SharedUpload::raw(content.clone());
        let packed = SharedUpload::zstd(&content).unwrap();
        assert_eq!(packed.encoding, Encoding::Zstd);
        assert_eq!((packed.size, &packed.sha256), (raw.size, &raw.sha256));
        assert!(packed.data.len() < content.len() / 4, "{packed:?}");
        assert_eq!(packed.unpacked().unwrap().as_ref(), &content[..]);
        // A clone shares the bytes: uploading to many hosts holds them once.
        let clone = packed.clone();
        assert_eq!(clone.data.as_ptr(), packed.data.as_ptr());
    }

    #[test]
    fn from_file_matches_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let content = b"kubelet ".repeat(200_000);
        std::fs::write(&path, &content).unwrap();
        let f = SharedUpload::from_file(&path, Encoding::Zstd).unwrap();
        let m = SharedUpload::raw(content.clone());
        assert_eq!((f.size, f.sha256.as_str()), (m.size, m.sha256.as_str()));
        assert_eq!(f.unpacked().unwrap().as_ref(), &content[..]);
        let r = SharedUpload::from_file(&path, Encoding::Raw).unwrap();
        assert_eq!(r.data, Bytes::from(content));
    }

    #[test]
    fn corrupt_frame_is_an_error() {
        let mut packed = SharedUpload::zstd(&b"x".repeat(10_000)).unwrap();
        let mut bytes = packed.data.to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff; // the content checksum
        packed.data = Bytes::from(bytes);
        assert!(packed.unpacked().is_err());
    }
}
