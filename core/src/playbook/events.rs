//! The JSON-lines event log (`--events FILE`): one event per task per host, with timing and
//! the number of remote commands the task issued, plus one `facts` event per host and play
//! and one `summary` event per host at the end.
//!
//! Fields: `time` (RFC 3339), `kind` (`task`, `handler`, `facts`, `summary`), `host`,
//! `playbook`, `play`, `task`, `module`, `status`, `duration_ms`, `commands`, `message`,
//! `check`. Tasks marked `no_log` have their message hidden.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;

use serde::Serialize;

use super::PlaybookError;

/// One line of the event log.
#[derive(Debug, Clone, Serialize)]
pub struct Event<'a> {
    pub time: String,
    pub kind: &'a str,
    pub host: &'a str,
    pub playbook: &'a str,
    pub play: &'a str,
    pub task: &'a str,
    pub module: &'a str,
    pub status: &'a str,
    pub duration_ms: u64,
    /// Remote round trips (commands, uploads, downloads) the task issued.
    pub commands: u64,
    pub message: &'a str,
    pub check: bool,
}

/// An open event log; writes are serialised across hosts.
pub struct EventLog {
    out: Mutex<BufWriter<File>>,
}

impl EventLog {
    /// Creates (truncates) the file.
    pub fn create(path: &Path) -> Result<EventLog, PlaybookError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| PlaybookError::io(parent, e))?;
        }
        let file = File::create(path).map_err(|e| PlaybookError::io(path, e))?;
        Ok(EventLog {
            out: Mutex::new(BufWriter::new(file)),
        })
    }

    /// Writes one event (errors writing the log are logged, never fatal to the run).
    pub fn write(&self, event: &Event<'_>) {
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let line = serde_json::to_string(event).unwrap_or_default();
        if let Err(e) = writeln!(out, "{line}").and_then(|_| out.flush()) {
            tracing::warn!(error = %e, "cannot write the event log");
        }
    }
}

/// Now, RFC 3339 with milliseconds.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
