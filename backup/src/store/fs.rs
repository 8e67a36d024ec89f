//! `file:///path`: a directory as a store. Writes are atomic (temporary file, fsync, rename,
//! fsync of the directory), so a crash leaves either the old object or the new one, never half.
//!
//! Uploads in progress live in `<root>/.uploads/<upload id>` until `complete` renames them into
//! place; `abort_upload` deletes such a leftover. Limits: one machine's filesystem; no locking
//! beyond what rename gives.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::io::AsyncWriteExt;

use super::{ObjectMeta, ObjectReader, Store, StoreError, Upload};

/// Directory holding uploads in progress (hidden from listings).
const UPLOADS: &str = ".uploads";

/// A directory used as an object store.
#[derive(Debug, Clone)]
pub struct FsStore {
    /// The URL as given, for messages.
    url: String,
    /// The directory every key is relative to.
    root: PathBuf,
    /// Only reported to callers so they cut streams consistently.
    part_size: usize,
}

impl FsStore {
    /// A store rooted at `root` (created on first write).
    pub fn new(url: &str, root: PathBuf, part_size: usize) -> FsStore {
        FsStore {
            url: url.to_string(),
            root,
            part_size,
        }
    }

    fn path_of(&self, key: &str) -> Result<PathBuf, StoreError> {
        // Keys come from our own code, but refuse anything that could escape the root.
        if key.is_empty()
            || key
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == ".." || c == UPLOADS)
        {
            return Err(StoreError::Backend {
                store: self.url.clone(),
                op: "resolve",
                key: key.to_string(),
                message: "invalid key".into(),
            });
        }
        Ok(self.root.join(key))
    }

    fn io(&self, op: &'static str, path: &Path, source: std::io::Error) -> StoreError {
        if source.kind() == std::io::ErrorKind::NotFound && (op == "read" || op == "open") {
            return StoreError::NotFound {
                store: self.url.clone(),
                key: path
                    .strip_prefix(&self.root)
                    .unwrap_or(path)
                    .display()
                    .to_string(),
            };
        }
        StoreError::Io {
            store: self.url.clone(),
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    fn uploads_dir(&self) -> PathBuf {
        self.root.join(UPLOADS)
    }
}

/// Renames `tmp` to `dest` (creating parents) and fsyncs the directory so the rename survives
/// a power loss.
async fn commit(tmp: &Path, dest: &Path) -> std::io::Result<()> {
    if let Some(parent) = dest.parent() {
        tokio::fs::create_dir_all(parent).await?;
    }
    tokio::fs::rename(tmp, dest).await?;
    if let Some(parent) = dest.parent() {
        let dir = tokio::fs::File::open(parent).await?;
        dir.sync_all().await?;
    }
    Ok(())
}

fn random_id() -> String {
    format!(
        "{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>()
    )
}

#[async_trait]
impl Store for FsStore {
    fn url(&self) -> &str {
        &self.url
    }

    fn part_size(&self) -> usize {
        self.part_size
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        let dest = self.path_of(key)?;
        let dir = self.uploads_dir();
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| self.io("create", &dir, e))?;
        let tmp = dir.join(random_id());
        let result = async {
            let mut f = tokio::fs::File::create(&tmp).await?;
            f.write_all(&data).await?;
            f.sync_all().await?;
            drop(f);
            commit(&tmp, &dest).await
        }
        .await;
        if let Err(e) = result {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(self.io("write", &dest, e));
        }
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let path = self.path_of(key)?;
        tokio::fs::read(&path)
            .await
            .map(Bytes::from)
            .map_err(|e| self.io("read", &path, e))
    }

    async fn open(&self, key: &str) -> Result<ObjectReader, StoreError> {
        let path = self.path_of(key)?;
        let f = tokio::fs::File::open(&path)
            .await
            .map_err(|e| self.io("open", &path, e))?;
        Ok(Box::pin(f))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let mut out = Vec::new();
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            let mut entries = match tokio::fs::read_dir(&dir).await {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(self.io("list", &dir, e)),
            };
            while let Some(entry) = entries
                .next_entry()
                .await
                .map_err(|e| self.io("list", &dir, e))?
            {
                let path = entry.path();
                if dir == self.root && entry.file_name() == UPLOADS {
                    continue;
                }
                let meta = match entry.metadata().await {
                    Ok(m) => m,
                    // Deleted between reading the directory and looking at the entry (a lock
                    // released, a backup pruned): it is simply no longer there to list.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(self.io("stat", &path, e)),
                };
                let rel = path
                    .strip_prefix(&self.root)
                    .unwrap_or(&path)
                    .to_string_lossy()
                    .replace(std::path::MAIN_SEPARATOR, "/");
                if meta.is_dir() {
                    // Only descend where the prefix can still match.
                    let as_dir = format!("{rel}/");
                    if as_dir.starts_with(prefix) || prefix.starts_with(&as_dir) {
                        stack.push(path);
                    }
                } else if rel.starts_with(prefix) {
                    out.push(ObjectMeta {
                        key: rel,
                        size: meta.len(),
                        last_modified: meta.modified().ok().map(DateTime::<Utc>::from),
                    });
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path_of(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.io("delete", &path, e)),
        }
        // Tidy empty parent directories up to the root, so a pruned backup leaves nothing.
        let mut dir = path.parent().map(Path::to_path_buf);
        while let Some(d) = dir {
            if d == self.root || tokio::fs::remove_dir(&d).await.is_err() {
                break;
            }
            dir = d.parent().map(Path::to_path_buf);
        }
        Ok(())
    }

    async fn begin_upload(&self, key: &str) -> Result<Box<dyn Upload>, StoreError> {
        let dest = self.path_of(key)?;
        let dir = self.uploads_dir();
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| self.io("create", &dir, e))?;
        let id = random_id();
        let tmp = dir.join(&id);
        let file = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| self.io("create", &tmp, e))?;
        Ok(Box::new(FsUpload {
            store: self.clone(),
            id,
            tmp,
            dest,
            file,
            written: 0,
        }))
    }

    async fn abort_upload(&self, _key: &str, upload_id: &str) -> Result<(), StoreError> {
        if upload_id.is_empty() || !upload_id.chars().all(|c| c.is_ascii_hexdigit()) {
            return Ok(());
        }
        let tmp = self.uploads_dir().join(upload_id);
        match tokio::fs::remove_file(&tmp).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io("delete", &tmp, e)),
        }
    }
}

/// An upload into `<root>/.uploads/<id>`, renamed into place on completion.
struct FsUpload {
    store: FsStore,
    id: String,
    tmp: PathBuf,
    dest: PathBuf,
    file: tokio::fs::File,
    written: u64,
}

#[async_trait]
impl Upload for FsUpload {
    fn upload_id(&self) -> &str {
        &self.id
    }

    async fn write_part(&mut self, data: Bytes) -> Result<(), StoreError> {
        self.file
            .write_all(&data)
            .await
            .map_err(|e| self.store.io("write", &self.tmp, e))?;
        self.written += data.len() as u64;
        Ok(())
    }

    async fn complete(mut self: Box<Self>) -> Result<u64, StoreError> {
        let r = async {
            self.file.flush().await?;
            self.file.sync_all().await?;
            commit(&self.tmp, &self.dest).await
        }
        .await;
        if let Err(e) = r {
            let _ = tokio::fs::remove_file(&self.tmp).await;
            return Err(self.store.io("write", &self.dest, e));
        }
        Ok(self.written)
    }

    async fn abort(self: Box<Self>) -> Result<(), StoreError> {
        drop(self.file);
        match tokio::fs::remove_file(&self.tmp).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.store.io("delete", &self.tmp, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn roundtrip_list_delete_upload() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsStore::new("file:///x", dir.path().to_path_buf(), 4);
        s.put("a/b/one", Bytes::from_static(b"1")).await.unwrap();
        s.put("a/two", Bytes::from_static(b"22")).await.unwrap();
        assert_eq!(&s.get("a/b/one").await.unwrap()[..], b"1");
        assert!(s.get("nope").await.unwrap_err().is_not_found());
        let keys: Vec<_> = s
            .list("a/")
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.key)
            .collect();
        assert_eq!(keys, vec!["a/b/one", "a/two"]);
        assert_eq!(s.list("a/b").await.unwrap().len(), 1);

        let mut up = s.begin_upload("big/obj").await.unwrap();
        up.write_part(Bytes::from_static(b"abcd")).await.unwrap();
        up.write_part(Bytes::from_static(b"ef")).await.unwrap();
        // Invisible until complete.
        assert!(s.list("big/").await.unwrap().is_empty());
        assert_eq!(up.complete().await.unwrap(), 6);
        let mut r = s.open("big/obj").await.unwrap();
        let mut buf = String::new();
        r.read_to_string(&mut buf).await.unwrap();
        assert_eq!(buf, "abcdef");

        let up = s.begin_upload("big/aborted").await.unwrap();
        let id = up.upload_id().to_string();
        drop(up); // a crash: the temporary file stays
        assert!(dir.path().join(".uploads").join(&id).exists());
        s.abort_upload("big/aborted", &id).await.unwrap();
        assert!(!dir.path().join(".uploads").join(&id).exists());

        s.delete("a/b/one").await.unwrap();
        s.delete("a/b/one").await.unwrap();
        assert!(!dir.path().join("a/b").exists());
        assert!(s.path_of("../x").is_err());
    }
}
