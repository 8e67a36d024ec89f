//! known_hosts parsing, verification and trust-on-first-use recording.
//!
//! The file format is OpenSSH's (`sshd(8)`, "SSH_KNOWN_HOSTS FILE FORMAT"): one key per line,
//! `[marker] hostpatterns keytype base64 [comment]`. Supported here:
//! - plain names and addresses, `[host]:port` for non-22 ports, comma-separated lists,
//!   `*`/`?` wildcards and `!` negations;
//! - hashed names (`|1|salt|hmac-sha1`, as written by `ssh-keygen -H` / `HashKnownHosts yes`);
//! - the `@revoked` marker (a revoked key is refused). `@cert-authority` lines are skipped:
//!   clusterkit does not verify host certificates.
//!
//! Lines that cannot be parsed (unknown key types, garbage) are skipped like OpenSSH does, so a
//! file shared with other tools keeps working.
//!
//! Limits: recording (trust on first use) appends under a process-wide lock with a single
//! `O_APPEND` write, so parallel connections of one clusterkit process never interleave lines.
//! Two clusterkit processes appending at the same instant rely on `O_APPEND` atomicity of
//! one small write, which Linux local filesystems provide (not necessarily NFS).

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use russh::keys::ssh_key::{HashAlg, PublicKey};

/// Serialises every append to any known_hosts file made by this process.
static RECORD_LOCK: Mutex<()> = Mutex::new(());

/// Errors reading or writing a known_hosts file.
#[derive(Debug, thiserror::Error)]
pub enum KnownHostsError {
    #[error("cannot read known_hosts file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot record host key in {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot encode host key for {path}: {source}")]
    Encode {
        path: PathBuf,
        #[source]
        source: russh::keys::ssh_key::Error,
    },
}

/// What known_hosts says about the key a server offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The offered key is recorded for this host.
    Known,
    /// The host is recorded, but with different keys (their SHA256 fingerprints). Refuse.
    Mismatch { expected: Vec<String> },
    /// The offered key is marked `@revoked` for this host. Refuse.
    Revoked,
    /// Nothing is recorded for this host.
    Unknown,
}

/// The SHA256 fingerprint of a key as OpenSSH prints it (`SHA256:base64`).
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// The name a host is recorded under: `address`, or `[address]:port` when the port is not 22.
pub fn host_entry_name(address: &str, port: u16) -> String {
    if port == 22 {
        address.to_string()
    } else {
        format!("[{address}]:{port}")
    }
}

/// One usable line of a known_hosts file.
#[derive(Debug, Clone)]
struct Entry {
    revoked: bool,
    patterns: String,
    key: PublicKey,
}

/// Parses the usable lines; anything else is skipped (with a debug log naming the line).
fn parse(text: &str, path: &Path) -> Vec<Entry> {
    let mut entries = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let mut first = fields.next().unwrap_or_default();
        let mut revoked = false;
        if first.starts_with('@') {
            match first {
                "@revoked" => revoked = true,
                // Host certificates are not verified by clusterkit; such lines neither
                // allow nor deny a key.
                _ => continue,
            }
            first = match fields.next() {
                Some(f) => f,
                None => continue,
            };
        }
        let (Some(kind), Some(data)) = (fields.next(), fields.next()) else {
            tracing::debug!(path = %path.display(), line = index + 1, "known_hosts: incomplete line skipped");
            continue;
        };
        match PublicKey::from_openssh(&format!("{kind} {data}")) {
            Ok(key) => entries.push(Entry {
                revoked,
                patterns: first.to_string(),
                key,
            }),
            Err(err) => {
                tracing::debug!(path = %path.display(), line = index + 1, %err, "known_hosts: unparsable key skipped");
            }
        }
    }
    entries
}

/// `*` and `?` glob matching, as OpenSSH's `match_pattern`.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match (pattern.first(), text.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob(&pattern[1..], text) || (!text.is_empty() && glob(pattern, &text[1..]))
        }
        (Some(b'?'), Some(_)) => glob(&pattern[1..], &text[1..]),
        (Some(p), Some(t)) if p.eq_ignore_ascii_case(t) => glob(&pattern[1..], &text[1..]),
        _ => false,
    }
}

/// Does a hashed entry `|1|salt|hash` name `name`?
fn hashed_matches(entry: &str, name: &str) -> bool {
    let Some(rest) = entry.strip_prefix("|1|") else {
        return false;
    };
    let Some((salt, hash)) = rest.split_once('|') else {
        return false;
    };
    let engine = base64::engine::general_purpose::STANDARD;
    let (Ok(salt), Ok(hash)) = (engine.decode(salt), engine.decode(hash)) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(&salt) else {
        return false;
    };
    mac.update(name.as_bytes());
    mac.verify_slice(&hash).is_ok()
}

/// Does the host-pattern field name `name` (already in `[host]:port` form when needed)?
/// A matching negated pattern wins over any positive one, as in OpenSSH.
fn patterns_match(patterns: &str, name: &str) -> bool {
    if patterns.starts_with("|1|") {
        return hashed_matches(patterns, name);
    }
    let mut matched = false;
    for pattern in patterns.split(',') {
        if let Some(negated) = pattern.strip_prefix('!') {
            if glob(negated.as_bytes(), name.as_bytes()) {
                return false;
            }
        } else if glob(pattern.as_bytes(), name.as_bytes()) {
            matched = true;
        }
    }
    matched
}

/// Reads `path` (a missing file counts as empty).
fn read(path: &Path) -> Result<String, KnownHostsError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(source) => Err(KnownHostsError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn verdict(entries: &[Entry], name: &str, offered: &PublicKey) -> Verdict {
    // Fingerprints of other keys recorded for the host: of the offered key's algorithm, and
    // of any other algorithm.
    let mut same_type = Vec::new();
    let mut other_type = Vec::new();
    let mut known = false;
    for entry in entries.iter().filter(|e| patterns_match(&e.patterns, name)) {
        let same = entry.key.key_data() == offered.key_data();
        if entry.revoked {
            if same {
                return Verdict::Revoked;
            }
        } else if same {
            known = true;
        } else if entry.key.algorithm() == offered.algorithm() {
            same_type.push(fingerprint(&entry.key));
        } else {
            other_type.push(fingerprint(&entry.key));
        }
    }
    if known {
        return Verdict::Known;
    }
    // A host recorded with other keys is refused even when none is of the offered type:
    // accepting a new key type would let an attacker pick one the file says nothing about.
    let mut expected = if same_type.is_empty() {
        other_type
    } else {
        same_type
    };
    if expected.is_empty() {
        Verdict::Unknown
    } else {
        expected.dedup();
        Verdict::Mismatch { expected }
    }
}

/// Checks the key `address:port` offered against the file at `path`.
pub fn check(
    path: &Path,
    address: &str,
    port: u16,
    offered: &PublicKey,
) -> Result<Verdict, KnownHostsError> {
    let entries = parse(&read(path)?, path);
    Ok(verdict(&entries, &host_entry_name(address, port), offered))
}

/// The key algorithms recorded for a host, so the client can ask the server for one of them
/// first (as OpenSSH orders `HostKeyAlgorithms` by what known_hosts holds).
pub fn known_algorithms(
    path: &Path,
    address: &str,
    port: u16,
) -> Result<Vec<russh::keys::Algorithm>, KnownHostsError> {
    let name = host_entry_name(address, port);
    let mut algorithms = Vec::new();
    for entry in parse(&read(path)?, path) {
        if !entry.revoked && patterns_match(&entry.patterns, &name) {
            let algorithm = entry.key.algorithm();
            if !algorithms.contains(&algorithm) {
                algorithms.push(algorithm);
            }
        }
    }
    Ok(algorithms)
}

/// Records `key` for `address:port` (trust on first use) and returns the verdict that held just
/// before recording: `Unknown` when the key was appended, `Known` when a parallel connection had
/// recorded it meanwhile, `Mismatch`/`Revoked` when the file now disagrees (nothing written).
///
/// The file (and its directory) is created when missing, with mode 0600.
pub fn record(
    path: &Path,
    address: &str,
    port: u16,
    key: &PublicKey,
) -> Result<Verdict, KnownHostsError> {
    // A poisoned lock only means another thread panicked mid-append; the file itself is
    // still consistent line by line, so carry on.
    let _guard = RECORD_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let text = read(path)?;
    let name = host_entry_name(address, port);
    let current = verdict(&parse(&text, path), &name, key);
    if current != Verdict::Unknown {
        return Ok(current);
    }
    let write_err = |source| KnownHostsError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(write_err)?;
    }
    let encoded = key.to_openssh().map_err(|source| KnownHostsError::Encode {
        path: path.to_path_buf(),
        source,
    })?;
    // Drop the key's comment: known_hosts lines are `name type base64`.
    let mut parts = encoded.split_whitespace();
    let (kind, data) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let mut line = String::new();
    if !text.is_empty() && !text.ends_with('\n') {
        line.push('\n');
    }
    line.push_str(&format!("{name} {kind} {data}\n"));
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(write_err)?;
    // One write call: with O_APPEND the line lands whole at the end of the file.
    file.write_all(line.as_bytes()).map_err(write_err)?;
    file.sync_all().map_err(write_err)?;
    Ok(Verdict::Unknown)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED1: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";
    const ED2: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA6rWI3G2sz07DnfFlrouTcysQlj2P+jpNSOEWD9OJ3X";

    fn key(s: &str) -> PublicKey {
        PublicKey::from_openssh(s).unwrap()
    }

    fn write(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("known_hosts");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn plain_port_and_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            &format!("# comment\n10.0.0.1 {ED1}\n[10.0.0.2]:2222 {ED1} c\ngarbage line here\n"),
        );
        assert_eq!(
            check(&path, "10.0.0.1", 22, &key(ED1)).unwrap(),
            Verdict::Known
        );
        assert_eq!(
            check(&path, "10.0.0.2", 2222, &key(ED1)).unwrap(),
            Verdict::Known
        );
        assert_eq!(
            check(&path, "10.0.0.2", 22, &key(ED1)).unwrap(),
            Verdict::Unknown
        );
        assert_eq!(
            check(&path, "10.0.0.1", 22, &key(ED2)).unwrap(),
            Verdict::Mismatch {
                expected: vec![fingerprint(&key(ED1))]
            }
        );
        assert_eq!(
            check(&path, "10.0.0.9", 22, &key(ED1)).unwrap(),
            Verdict::Unknown
        );
    }

    #[test]
    fn hashed_entries() {
        // Built the way `ssh-keygen -H` hashes names: HMAC-SHA1 keyed by a random salt.
        let dir = tempfile::tempdir().unwrap();
        let salt = [7u8; 20];
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(&salt).unwrap();
        mac.update(b"[10.1.2.3]:2200");
        let hash = mac.finalize().into_bytes();
        let engine = base64::engine::general_purpose::STANDARD;
        let line = format!("|1|{}|{} {ED2}\n", engine.encode(salt), engine.encode(hash));
        let path = write(dir.path(), &line);
        assert_eq!(
            check(&path, "10.1.2.3", 2200, &key(ED2)).unwrap(),
            Verdict::Known
        );
        assert_eq!(
            check(&path, "10.1.2.3", 22, &key(ED2)).unwrap(),
            Verdict::Unknown
        );
        assert!(matches!(
            check(&path, "10.1.2.3", 2200, &key(ED1)).unwrap(),
            Verdict::Mismatch { .. }
        ));
    }

    #[test]
    fn wildcards_negation_and_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            &format!("10.0.0.*,!10.0.0.5 {ED1}\n@revoked 10.0.0.7 {ED1}\n"),
        );
        assert_eq!(
            check(&path, "10.0.0.4", 22, &key(ED1)).unwrap(),
            Verdict::Known
        );
        assert_eq!(
            check(&path, "10.0.0.5", 22, &key(ED1)).unwrap(),
            Verdict::Unknown
        );
        assert_eq!(
            check(&path, "10.0.0.7", 22, &key(ED1)).unwrap(),
            Verdict::Revoked
        );
    }

    #[test]
    fn record_creates_0600_and_appends_once() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/known_hosts");
        assert_eq!(
            record(&path, "h", 2222, &key(ED1)).unwrap(),
            Verdict::Unknown
        );
        assert_eq!(record(&path, "h", 2222, &key(ED1)).unwrap(), Verdict::Known);
        assert!(matches!(
            record(&path, "h", 2222, &key(ED2)).unwrap(),
            Verdict::Mismatch { .. }
        ));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.starts_with("[h]:2222 ssh-ed25519 "), "{text}");
        assert_eq!(check(&path, "h", 2222, &key(ED1)).unwrap(), Verdict::Known);
    }

    #[test]
    fn parallel_records_do_not_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        std::fs::write(&path, "no-newline-at-end ssh-ed25519 AAAA").unwrap();
        let threads: Vec<_> = (0..16)
            .map(|i| {
                let path = path.clone();
                std::thread::spawn(move || {
                    record(&path, &format!("10.9.0.{i}"), 22, &key(ED1)).unwrap()
                })
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap(), Verdict::Unknown);
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 17, "{text}");
        for i in 0..16 {
            assert_eq!(
                check(&path, &format!("10.9.0.{i}"), 22, &key(ED1)).unwrap(),
                Verdict::Known
            );
        }
    }
}
