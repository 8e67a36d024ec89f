//! `copy` of large files (the offline bundle's Kubernetes binaries and image tarballs, and any
//! source file of [`LARGE_FILE`] bytes or more): checked by a stamp instead of re-reading
//! hundreds of megabytes, sent compressed, prepared once for every host.
//!
//! **Check** — one remote command. For each file it wrote, clusterkit keeps a stamp on the host
//! ([`stamp_path`]: under [`STAMP_DIR`], at the file's own path) holding the content's sha256
//! and the file's size, mtime and ctime as they were right after clusterkit wrote (or last
//! verified) it. When the stamp names the wanted sha256 and the file still has that size and
//! those times, the file is as wanted and is not read. In every other case the host hashes the
//! file (`sha256sum`), except when the stamp shows the untouched file holds another content
//! (a new bundle), which is known to differ. A file changed by someone else since clusterkit
//! wrote it (its size or times no longer match its stamp) is always re-hashed and reported —
//! fixed when its content differs, noted in the task's message (and logged) when it does not.
//! `verify_all` (`install --verify-all`) hashes every file whatever its stamp says.
//!
//! The wanted sha256 comes from the bundle manifest for bundle files — a converged run reads
//! nothing of them here either, only compares their size with the manifest — and from hashing
//! the local file once per run otherwise.
//!
//! **Upload** — when the host has `zstd`, the file travels as one zstd frame and is unpacked on
//! the host (which checks the frame's checksum, then the size); otherwise as it is. The first
//! host to need a file prepares it (read once, hashed, compressed); every other host's upload
//! shares those bytes ([`Transfers`]), so the file is in memory once however many hosts take
//! it, and the hosts receive it in parallel. Before anything is sent, the hash taken while
//! preparing must equal the manifest's: a bundle file changed since `bundle build` is refused.
//!
//! Limits: the stamp trusts mtime and ctime: a change that restores both (root changing the
//! clock, or writing the disk under the filesystem) is only found by `--verify-all`. A
//! destination whose path has `.` or `..` components gets no stamp and is hashed every time.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::files::{attr_diff, change_message, chown_spec};
use super::{sh_quote, ModuleError, Outcome, TaskCx};
use crate::exec::{Encoding, SharedUpload, UploadOptions};

/// Where the stamps live on a host: the stamp of `/usr/local/bin/kubelet` is
/// `/var/lib/clusterkit/stamps/usr/local/bin/kubelet`.
pub const STAMP_DIR: &str = "/var/lib/clusterkit/stamps";

/// From this size on, a `copy` source that is not in the bundle manifest is treated as large
/// too; smaller files are compared by hashing both sides (cheaper than keeping a stamp).
pub const LARGE_FILE: u64 = 1 << 20;

/// The stamp of `dest`, or `None` when `dest` is not a plain absolute path.
pub fn stamp_path(dest: &str) -> Option<String> {
    let plain = dest.starts_with('/')
        && dest
            .split('/')
            .skip(1)
            .all(|c| !c.is_empty() && c != "." && c != "..");
    plain.then(|| format!("{STAMP_DIR}{dest}"))
}

/// Files prepared for upload, shared by every host of a run (see the module docs).
#[derive(Default)]
pub struct Transfers {
    /// Prepared content by (local file, encoding); each cell is filled once, by the first host
    /// that needs it, while the others wait for it.
    prepared: Mutex<HashMap<(PathBuf, Encoding), PreparedCell>>,
    /// sha256 of local files outside the bundle manifest, by path, size and mtime.
    digests: Mutex<HashMap<PathBuf, (u64, SystemTime, String)>>,
}

type Prepared = Result<SharedUpload, Arc<std::io::Error>>;

/// Filled once by the first host that needs the file; the others wait on it.
type PreparedCell = Arc<tokio::sync::OnceCell<Prepared>>;

impl Transfers {
    /// The content of `path`, ready to send with `encoding`: prepared once, then shared.
    pub async fn prepared(&self, path: &Path, encoding: Encoding) -> Prepared {
        let cell = self
            .prepared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((path.to_path_buf(), encoding))
            .or_default()
            .clone();
        cell.get_or_init(|| async {
            let owned = path.to_path_buf();
            tokio::task::spawn_blocking(move || SharedUpload::from_file(&owned, encoding))
                .await
                .map_err(std::io::Error::other)
                .and_then(|r| r)
                .map_err(Arc::new)
        })
        .await
        .clone()
    }

    /// Drops the prepared contents (uploads still running keep theirs): the engine calls this
    /// when a play ends, since the next play sends other files.
    pub fn release(&self) {
        self.prepared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// sha256 and size of a local file, hashed once per run (again if it changes meanwhile).
    async fn digest(&self, path: &Path) -> Result<(String, u64), ModuleError> {
        let read_err = |e| ModuleError::read(path, e);
        let meta = std::fs::metadata(path).map_err(read_err)?;
        let mtime = meta.modified().map_err(read_err)?;
        if let Some((size, time, sha)) = self
            .digests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(path)
        {
            if *size == meta.len() && *time == mtime {
                return Ok((sha.clone(), *size));
            }
        }
        let owned = path.to_path_buf();
        let sha = tokio::task::spawn_blocking(move || -> std::io::Result<String> {
            use sha2::{Digest, Sha256};
            let mut hasher = Sha256::new();
            std::io::copy(&mut std::fs::File::open(&owned)?, &mut hasher)?;
            Ok(hex::encode(hasher.finalize()))
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r)
        .map_err(read_err)?;
        self.digests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(path.to_path_buf(), (meta.len(), mtime, sha.clone()));
        Ok((sha, meta.len()))
    }
}

/// Whether `copy` of `src` (its local path) takes this module's way.
pub fn is_large(cx: &TaskCx<'_>, src: &Path) -> bool {
    cx.bundle.is_some_and(|b| b.binary_at(src).is_some())
        || std::fs::metadata(src).is_ok_and(|m| m.len() >= LARGE_FILE)
}

/// The content a destination must hold.
struct Wanted {
    sha256: String,
    size: u64,
    /// The digest is the bundle manifest's (checked again when the file is prepared).
    manifest: bool,
}

async fn wanted(cx: &TaskCx<'_>, src: &Path) -> Result<Wanted, ModuleError> {
    if let Some(file) = cx.bundle.and_then(|b| b.binary_at(src)) {
        let size = std::fs::metadata(src)
            .map_err(|e| ModuleError::read(src, e))?
            .len();
        if size != file.size {
            return Err(changed_bundle_file(src, "size"));
        }
        return Ok(Wanted {
            sha256: file.sha256.clone(),
            size,
            manifest: true,
        });
    }
    let (sha256, size) = cx.transfers.digest(src).await?;
    Ok(Wanted {
        sha256,
        size,
        manifest: false,
    })
}

fn changed_bundle_file(src: &Path, what: &str) -> ModuleError {
    ModuleError::Failed(format!(
        "{} does not match the bundle manifest (its {what} differs): the bundle changed since it \
         was built; rebuild it (`clusterkit bundle build`) or find the damage with \
         `clusterkit bundle verify`",
        src.display()
    ))
}

/// What the stamp says about the file as it is now.
#[derive(Debug, Clone, PartialEq, Eq)]
enum StampState {
    /// No stamp (clusterkit never wrote the file, or an older clusterkit did).
    Missing,
    /// Written by clusterkit with the wanted content and untouched since.
    Wanted,
    /// Written by clusterkit with another content (this sha256) and untouched since.
    Other(String),
    /// Changed since clusterkit wrote it: size or times differ from the stamp.
    Changed,
}

/// What the check command found on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Probe {
    /// The host can unpack zstd.
    zstd: bool,
    /// `None`: the file does not exist.
    file: Option<FileState>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FileState {
    mode: u32,
    owner: String,
    group: String,
    stamp: StampState,
    /// The host hashed the file (stamp not conclusive, or `verify_all`).
    sha256: Option<String>,
}

/// The check: zstd there? the file's attributes, its stamp against its size and times, and
/// its sha256 unless the stamp settles it (always with `verify_all`).
fn probe_script(dest: &str, stamp: Option<&str>, wanted: &str, verify_all: bool) -> String {
    let p = sh_quote(dest);
    let s = sh_quote(stamp.unwrap_or(""));
    format!(
        "command -v zstd >/dev/null 2>&1 && echo CK_ZSTD\n\
         p={p}; s={s}; w={wanted}\n\
         if [ ! -e \"$p\" ]; then echo CK_ABSENT; exit 0; fi\n\
         if [ ! -f \"$p\" ]; then echo CK_NOT_A_FILE; exit 0; fi\n\
         stat -L -c 'CK_ATTR %a %U %G' -- \"$p\"\n\
         now=$(stat -L -c '%s %.9Y %.9Z' -- \"$p\")\n\
         stamp=\n[ -z \"$s\" ] || stamp=$(cat -- \"$s\" 2>/dev/null) || stamp=\n\
         case \"$stamp\" in\n\
         \"\") echo CK_STAMP_MISSING ;;\n\
         \"$w $now\") echo CK_STAMP_WANTED; [ {v} = 1 ] || exit 0 ;;\n\
         *\" $now\") echo \"CK_STAMP_OTHER ${{stamp%% *}}\"; [ {v} = 1 ] || exit 0 ;;\n\
         *) echo CK_STAMP_CHANGED ;;\n\
         esac\n\
         h=$(sha256sum < \"$p\") || exit 1\n\
         echo \"CK_SHA ${{h%% *}}\"\n",
        v = u8::from(verify_all)
    )
}

fn parse_probe(dest: &str, out: &str) -> Result<Probe, ModuleError> {
    let bad = || {
        ModuleError::Failed(format!(
            "cannot read the state of {dest}: unexpected `{out}`"
        ))
    };
    let mut probe = Probe {
        zstd: false,
        file: None,
    };
    let mut attrs = None;
    let mut stamp = None;
    let mut sha256 = None;
    for line in out.lines() {
        let (tag, rest) = line.split_once(' ').unwrap_or((line, ""));
        match tag {
            "CK_ZSTD" => probe.zstd = true,
            "CK_ABSENT" => return Ok(probe),
            "CK_NOT_A_FILE" => {
                return Err(ModuleError::Failed(format!(
                    "{dest} exists and is not a regular file"
                )))
            }
            "CK_ATTR" => {
                let mut f = rest.split_whitespace();
                let mode = u32::from_str_radix(f.next().ok_or_else(bad)?, 8).map_err(|_| bad())?;
                let owner = f.next().ok_or_else(bad)?.to_string();
                let group = f.next().ok_or_else(bad)?.to_string();
                attrs = Some((mode, owner, group));
            }
            "CK_STAMP_MISSING" => stamp = Some(StampState::Missing),
            "CK_STAMP_WANTED" => stamp = Some(StampState::Wanted),
            "CK_STAMP_OTHER" => stamp = Some(StampState::Other(rest.to_string())),
            "CK_STAMP_CHANGED" => stamp = Some(StampState::Changed),
            "CK_SHA" if !rest.is_empty() => sha256 = Some(rest.to_string()),
            _ => return Err(bad()),
        }
    }
    let (mode, owner, group) = attrs.ok_or_else(bad)?;
    let stamp = stamp.ok_or_else(bad)?;
    // Without a hash, only a conclusive stamp may decide.
    if sha256.is_none() && !matches!(stamp, StampState::Wanted | StampState::Other(_)) {
        return Err(bad());
    }
    probe.file = Some(FileState {
        mode,
        owner,
        group,
        stamp,
        sha256,
    });
    Ok(probe)
}

/// Shell lines that record the stamp of `dest` (as it is now) for content `sha256`.
fn stamp_script(dest: &str, stamp: &str, sha256: &str) -> String {
    let p = sh_quote(dest);
    let s = sh_quote(stamp);
    format!(
        "(umask 022 && mkdir -p -- \"$(dirname -- {s})\") && \
         printf '%s %s\\n' {sha256} \"$(stat -L -c '%s %.9Y %.9Z' -- {p})\" > {s}.ck-new && \
         mv -f -- {s}.ck-new {s}\n"
    )
}

/// Makes `dest` hold the content of the local file `src` with the wanted mode/owner/group (see
/// the module docs). One command when nothing differs.
pub async fn ensure_file(
    cx: &TaskCx<'_>,
    src: &Path,
    dest: &str,
    mode: Option<u32>,
    owner: Option<&str>,
    group: Option<&str>,
) -> Result<Outcome, ModuleError> {
    let wanted = wanted(cx, src).await?;
    let stamp = stamp_path(dest);
    let out = cx
        .sh(&probe_script(
            dest,
            stamp.as_deref(),
            &wanted.sha256,
            cx.verify_all,
        ))
        .await?;
    let probe = parse_probe(dest, &out)?;
    let current = probe.file.as_ref();
    let content_differs = match current {
        None => true,
        Some(f) => match &f.sha256 {
            Some(h) => *h != wanted.sha256,
            None => f.stamp != StampState::Wanted,
        },
    };
    let changed_by_others = current.is_some_and(|f| f.stamp == StampState::Changed);
    // --verify-all found content that differs although the stamp vouched for it.
    let stamp_lied = current.is_some_and(|f| f.stamp == StampState::Wanted) && content_differs;
    let attrs = current
        .map(|c| attr_diff(dest, (c.mode, &c.owner, &c.group), mode, owner, group))
        .unwrap_or_default();
    let attr_changes = attrs.changes;
    let mut fix = attrs.fix;
    let why = if stamp_lied {
        " (its content differed although its size and times matched clusterkit's stamp)"
    } else if changed_by_others {
        " (changed on the host since clusterkit wrote it)"
    } else {
        ""
    };
    if !content_differs && attr_changes.is_empty() {
        let hashed = current.is_some_and(|f| f.sha256.is_some());
        let needs_stamp = current.is_some_and(|f| f.stamp != StampState::Wanted);
        if needs_stamp && !cx.check {
            if let Some(s) = &stamp {
                cx.sh(&stamp_script(dest, s, &wanted.sha256)).await?;
            }
        }
        let message = if changed_by_others {
            tracing::warn!(host = %cx.exec.host(), path = %dest,
                "changed on the host since clusterkit wrote it; re-hashed: the content is as wanted");
            format!(
                "{dest} was changed on the host since clusterkit wrote it (size or times differ \
                 from its stamp); re-hashed: the content is as wanted"
            )
        } else if hashed {
            format!("{dest} is up to date (hashed on the host)")
        } else {
            format!("{dest} is up to date (stamp)")
        };
        return Ok(Outcome::ok(message));
    }
    let message = change_message(dest, current.is_some(), content_differs, why, &attr_changes);
    if cx.check {
        let mut outcome = Outcome::changed(format!("would {message}"));
        if content_differs && !cx.no_log {
            outcome.diff = Some(format!(
                "content of {dest} differs ({} bytes wanted)\n",
                wanted.size
            ));
        }
        return Ok(outcome);
    }
    if content_differs {
        let encoding = if probe.zstd {
            Encoding::Zstd
        } else {
            Encoding::Raw
        };
        let content = cx
            .transfers
            .prepared(src, encoding)
            .await
            .map_err(|source| ModuleError::Read {
                path: src.to_path_buf(),
                source,
            })?;
        if content.sha256 != wanted.sha256 || content.size != wanted.size {
            return Err(if wanted.manifest {
                changed_bundle_file(src, "sha256")
            } else {
                ModuleError::Failed(format!(
                    "{} changed while clusterkit was using it",
                    src.display()
                ))
            });
        }
        let options = UploadOptions {
            mode: mode.or(current.map(|c| c.mode)).unwrap_or(0o644),
            owner: chown_spec(owner, group),
            create_parents: true,
        };
        cx.exec.upload_shared(&content, dest, &options).await?;
        fix.clear();
    }
    if let Some(s) = &stamp {
        fix.push_str(&stamp_script(dest, s, &wanted.sha256));
    }
    if !fix.is_empty() {
        cx.sh(&format!("set -e\n{fix}")).await?;
    }
    Ok(Outcome::changed(message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_only_for_plain_absolute_paths() {
        assert_eq!(
            stamp_path("/usr/local/bin/kubelet").as_deref(),
            Some("/var/lib/clusterkit/stamps/usr/local/bin/kubelet")
        );
        for p in [
            "bin/kubelet",
            "/usr/../etc/x",
            "/usr/./x",
            "/usr//x",
            "/usr/x/",
            "/",
        ] {
            assert_eq!(stamp_path(p), None, "{p}");
        }
    }

    #[test]
    fn probe_output_parses() {
        let p = parse_probe("/x", "CK_ZSTD\nCK_ABSENT\n").unwrap();
        assert_eq!(
            p,
            Probe {
                zstd: true,
                file: None
            }
        );
        let p = parse_probe("/x", "CK_ATTR 755 root root\nCK_STAMP_WANTED\n").unwrap();
        let f = p.file.unwrap();
        assert!(!p.zstd);
        assert_eq!(
            (f.mode, f.stamp, f.sha256),
            (0o755, StampState::Wanted, None)
        );
        let p = parse_probe("/x", "CK_ATTR 755 root root\nCK_STAMP_OTHER abc\n").unwrap();
        assert_eq!(p.file.unwrap().stamp, StampState::Other("abc".into()));
        let p = parse_probe(
            "/x",
            "CK_ZSTD\nCK_ATTR 644 a b\nCK_STAMP_CHANGED\nCK_SHA 0123\n",
        )
        .unwrap();
        let f = p.file.unwrap();
        assert_eq!(
            (f.stamp, f.sha256.as_deref(), f.owner.as_str()),
            (StampState::Changed, Some("0123"), "a")
        );
        // A changed or missing stamp without a hash is not a verdict.
        assert!(parse_probe("/x", "CK_ATTR 644 a b\nCK_STAMP_CHANGED\n").is_err());
        assert!(parse_probe("/x", "CK_ATTR 644 a b\nCK_STAMP_MISSING\n").is_err());
        assert!(parse_probe("/x", "CK_NOT_A_FILE\n").is_err());
        assert!(parse_probe("/x", "garbage\n").is_err());
    }

    /// The probe and stamp scripts against real files with `sh` (what the hosts run).
    #[test]
    fn probe_and_stamp_scripts_agree() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("bin/tool");
        let dest = dest.to_str().unwrap();
        let stamp = dir.path().join("stamps/bin/tool");
        let stamp = stamp.to_str().unwrap();
        let sh = |script: &str| {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(script)
                .output()
                .unwrap();
            assert!(out.status.success(), "{script}: {out:?}");
            String::from_utf8(out.stdout).unwrap()
        };
        let probe = |verify: bool| {
            let f = parse_probe(dest, &sh(&probe_script(dest, Some(stamp), "aa", verify)))
                .unwrap()
                .file;
            f.map(|f| (f.stamp, f.sha256.is_some()))
        };
        assert_eq!(probe(false), None);
        std::fs::create_dir_all(dir.path().join("bin")).unwrap();
        std::fs::write(dest, b"v1").unwrap();
        assert_eq!(probe(false), Some((StampState::Missing, true)));
        sh(&stamp_script(dest, stamp, "aa"));
        assert_eq!(probe(false), Some((StampState::Wanted, false)));
        assert_eq!(
            probe(true),
            Some((StampState::Wanted, true)),
            "verify_all hashes"
        );
        sh(&stamp_script(dest, stamp, "bb"));
        assert_eq!(probe(false), Some((StampState::Other("bb".into()), false)));
        // Someone else writes the file: the stamp no longer matches, the host re-hashes.
        sh(&stamp_script(dest, stamp, "aa"));
        std::fs::write(dest, b"v2").unwrap();
        assert_eq!(probe(false), Some((StampState::Changed, true)));
    }
}
