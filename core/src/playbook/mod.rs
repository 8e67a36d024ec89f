//! The playbook engine: YAML plays of check-then-act tasks run on many hosts in parallel.
//!
//! A playbook is a YAML list of plays. A play selects hosts by role (`hosts: all`,
//! `hosts: [control-plane, etcd]`), has `vars`, `tasks` and `handlers`. A task names one built-in
//! module (see [`modules`]) with arguments rendered by tera from the resolved cluster model, the
//! host's facts and the play's vars; it may have `when`, `notify`, `register`, `changed_when`,
//! `failed_when`, `ignore_errors`, `check_mode: false` and `no_log`.
//!
//! How a run goes:
//! - [`load`] parses and validates the whole playbook first — unknown module, bad argument,
//!   tera syntax error, missing template — and names the file and line; no host is touched
//!   before that succeeds.
//! - [`Engine::run`] works on every selected host at once (bounded by a semaphore), each host
//!   going through the play's tasks in order. A failing host stops only itself, unless the play
//!   says `any_errors_fatal`. Handlers notified by changed tasks run once at the end of the play.
//! - In check mode every module only looks and reports what it would change (with a diff for
//!   files); the per-host [`journal`] records finished tasks so `--resume` skips them; an
//!   optional JSON-lines event log records one event per task per host, with timing and the
//!   number of remote commands issued.
//!
//! Limits: no loops, includes or roles (keep playbooks flat; one module call may take a list,
//! e.g. `sysctl` and `kernel_module`); tasks of one host run sequentially, hosts of a play run
//! concurrently, plays run one after another (a play boundary is the only barrier).

pub mod diff;
pub mod engine;
pub mod events;
pub mod journal;
pub mod library;
pub mod modules;
pub mod parse;
pub mod render;
pub mod report;

pub use engine::{Engine, HostTarget, RunOptions};
pub use library::{Library, Source};
pub use modules::{Outcome, Status};
pub use parse::{load, load_str, Play, Playbook, Task};
pub use report::{HostReport, RunReport};

/// Errors found before any host is touched (bad playbooks, templates, journals, event logs).
#[derive(Debug, thiserror::Error)]
pub enum PlaybookError {
    /// A problem at a known place in a playbook.
    #[error("{file}:{line}: {message}")]
    Invalid {
        file: String,
        line: u32,
        message: String,
    },

    /// A task's arguments that do not fit its module, at a known place.
    #[error("{file}:{line}: {context}: {source}")]
    Args {
        file: String,
        line: u32,
        /// Which task and module (`task `x`: module `copy``).
        context: String,
        #[source]
        source: Box<modules::ArgsError>,
    },

    /// A template, condition or templated value that does not compile, at a known place.
    #[error("{file}:{line}: {context}: {source}")]
    Render {
        file: String,
        line: u32,
        /// Which play, var or task.
        context: String,
        #[source]
        source: Box<render::RenderError>,
    },

    /// The YAML itself does not parse: the file, the line when known, and the parser's
    /// message (which carries the column; the source snippet is dropped).
    #[error("{file}{}: {source}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Yaml {
        file: String,
        line: Option<u32>,
        #[source]
        source: Box<serde_saphyr::Error>,
    },

    /// A playbook or template that is neither in an override directory nor embedded.
    #[error("{kind} `{name}` not found (looked in: {searched})")]
    NotFound {
        kind: &'static str,
        name: String,
        searched: String,
    },

    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl PlaybookError {
    pub(crate) fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        PlaybookError::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }
}
