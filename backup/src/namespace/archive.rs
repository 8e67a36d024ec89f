//! The archive format of a namespace backup: a tar (before zstd and encryption) of one file per
//! object, readable with plain `tar` and `zstd` when the backup is not encrypted.
//!
//! - `clusterkit-namespace-backup.json` — first entry: format, server version, namespaces.
//! - `namespaces/<ns>/<group|core>/<version>/<resource>/<name>.yaml` — a namespaced object;
//! - `cluster/<group|core>/<version>/<resource>/<name>.yaml` — a cluster-scoped one
//!   (`.json` instead of `.yaml` when the backup was made with `--format json`).
//!
//! Entries are in restore order (see `plan.rs`). The sidecar index — each object's old uid
//! (for relinking ownerReferences) and whether it had finished — travels in the entry's own
//! PAX records (`CLUSTERKIT.uid`, `CLUSTERKIT.finished`), so writer and reader both stream
//! and the YAML files stay clean. Limits: object names are Kubernetes names (no `/`).

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::client::ResourceType;
use super::objects::Sidecar;

/// Name of the first entry.
pub const HEADER_ENTRY: &str = "clusterkit-namespace-backup.json";
/// Current archive format.
pub const ARCHIVE_FORMAT: u32 = 1;
/// PAX record with the object's uid in the backed-up cluster.
pub const PAX_UID: &str = "CLUSTERKIT.uid";
/// PAX record present (`true`) when a Pod or Job had finished.
pub const PAX_FINISHED: &str = "CLUSTERKIT.finished";

/// How objects are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ObjectFormat {
    /// YAML, one document per file (what `kubectl apply -f` takes).
    #[default]
    Yaml,
    /// JSON (faster to write and read).
    Json,
}

/// An object that could not be written or read in its archive format.
#[derive(Debug, thiserror::Error)]
#[error("{format}: {source}")]
pub struct CodecError {
    format: &'static str,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl ObjectFormat {
    pub fn extension(self) -> &'static str {
        match self {
            ObjectFormat::Yaml => "yaml",
            ObjectFormat::Json => "json",
        }
    }

    /// Serializes an object.
    pub fn encode(self, obj: &Value) -> Result<Vec<u8>, CodecError> {
        let codec = |source: Box<dyn std::error::Error + Send + Sync>| CodecError {
            format: self.extension(),
            source,
        };
        match self {
            ObjectFormat::Yaml => serde_saphyr::to_string(obj)
                .map(String::into_bytes)
                .map_err(|e| codec(Box::new(e))),
            ObjectFormat::Json => serde_json::to_vec_pretty(obj).map_err(|e| codec(Box::new(e))),
        }
    }

    /// Parses an object written by [`ObjectFormat::encode`].
    pub fn decode(self, data: &[u8]) -> Result<Value, CodecError> {
        let codec = |source: Box<dyn std::error::Error + Send + Sync>| CodecError {
            format: self.extension(),
            source,
        };
        match self {
            ObjectFormat::Yaml => serde_saphyr::from_slice(data).map_err(|e| codec(Box::new(e))),
            ObjectFormat::Json => serde_json::from_slice(data).map_err(|e| codec(Box::new(e))),
        }
    }

    fn from_extension(ext: &str) -> Option<ObjectFormat> {
        match ext {
            "yaml" => Some(ObjectFormat::Yaml),
            "json" => Some(ObjectFormat::Json),
            _ => None,
        }
    }
}

/// The first entry of every archive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArchiveHeader {
    pub format: u32,
    /// `gitVersion` of the API server backed up.
    pub server_version: String,
    /// Namespaces backed up (all of them for `--all-namespaces`).
    pub namespaces: Vec<String>,
    pub object_format: ObjectFormat,
    pub selector: Option<String>,
    pub include_cluster_resources: bool,
    pub include_secrets: bool,
}

/// The path of an object's entry.
pub fn entry_path(
    t: &ResourceType,
    namespace: Option<&str>,
    name: &str,
    format: ObjectFormat,
) -> String {
    let group = if t.group.is_empty() { "core" } else { &t.group };
    let tail = format!(
        "{group}/{}/{}/{name}.{}",
        t.version,
        t.resource,
        format.extension()
    );
    match namespace {
        Some(ns) if t.namespaced => format!("namespaces/{ns}/{tail}"),
        _ => format!("cluster/{tail}"),
    }
}

/// What an entry path says about its object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryPath {
    pub namespace: Option<String>,
    pub group: String,
    pub version: String,
    pub resource: String,
    pub name: String,
    pub format: ObjectFormat,
}

/// Parses an object's entry path; `None` for anything else.
pub fn parse_entry_path(path: &str) -> Option<EntryPath> {
    let parts: Vec<&str> = path.split('/').collect();
    let (namespace, rest) = match parts.as_slice() {
        ["namespaces", ns, rest @ ..] => (Some(ns.to_string()), rest),
        ["cluster", rest @ ..] => (None, rest),
        _ => return None,
    };
    let [group, version, resource, file] = rest else {
        return None;
    };
    let (name, ext) = file.rsplit_once('.')?;
    if name.is_empty() {
        return None;
    }
    Some(EntryPath {
        namespace,
        group: if *group == "core" {
            String::new()
        } else {
            group.to_string()
        },
        version: version.to_string(),
        resource: resource.to_string(),
        name: name.to_string(),
        format: ObjectFormat::from_extension(ext)?,
    })
}

/// The sidecar facts of an entry, from its PAX records.
pub fn sidecar_from_pax(
    entry: &mut tar::Entry<'_, impl std::io::Read>,
) -> std::io::Result<Sidecar> {
    let mut side = Sidecar::default();
    if let Some(exts) = entry.pax_extensions()? {
        for ext in exts {
            let ext = ext?;
            match ext.key() {
                Ok(PAX_UID) => side.uid = ext.value().ok().map(str::to_string),
                Ok(PAX_FINISHED) => side.finished = ext.value_bytes() == b"true",
                _ => {}
            }
        }
    }
    Ok(side)
}

/// Builds the tar in memory a little at a time; the caller drains it with [`TarWriter::take`].
pub struct TarWriter {
    builder: tar::Builder<Vec<u8>>,
    /// Entry times: the backup's start, so an archive says when it was taken.
    mtime: u64,
}

impl TarWriter {
    pub fn new(mtime: u64) -> TarWriter {
        TarWriter {
            builder: tar::Builder::new(Vec::with_capacity(512 << 10)),
            mtime,
        }
    }

    /// Appends one file (with the sidecar facts as PAX records when given).
    pub fn append(
        &mut self,
        path: &str,
        side: Option<&Sidecar>,
        data: &[u8],
    ) -> std::io::Result<()> {
        if let Some(side) = side {
            let mut records: Vec<(&str, &[u8])> = Vec::new();
            if let Some(uid) = &side.uid {
                records.push((PAX_UID, uid.as_bytes()));
            }
            if side.finished {
                records.push((PAX_FINISHED, b"true"));
            }
            if !records.is_empty() {
                self.builder.append_pax_extensions(records)?;
            }
        }
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(self.mtime);
        header.set_entry_type(tar::EntryType::Regular);
        self.builder.append_data(&mut header, path, data)
    }

    /// Bytes written so far and not yet taken.
    pub fn buffered(&self) -> usize {
        self.builder.get_ref().len()
    }

    /// Takes the bytes written so far.
    pub fn take(&mut self) -> Bytes {
        Bytes::from(std::mem::take(self.builder.get_mut()))
    }

    /// Writes the end-of-archive blocks and returns the last bytes.
    pub fn finish(self) -> std::io::Result<Bytes> {
        self.builder.into_inner().map(Bytes::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::io::Read;

    fn cm() -> ResourceType {
        ResourceType {
            group: String::new(),
            version: "v1".into(),
            resource: "configmaps".into(),
            kind: "ConfigMap".into(),
            namespaced: true,
        }
    }

    #[test]
    fn paths_roundtrip() {
        let p = entry_path(&cm(), Some("team-a"), "app.config", ObjectFormat::Yaml);
        assert_eq!(p, "namespaces/team-a/core/v1/configmaps/app.config.yaml");
        let e = parse_entry_path(&p).unwrap();
        assert_eq!(e.namespace.as_deref(), Some("team-a"));
        assert_eq!(
            (e.group.as_str(), e.resource.as_str(), e.name.as_str()),
            ("", "configmaps", "app.config")
        );
        let crd = ResourceType {
            group: "apiextensions.k8s.io".into(),
            version: "v1".into(),
            resource: "customresourcedefinitions".into(),
            kind: "CustomResourceDefinition".into(),
            namespaced: false,
        };
        let p = entry_path(&crd, None, "widgets.example.com", ObjectFormat::Json);
        assert_eq!(
            p,
            "cluster/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com.json"
        );
        let e = parse_entry_path(&p).unwrap();
        assert_eq!(
            (e.namespace, e.name.as_str(), e.format),
            (None, "widgets.example.com", ObjectFormat::Json)
        );
        assert!(parse_entry_path(HEADER_ENTRY).is_none());
        assert!(parse_entry_path("namespaces/a/core/v1/configmaps/x.txt").is_none());
    }

    #[test]
    fn yaml_keeps_tricky_values() {
        let obj = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "x", "annotations": {"a": "true", "b": "0777", "c": "null", "d": "1.0",
                          "e": "yes", "f": "on", "g": "", "h": " lead", "i": "multi\nline\n", "j": "- dash",
                          "k": "a: b", "l": "#hash", "m": "~", "n": "1e3", "o": "0x10", "p": "'q'", "q": "{x}"}},
            "data": {"z": "@at", "y": "*star", "x": "&amp", "w": "%p", "v": "!bang", "u": "tab\there"},
            "n": [1, -2, 3.5, true, null, 9007199254740991i64]
        });
        for f in [ObjectFormat::Yaml, ObjectFormat::Json] {
            let bytes = f.encode(&obj).unwrap();
            assert_eq!(
                f.decode(&bytes).unwrap(),
                obj,
                "{f:?}: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }

    #[test]
    fn tar_with_sidecars_and_long_names() {
        let mut w = TarWriter::new(1_700_000_000);
        w.append(HEADER_ENTRY, None, b"{}").unwrap();
        let long = "x".repeat(200);
        let path = entry_path(&cm(), Some("ns"), &long, ObjectFormat::Yaml);
        let side = Sidecar {
            uid: Some("1234-uid".into()),
            finished: true,
        };
        w.append(&path, Some(&side), b"data: 1\n").unwrap();
        w.append(
            "namespaces/ns/core/v1/configmaps/b.yaml",
            Some(&Sidecar::default()),
            b"b",
        )
        .unwrap();
        let mut bytes = w.take().to_vec();
        bytes.extend_from_slice(&w.finish().unwrap());
        let mut archive = tar::Archive::new(&bytes[..]);
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let p = entry.path().unwrap().to_string_lossy().into_owned();
            let s = sidecar_from_pax(&mut entry).unwrap();
            let mut body = String::new();
            entry.read_to_string(&mut body).unwrap();
            seen.push((p, s, body));
        }
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[1].0, path);
        assert_eq!(seen[1].1, side);
        assert_eq!(seen[1].2, "data: 1\n");
        assert_eq!(seen[2].1, Sidecar::default());
    }
}
