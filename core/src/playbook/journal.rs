//! The per-host journal that makes `--resume` possible.
//!
//! One JSON-lines file per host under the cluster's state directory
//! (`<state>/journal/<host>.jsonl`). A task that finished `ok` or `changed` appends a line with
//! its key (playbook, play, task index and name), the handlers it notified and what it
//! registered; a handler that ran appends one too. A fresh run (no `--resume`) empties the
//! journal first; `--resume` skips tasks found in it, re-notifies handlers whose notifying task
//! ran but who did not, and restores registered variables. Check mode neither reads nor writes
//! it.
//!
//! Limits: the key includes the task's position and name, so editing a playbook between a
//! failure and `--resume` re-runs the edited tasks (which is safe: tasks are idempotent).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::PlaybookError;

/// One finished task or handler.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub key: String,
    /// `ok` or `changed`.
    pub status: String,
    /// Handler keys this task notified (only when it changed something).
    #[serde(default)]
    pub notified: Vec<String>,
    /// `register` name and value.
    #[serde(default)]
    pub registered: Option<(String, Value)>,
    /// Unix time, for operators reading the file.
    pub time: i64,
}

/// What the journal said about one host when the run started.
#[derive(Debug, Default, Clone)]
pub struct HostJournal {
    /// Task keys done in the interrupted run.
    pub done: BTreeMap<String, Entry>,
    /// Handler keys notified and not run since.
    pub pending_handlers: BTreeSet<String>,
}

/// The journal directory, shared by all hosts of a run.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    /// Appends are serialised so lines of different hosts never interleave in one file.
    lock: Mutex<()>,
    /// Loaded at open time when resuming.
    previous: BTreeMap<String, HostJournal>,
}

impl Journal {
    /// Opens `dir`; without `resume` every host's journal is emptied.
    pub fn open(dir: &Path, resume: bool) -> Result<Journal, PlaybookError> {
        fs::create_dir_all(dir).map_err(|e| PlaybookError::io(dir, e))?;
        let mut previous = BTreeMap::new();
        for entry in fs::read_dir(dir).map_err(|e| PlaybookError::io(dir, e))? {
            let entry = entry.map_err(|e| PlaybookError::io(dir, e))?;
            let path = entry.path();
            let Some(host) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".jsonl"))
                .map(str::to_string)
            else {
                continue;
            };
            if resume {
                previous.insert(host, load(&path)?);
            } else {
                fs::remove_file(&path).map_err(|e| PlaybookError::io(&path, e))?;
            }
        }
        Ok(Journal {
            dir: dir.to_path_buf(),
            lock: Mutex::new(()),
            previous,
        })
    }

    /// What the interrupted run finished on `host`.
    pub fn previous(&self, host: &str) -> HostJournal {
        self.previous.get(host).cloned().unwrap_or_default()
    }

    /// Appends one entry to the host's file.
    pub fn record(&self, host: &str, entry: &Entry) -> Result<(), PlaybookError> {
        let path = self.dir.join(format!("{host}.jsonl"));
        let line = serde_json::to_string(entry).unwrap_or_default();
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| PlaybookError::io(&path, e))?;
        writeln!(file, "{line}").map_err(|e| PlaybookError::io(&path, e))
    }
}

fn load(path: &Path) -> Result<HostJournal, PlaybookError> {
    let text = fs::read_to_string(path).map_err(|e| PlaybookError::io(path, e))?;
    let mut journal = HostJournal::default();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        // A line cut short by a crash is the last one: ignore it, the task re-runs.
        let Ok(entry) = serde_json::from_str::<Entry>(line) else {
            tracing::warn!(path = %path.display(), line = n + 1, "ignoring an unreadable journal line");
            continue;
        };
        if entry.key.contains("/handler/") {
            journal.pending_handlers.remove(&entry.key);
        }
        for h in &entry.notified {
            journal.pending_handlers.insert(h.clone());
        }
        journal.done.insert(entry.key.clone(), entry);
    }
    Ok(journal)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, notified: &[&str]) -> Entry {
        Entry {
            key: key.into(),
            status: "changed".into(),
            notified: notified.iter().map(|s| s.to_string()).collect(),
            registered: None,
            time: 0,
        }
    }

    #[test]
    fn resume_sees_done_tasks_and_pending_handlers() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path(), false).unwrap();
        j.record("n1", &entry("pb/0/0/a", &["pb/0/handler/h"]))
            .unwrap();
        j.record("n1", &entry("pb/0/1/b", &[])).unwrap();
        let r = Journal::open(dir.path(), true).unwrap();
        let p = r.previous("n1");
        assert!(p.done.contains_key("pb/0/0/a") && p.done.contains_key("pb/0/1/b"));
        assert!(p.pending_handlers.contains("pb/0/handler/h"));
        r.record("n1", &entry("pb/0/handler/h", &[])).unwrap();
        let r2 = Journal::open(dir.path(), true).unwrap();
        assert!(r2.previous("n1").pending_handlers.is_empty());
        // A fresh run forgets everything.
        let fresh = Journal::open(dir.path(), false).unwrap();
        assert!(fresh.previous("n1").done.is_empty());
        assert!(!dir.path().join("n1.jsonl").exists());
    }
}
