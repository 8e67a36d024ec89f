//! The manifest: the JSON object that makes a backup exist, and the layout of keys in a store.
//!
//! Layout (keys relative to the store root):
//! - `backups/<id>/data` — the stored bytes (zstd, optionally age-encrypted);
//! - `backups/<id>/pending.json` — written first, names the upload id so a later run can abort a
//!   crashed upload; deleted once the manifest is written;
//! - `backups/<id>/manifest.json` — written LAST: a backup without it does not exist;
//! - `backups/<id>/verify.json` — the last `verify` result;
//! - `backups/<id>/drill.json` — the last restore drill's verdict (see [`crate::drill`]);
//! - `status/<kind>.json` — the latest run per kind, for the monitor (see [`crate::status`]);
//! - `locks/<name>/…` — schedule locks (see [`crate::lock`]).
//!
//! Ids sort by time: `<kind>-<YYYYMMDDTHHMMSSZ>-<4 hex>`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Every prefix under which backups live.
pub const BACKUPS: &str = "backups/";

/// What a backup holds. Namespace backups reuse everything but the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// An etcd snapshot (`Maintenance::snapshot` bytes, with etcd's trailing sha256).
    Etcd,
    /// A tar of Kubernetes objects.
    Namespace,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Etcd => "etcd",
            Kind::Namespace => "namespace",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A backup kind name other than `etcd` and `namespace`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown backup kind {0:?} (etcd, namespace)")]
pub struct UnknownKind(pub String);

impl std::str::FromStr for Kind {
    type Err = UnknownKind;
    fn from_str(s: &str) -> Result<Kind, UnknownKind> {
        match s {
            "etcd" => Ok(Kind::Etcd),
            "namespace" => Ok(Kind::Namespace),
            other => Err(UnknownKind(other.to_string())),
        }
    }
}

/// How the stored bytes were encrypted. Lists recipients, never keys or passphrases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum Encryption {
    None,
    /// age to X25519 recipients (public keys `age1…`).
    AgeRecipients {
        recipients: Vec<String>,
    },
    /// age with a passphrase (scrypt).
    AgePassphrase,
}

impl Encryption {
    pub fn is_encrypted(&self) -> bool {
        !matches!(self, Encryption::None)
    }

    /// Short text for tables.
    pub fn summary(&self) -> String {
        match self {
            Encryption::None => "none".into(),
            Encryption::AgeRecipients { recipients } => {
                format!("age ({} recipients)", recipients.len())
            }
            Encryption::AgePassphrase => "age (passphrase)".into(),
        }
    }
}

/// etcd-specific facts about a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtcdInfo {
    /// Cluster id (hex), from the response header.
    pub cluster_id: String,
    /// Member id (hex) the snapshot was taken from.
    pub member_id: String,
    /// That member's name.
    pub member_name: String,
    /// The endpoint used.
    pub endpoint: String,
    /// The revision of the backup marker's write (see [`Marker`]), or for backups taken before
    /// markers existed the revision read just before the snapshot. The snapshot's own revision
    /// is ≥ this (and ≤ [`EtcdInfo::revision_after`]); [`EtcdInfo::key_count`] counts the keys
    /// as of exactly this revision.
    pub revision: i64,
    /// The member's revision right after the snapshot stream ended: with `revision` it brackets
    /// the snapshot's own revision (equal when nothing was written meanwhile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_after: Option<i64>,
    /// Every key in etcd at `revision` (the marker included), counted by the member the snapshot
    /// came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_count: Option<i64>,
    /// The key written into etcd just before the snapshot, so a restore can prove it holds
    /// this backup and no other.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marker: Option<Marker>,
    /// Whether the member was the leader (a follower is preferred).
    pub was_leader: bool,
    /// Number of members in the cluster when the backup was taken.
    pub member_count: usize,
    /// etcd's own integrity hash (the snapshot's trailing sha256), checked at the end of the stream.
    pub integrity_sha256: String,
    /// etcd server version.
    pub etcd_version: String,
}

/// The reserved key every etcd backup writes just before its snapshot.
pub const MARKER_KEY: &str = "/clusterkit/backup-marker";

/// What the backup marker key holds (JSON) and where it was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    /// The key ([`MARKER_KEY`]).
    pub key: String,
    /// The id of the backup that wrote it.
    pub id: String,
    /// When it was written.
    pub at: DateTime<Utc>,
    /// The revision of that write (the key's `mod_revision`).
    #[serde(default)]
    pub revision: i64,
}

impl Marker {
    /// The value written to etcd: the id and time (the revision is etcd's own to give).
    pub fn value(&self) -> String {
        serde_json::json!({ "id": self.id, "at": self.at }).to_string()
    }

    /// The backup id in a marker value read back from etcd.
    pub fn id_in(value: &[u8]) -> Option<String> {
        let v: serde_json::Value = serde_json::from_slice(value).ok()?;
        v.get("id")?.as_str().map(str::to_string)
    }
}

/// The manifest: written last; a backup is complete exactly when it exists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version of this document.
    pub format: u32,
    pub id: String,
    pub kind: Kind,
    /// Name of the cluster (from cluster.yaml, or `--cluster-name`), may be empty.
    #[serde(default)]
    pub cluster: String,
    /// Key of the stored data, relative to the store root.
    pub data_key: String,
    pub raw_size: u64,
    pub stored_size: u64,
    pub sha256_raw: String,
    pub sha256_stored: String,
    /// `zstd`.
    pub compression: String,
    pub compression_level: i32,
    pub encryption: Encryption,
    pub tool_version: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// Set for `kind: etcd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd: Option<EtcdInfo>,
    /// Kind-specific facts for other kinds (namespace backups: namespaces, counts per type,
    /// server version). Free-form so new kinds need no change here.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, serde_json::Value>,
}

/// Current [`Manifest::format`].
pub const MANIFEST_FORMAT: u32 = 1;

/// The result of the last `verify` of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyRecord {
    pub ok: bool,
    pub at: DateTime<Utc>,
    /// Why it failed (never secrets).
    #[serde(default)]
    pub error: Option<String>,
}

/// Written before the upload starts so a crash can be cleaned up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub id: String,
    pub kind: Kind,
    pub data_key: String,
    pub upload_id: String,
    pub started_at: DateTime<Utc>,
    /// host:pid of the writer, for humans.
    pub writer: String,
}

pub fn dir_of(id: &str) -> String {
    format!("{BACKUPS}{id}/")
}
pub fn manifest_key(id: &str) -> String {
    format!("{BACKUPS}{id}/manifest.json")
}
pub fn data_key(id: &str) -> String {
    format!("{BACKUPS}{id}/data")
}
pub fn pending_key(id: &str) -> String {
    format!("{BACKUPS}{id}/pending.json")
}
pub fn verify_key(id: &str) -> String {
    format!("{BACKUPS}{id}/verify.json")
}
pub fn drill_key(id: &str) -> String {
    format!("{BACKUPS}{id}/drill.json")
}

/// A new, time-sortable id.
pub fn new_id(kind: Kind, at: DateTime<Utc>) -> String {
    format!(
        "{}-{}-{:04x}",
        kind,
        at.format("%Y%m%dT%H%M%SZ"),
        rand::random::<u16>()
    )
}

/// A backup id that could address something other than one backup directory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a backup id")]
pub struct BadId(pub String);

/// Rejects ids that could address something other than one backup directory.
pub fn check_id(id: &str) -> Result<(), BadId> {
    if id.is_empty()
        || id.len() > 128
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        || id.starts_with('.')
    {
        return Err(BadId(id.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_time_and_are_checked() {
        let a = new_id(Kind::Etcd, "2024-01-01T00:00:00Z".parse().unwrap());
        let b = new_id(Kind::Etcd, "2024-01-01T00:00:01Z".parse().unwrap());
        assert!(a < b);
        assert!(a.starts_with("etcd-20240101T000000Z-"));
        assert!(check_id(&a).is_ok());
        assert!(check_id("../x").is_err());
        assert!(check_id("a/b").is_err());
    }

    #[test]
    fn encryption_serializes_without_keys() {
        let e = Encryption::AgeRecipients {
            recipients: vec!["age1abc".into()],
        };
        let j = serde_json::to_string(&e).unwrap();
        assert_eq!(j, r#"{"method":"age_recipients","recipients":["age1abc"]}"#);
    }
}
