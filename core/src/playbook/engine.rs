//! Running validated playbooks on hosts: parallel across hosts, sequential within one,
//! check mode, handlers, the resume journal, events and the summary.
//!
//! One [`Engine`] lives for one command invocation and may run several playbooks in a row (the
//! installer's phases): facts are gathered once per host, a host that failed in one playbook is
//! left out of the next ones, and the report adds up over all of them.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{json, Map, Value};
use tokio::sync::Semaphore;
use tracing::Instrument;

use super::events::{self, Event, EventLog};
use super::journal::{Entry, HostJournal, Journal};
use super::modules::transfer::Transfers;
use super::modules::{self, Bundle, ModuleError, Outcome, Status, TaskCx};
use super::parse::{Play, Playbook, Task};
use super::render;
use super::report::RunReport;
use super::PlaybookError;
use crate::exec::{Command, ExecError, Executor, Output, SharedUpload, UploadOptions};

/// A host a playbook runs on.
#[derive(Clone)]
pub struct HostTarget {
    pub name: String,
    pub address: String,
    /// Role names (`control-plane`, `etcd`, `worker`, …) plays select on.
    pub roles: Vec<String>,
    pub exec: Arc<dyn Executor>,
    /// Visible to tera as `host` (name, address, roles, labels, …). Must not hold secrets.
    pub vars: Value,
}

/// How a run behaves.
#[derive(Clone, Default)]
pub struct RunOptions {
    /// Change nothing; report what would change.
    pub check: bool,
    /// Skip tasks the journal says finished in the previous (failed) run.
    pub resume: bool,
    /// Hosts worked on at once.
    pub concurrency: usize,
    /// The journal directory (`<state>/journal`); no journal when `None`.
    pub journal_dir: Option<PathBuf>,
    /// JSON-lines event log.
    pub events: Option<PathBuf>,
    /// Offline bundle for the `package` module.
    pub bundle: Option<Bundle>,
    /// Print changed/failed tasks (and diffs in check mode) to stderr as they happen.
    pub progress: bool,
    /// Also print ok/skipped tasks.
    pub verbose: bool,
    /// Hash every large file on the hosts, whatever its stamp says (see
    /// [`modules::transfer`]).
    pub verify_all: bool,
}

/// Runs playbooks; see the module docs.
pub struct Engine {
    opts: RunOptions,
    /// Cluster-level tera context (`cluster`, `hosts`, `groups`, …), an object.
    context: Map<String, Value>,
    cluster_hosts: Vec<(String, String)>,
    journal: Option<Journal>,
    events: Option<EventLog>,
    started: Instant,
    state: Mutex<EngineState>,
    /// A play with `any_errors_fatal` failed: nothing more runs.
    aborted: AtomicBool,
    /// Large files prepared for upload, shared by the hosts of a play.
    transfers: Transfers,
}

#[derive(Default)]
struct EngineState {
    facts: HashMap<String, Value>,
    failed: BTreeSet<String>,
    report: RunReport,
    previous: HashMap<String, HostJournal>,
}

impl Engine {
    /// `context` is the cluster-level tera context (an object); `cluster_hosts` the
    /// `(name, address)` of every node, for `hosts_file`.
    pub fn new(
        context: Value,
        cluster_hosts: Vec<(String, String)>,
        opts: RunOptions,
    ) -> Result<Engine, PlaybookError> {
        let context = match context {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        let journal = match (&opts.journal_dir, opts.check) {
            (Some(dir), false) => Some(Journal::open(dir, opts.resume)?),
            _ => None,
        };
        let events = opts.events.as_deref().map(EventLog::create).transpose()?;
        let report = RunReport {
            check: opts.check,
            ..Default::default()
        };
        Ok(Engine {
            opts,
            context,
            cluster_hosts,
            journal,
            events,
            started: Instant::now(),
            state: Mutex::new(EngineState {
                report,
                ..Default::default()
            }),
            aborted: AtomicBool::new(false),
            transfers: Transfers::default(),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, EngineState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs every play of `playbook` on the hosts it selects among `targets`.
    pub async fn run(&self, playbook: &Playbook, targets: &[HostTarget]) {
        {
            let mut st = self.state();
            for t in targets {
                st.report.hosts.entry(t.name.clone()).or_default();
                if let Some(j) = &self.journal {
                    if self.opts.resume && !st.previous.contains_key(&t.name) {
                        let prev = j.previous(&t.name);
                        st.previous.insert(t.name.clone(), prev);
                    }
                }
            }
        }
        for (index, play) in playbook.plays.iter().enumerate() {
            if self.aborted.load(Ordering::SeqCst) {
                break;
            }
            let selected: Vec<&HostTarget> = {
                let st = self.state();
                targets
                    .iter()
                    .filter(|t| play.selects(&t.name, &t.roles) && !st.failed.contains(&t.name))
                    .collect()
            };
            if selected.is_empty() {
                continue;
            }
            if self.opts.progress {
                eprintln!(
                    "PLAY [{}] {} ({} host{})",
                    playbook.name,
                    play.name,
                    selected.len(),
                    if selected.len() == 1 { "" } else { "s" }
                );
            }
            let fatal = AtomicBool::new(false);
            let semaphore = Semaphore::new(self.opts.concurrency.max(1));
            let runs = selected.iter().map(|t| {
                let span = tracing::info_span!("host", host = %t.name, play = %play.name);
                async {
                    let _permit = semaphore.acquire().await;
                    let started = Instant::now();
                    let counting = Counting::new(t.exec.clone());
                    let result = self
                        .run_host(playbook, index, play, t, &counting, &fatal)
                        .await;
                    let mut st = self.state();
                    let r = st.report.hosts.entry(t.name.clone()).or_default();
                    r.duration_ms += started.elapsed().as_millis() as u64;
                    r.commands += counting.count();
                    if let Err(error) = result {
                        r.error = Some(crate::error_chain(&error));
                        st.failed.insert(t.name.clone());
                    }
                }
                .instrument(span)
            });
            futures::future::join_all(runs).await;
            self.transfers.release();
            if play.any_errors_fatal && fatal.load(Ordering::SeqCst) {
                self.aborted.store(true, Ordering::SeqCst);
            }
        }
    }

    /// Hands in facts gathered elsewhere (e.g. by preflight) so plays do not gather them again.
    pub fn set_facts(&self, host: &str, facts: Value) {
        self.state().facts.insert(host.to_string(), facts);
    }

    /// Marks a host failed before any play ran on it (e.g. preflight); later plays skip it.
    pub fn fail_host(&self, host: &str, error: String) {
        let mut st = self.state();
        let r = st.report.hosts.entry(host.to_string()).or_default();
        r.failed += 1;
        r.error = Some(error);
        st.failed.insert(host.to_string());
    }

    /// Whether a host failed so far.
    pub fn host_failed(&self, host: &str) -> bool {
        self.state().failed.contains(host)
    }

    /// The report so far (call after the last `run`).
    pub fn report(&self) -> RunReport {
        let mut r = self.state().report.clone();
        r.duration_ms = self.started.elapsed().as_millis() as u64;
        r
    }

    /// Writes one `summary` event per host to the event log.
    pub fn finish(&self) -> RunReport {
        let report = self.report();
        if let Some(ev) = &self.events {
            for (host, r) in &report.hosts {
                let message = serde_json::to_string(r).unwrap_or_default();
                ev.write(&Event {
                    time: events::now(),
                    kind: "summary",
                    host,
                    playbook: "",
                    play: "",
                    task: "",
                    module: "",
                    status: if r.error.is_some() { "failed" } else { "ok" },
                    duration_ms: r.duration_ms,
                    commands: r.commands,
                    message: &message,
                    check: report.check,
                });
            }
        }
        report
    }

    fn count(&self, host: &str, status: Status) {
        self.state()
            .report
            .hosts
            .entry(host.to_string())
            .or_default()
            .count(status);
    }

    /// Counts a task's (or handler's) outcome, writes its event and prints its progress line.
    fn record(
        &self,
        at: &Site<'_>,
        task: &Task,
        outcome: &Outcome,
        took: Duration,
        commands: u64,
        handler: bool,
    ) {
        self.count(at.host, outcome.status);
        if let Some(ev) = &self.events {
            ev.write(&Event {
                time: events::now(),
                kind: if handler { "handler" } else { "task" },
                host: at.host,
                playbook: &at.playbook.name,
                play: &at.play.name,
                task: &task.name,
                module: &task.module,
                status: outcome.status.as_str(),
                duration_ms: took.as_millis() as u64,
                commands,
                message: if task.no_log {
                    "<hidden: no_log>"
                } else {
                    &outcome.message
                },
                check: self.opts.check,
            });
        }
        self.progress(at.host, task, outcome, handler);
    }

    fn progress(&self, host: &str, task: &Task, outcome: &Outcome, handler: bool) {
        if !self.opts.progress {
            return;
        }
        let interesting = matches!(outcome.status, Status::Changed | Status::Failed);
        if !interesting && !self.opts.verbose {
            return;
        }
        let message = if task.no_log {
            "<hidden: no_log>"
        } else {
            &outcome.message
        };
        eprintln!(
            "  {host}: {}{}: {} — {message}",
            if handler { "handler " } else { "" },
            outcome.status.as_str(),
            task.name
        );
        if let (Some(d), false) = (&outcome.diff, task.no_log) {
            if self.opts.check || self.opts.verbose {
                for l in d.lines() {
                    eprintln!("      {l}");
                }
            }
        }
    }

    /// Runs a play's tasks then its notified handlers on one host. `Err` is what stopped it.
    async fn run_host(
        &self,
        playbook: &Playbook,
        play_index: usize,
        play: &Play,
        target: &HostTarget,
        exec: &Counting,
        fatal: &AtomicBool,
    ) -> Result<(), HostFailure> {
        let host = target.name.as_str();
        let at = Site {
            host,
            playbook,
            play,
        };
        // Facts, once per host per engine.
        let cached = self.state().facts.get(host).cloned();
        let mut facts = match cached {
            Some(f) => f,
            None if play.gather_facts => {
                let before = exec.count();
                let started = Instant::now();
                match modules::facts::gather(exec).await {
                    Ok(f) => {
                        self.state().facts.insert(host.to_string(), f.clone());
                        if let Some(ev) = &self.events {
                            ev.write(&Event {
                                time: events::now(),
                                kind: "facts",
                                host,
                                playbook: &playbook.name,
                                play: &play.name,
                                task: "gather facts",
                                module: "gather_facts",
                                status: "ok",
                                duration_ms: started.elapsed().as_millis() as u64,
                                commands: exec.count() - before,
                                message: "",
                                check: self.opts.check,
                            });
                        }
                        f
                    }
                    Err(e) => {
                        self.count(host, Status::Failed);
                        if self.opts.progress {
                            eprintln!(
                                "  {host}: failed: gather facts — {}",
                                crate::error_chain(&e)
                            );
                        }
                        fatal.store(true, Ordering::SeqCst);
                        return Err(HostFailure::Facts(e));
                    }
                }
            }
            None => json!({}),
        };
        let previous = self.state().previous.get(host).cloned().unwrap_or_default();
        // Variables: play vars rendered in order, then registered results.
        let mut vars = Map::new();
        let base = self.base_context(target, &facts);
        for (k, v) in &play.vars {
            let ctx = context_with(&base, &vars);
            let rendered = render::render_value(v, &ctx).map_err(|source| HostFailure::Var {
                play: play.name.clone(),
                var: k.clone(),
                source,
            })?;
            vars.insert(k.clone(), rendered);
        }
        let key_prefix = format!("{}/{play_index}", playbook.name);
        let handler_key = |name: &str| format!("{key_prefix}/handler/{name}");
        let mut notified: BTreeSet<String> = BTreeSet::new();
        for (task_index, task) in play.tasks.iter().enumerate() {
            if fatal.load(Ordering::SeqCst) && play.any_errors_fatal {
                self.count(host, Status::Failed);
                return Err(HostFailure::Stopped(task.name.clone()));
            }
            let key = format!("{key_prefix}/{task_index}/{}", task.name);
            // --resume: a task that finished in the previous run is skipped, its effects kept.
            if let Some(done) = previous.done.get(&key) {
                if let Some((name, value)) = &done.registered {
                    vars.insert(name.clone(), value.clone());
                }
                for h in &done.notified {
                    if previous.pending_handlers.contains(h) {
                        notified.insert(h.clone());
                    }
                }
                let outcome =
                    Outcome::skipped(format!("done in the previous run ({})", done.status));
                self.record(&at, task, &outcome, Duration::ZERO, 0, false);
                continue;
            }
            let (outcome, took, commands) = self
                .run_task(&playbook.library, target, exec, task, &base, &vars)
                .await;
            self.record(&at, task, &outcome, took, commands, false);
            if task.module == "gather_facts" && outcome.status == Status::Ok {
                facts = outcome.result.clone();
                self.state().facts.insert(host.to_string(), facts.clone());
            }
            let registered = task.register.as_ref().map(|name| {
                let mut value = outcome.result.clone();
                if let Value::Object(m) = &mut value {
                    m.insert("changed".into(), json!(outcome.status == Status::Changed));
                    m.insert("failed".into(), json!(outcome.status == Status::Failed));
                    m.insert("skipped".into(), json!(outcome.status == Status::Skipped));
                    m.insert("message".into(), json!(outcome.message));
                }
                vars.insert(name.clone(), value.clone());
                (name.clone(), value)
            });
            match outcome.status {
                Status::Failed if !task.ignore_errors => {
                    fatal.store(true, Ordering::SeqCst);
                    return Err(HostFailure::Task {
                        kind: "task",
                        name: task.name.clone(),
                        message: self.hide(task, &outcome.message),
                    });
                }
                Status::Ok | Status::Changed => {
                    let mut task_notified = Vec::new();
                    if outcome.status == Status::Changed {
                        for h in &task.notify {
                            notified.insert(handler_key(h));
                            task_notified.push(handler_key(h));
                        }
                    }
                    self.journal(host, &key, outcome.status, task_notified, registered);
                }
                _ => {}
            }
        }
        // Handlers, in the order they are defined, each at most once.
        let base = self.base_context(target, &facts);
        for handler in &play.handlers {
            let key = handler_key(&handler.name);
            if !notified.contains(&key) {
                continue;
            }
            let (outcome, took, commands) = self
                .run_task(&playbook.library, target, exec, handler, &base, &vars)
                .await;
            self.record(&at, handler, &outcome, took, commands, true);
            if outcome.status == Status::Failed && !handler.ignore_errors {
                fatal.store(true, Ordering::SeqCst);
                return Err(HostFailure::Task {
                    kind: "handler",
                    name: handler.name.clone(),
                    message: self.hide(handler, &outcome.message),
                });
            }
            if matches!(outcome.status, Status::Ok | Status::Changed) {
                self.journal(host, &key, outcome.status, Vec::new(), None);
            }
        }
        Ok(())
    }

    fn hide(&self, task: &Task, message: &str) -> String {
        if task.no_log {
            "<hidden: no_log>".into()
        } else {
            message.to_string()
        }
    }

    fn journal(
        &self,
        host: &str,
        key: &str,
        status: Status,
        notified: Vec<String>,
        registered: Option<(String, Value)>,
    ) {
        if let Some(j) = &self.journal {
            let entry = Entry {
                key: key.to_string(),
                status: status.as_str().to_string(),
                notified,
                registered,
                time: chrono::Utc::now().timestamp(),
            };
            if let Err(e) = j.record(host, &entry) {
                tracing::warn!(host, error = %e, "cannot write the journal; --resume will redo this task");
            }
        }
    }

    /// The tera context of one host without play vars.
    fn base_context(&self, target: &HostTarget, facts: &Value) -> Map<String, Value> {
        let mut ctx = self.context.clone();
        ctx.insert("host".into(), target.vars.clone());
        ctx.insert("facts".into(), facts.clone());
        ctx.insert("check_mode".into(), json!(self.opts.check));
        ctx
    }

    /// Runs one task: `when`, rendering, the module, `changed_when`/`failed_when`.
    async fn run_task(
        &self,
        library: &super::Library,
        target: &HostTarget,
        exec: &Counting,
        task: &Task,
        base: &Map<String, Value>,
        vars: &Map<String, Value>,
    ) -> (Outcome, Duration, u64) {
        let started = Instant::now();
        let before = exec.count();
        let span = tracing::info_span!("task", host = %target.name, task = %task.name);
        let outcome = self
            .task_outcome(library, exec, task, base, vars)
            .instrument(span)
            .await;
        (outcome, started.elapsed(), exec.count() - before)
    }

    async fn task_outcome(
        &self,
        library: &super::Library,
        exec: &Counting,
        task: &Task,
        base: &Map<String, Value>,
        vars: &Map<String, Value>,
    ) -> Outcome {
        let Some(spec) = &task.loop_items else {
            return self.single_outcome(library, exec, task, base, vars).await;
        };
        let items = match loop_items(spec, &context_with(base, vars)) {
            Ok(items) => items,
            Err(e) => return Outcome::new(Status::Failed, crate::error_chain(&e)),
        };
        if items.is_empty() {
            return Outcome::skipped("loop over no items");
        }
        // One module run per item; the task's verdict is the worst of them.
        let mut changes = Vec::new();
        let mut diffs = String::new();
        let mut results = Vec::new();
        let mut all_skipped = true;
        for item in items {
            let mut with_item = vars.clone();
            with_item.insert("item".into(), item.clone());
            let o = self
                .single_outcome(library, exec, task, base, &with_item)
                .await;
            results.push(o.result.clone());
            match o.status {
                Status::Failed => {
                    return Outcome::new(Status::Failed, format!("item {item}: {}", o.message))
                        .with_result(json!({ "results": results }))
                }
                Status::Changed => changes.push(o.message.clone()),
                _ => {}
            }
            all_skipped &= o.status == Status::Skipped;
            if let Some(d) = o.diff {
                diffs.push_str(&d);
            }
        }
        let status = if !changes.is_empty() {
            Status::Changed
        } else if all_skipped {
            Status::Skipped
        } else {
            Status::Ok
        };
        Outcome::new(
            status,
            if changes.is_empty() {
                "all items as wanted".to_string()
            } else {
                changes.join("; ")
            },
        )
        .with_diff((!diffs.is_empty()).then_some(diffs))
        .with_result(json!({ "results": results }))
    }

    async fn single_outcome(
        &self,
        library: &super::Library,
        exec: &Counting,
        task: &Task,
        base: &Map<String, Value>,
        vars: &Map<String, Value>,
    ) -> Outcome {
        let failed = |m: String| Outcome::new(Status::Failed, m);
        let ctx = context_with(base, vars);
        if let Some(cond) = &task.when {
            match render::eval_condition(cond, &ctx) {
                Ok(true) => {}
                Ok(false) => return Outcome::skipped(format!("when: {cond}")),
                Err(e) => return failed(crate::error_chain(&e)),
            }
        }
        let args = match render::render_value(&task.args, &ctx) {
            Ok(a) => a,
            Err(e) => return failed(format!("rendering arguments: {}", crate::error_chain(&e))),
        };
        let facts = base.get("facts").cloned().unwrap_or(Value::Null);
        let cx = TaskCx {
            exec,
            check: self.opts.check,
            run_in_check: task.run_in_check,
            facts: &facts,
            context: &ctx,
            library,
            cluster_hosts: &self.cluster_hosts,
            bundle: self.opts.bundle.as_ref(),
            no_log: task.no_log,
            verify_all: self.opts.verify_all,
            transfers: &self.transfers,
        };
        let mut outcome = match modules::run(&task.module, &args, &cx).await {
            Ok(o) => o,
            Err(ModuleError::Exec(e)) => failed(describe_exec_error(&e)),
            Err(e) => failed(crate::error_chain(&e)),
        };
        // changed_when / failed_when see the module's result as `result`.
        if task.changed_when.is_some() || task.failed_when.is_some() {
            let mut with_result = vars.clone();
            let mut result = outcome.result.clone();
            if let Value::Object(m) = &mut result {
                m.insert("status".into(), json!(outcome.status.as_str()));
            }
            with_result.insert("result".into(), result);
            let ctx = context_with(base, &with_result);
            if let Some(cond) = &task.failed_when {
                match render::eval_condition(cond, &ctx) {
                    Ok(true) if outcome.status != Status::Failed => {
                        outcome.status = Status::Failed;
                        outcome.message =
                            format!("failed_when ({cond}) is true: {}", outcome.message);
                    }
                    Ok(false) if outcome.status == Status::Failed => {
                        outcome.status = Status::Changed;
                    }
                    Err(e) => return failed(crate::error_chain(&e)),
                    _ => {}
                }
            }
            if let Some(cond) = &task.changed_when {
                if outcome.status != Status::Failed && outcome.status != Status::Skipped {
                    match render::eval_condition(cond, &ctx) {
                        Ok(c) => outcome.status = if c { Status::Changed } else { Status::Ok },
                        Err(e) => return failed(crate::error_chain(&e)),
                    }
                }
            }
        }
        outcome
    }
}

/// The items of a `loop`: a literal list (each item rendered), or a list/mapping named by
/// `"{{ path }}"` (a mapping gives `{key, value}` items, in key order).
/// Why a host stopped in a play (its line in the run report).
#[derive(Debug, thiserror::Error)]
enum HostFailure {
    #[error("gathering facts: {0}")]
    Facts(#[source] ModuleError),

    #[error("play `{play}` var `{var}`: {source}")]
    Var {
        play: String,
        var: String,
        #[source]
        source: render::RenderError,
    },

    #[error("stopped before `{0}`: another host failed and the play is any_errors_fatal")]
    Stopped(String),

    /// A task or handler failed; `message` is its outcome's (hidden under `no_log`).
    #[error("{kind} `{name}` failed: {message}")]
    Task {
        kind: &'static str,
        name: String,
        message: String,
    },
}

/// A `loop` that does not give a list of items.
#[derive(Debug, thiserror::Error)]
enum LoopError {
    #[error(transparent)]
    Render(#[from] render::RenderError),
    #[error("loop: `{0}` is not a list or a mapping")]
    NotAList(String),
    #[error("loop: `{0}` is not defined")]
    Undefined(String),
    #[error("loop must be a list")]
    NotAListSpec,
}

fn loop_items(spec: &Value, ctx: &tera::Context) -> Result<Vec<Value>, LoopError> {
    match spec {
        Value::Array(items) => Ok(items
            .iter()
            .map(|i| render::render_value(i, ctx))
            .collect::<Result<_, _>>()?),
        Value::String(s) => {
            let path = s
                .trim()
                .trim_start_matches("{{")
                .trim_end_matches("}}")
                .trim();
            match render::lookup_path(path, ctx) {
                Some(Value::Array(items)) => Ok(items),
                Some(Value::Object(map)) => Ok(map
                    .into_iter()
                    .map(|(k, v)| json!({"key": k, "value": v}))
                    .collect()),
                Some(Value::Null) => Ok(Vec::new()),
                Some(_) => Err(LoopError::NotAList(path.to_string())),
                None => Err(LoopError::Undefined(path.to_string())),
            }
        }
        _ => Err(LoopError::NotAListSpec),
    }
}

fn context_with(base: &Map<String, Value>, vars: &Map<String, Value>) -> tera::Context {
    let mut all = base.clone();
    all.insert("vars".into(), Value::Object(vars.clone()));
    for (k, v) in vars {
        all.insert(k.clone(), v.clone());
    }
    tera::Context::from_value(Value::Object(all)).unwrap_or_default()
}

/// An executor error as one line for the summary, with a hint when the host went away.
fn describe_exec_error(e: &ExecError) -> String {
    match e {
        ExecError::Connect { .. }
        | ExecError::ConnectTimeout { .. }
        | ExecError::Session { .. } => {
            format!(
                "{} (host unreachable: check that it is up and sshd runs; fix it and rerun with --resume)",
                crate::error_chain(e)
            )
        }
        other => crate::error_chain(other),
    }
}

/// Where a task runs: for events and progress.
struct Site<'a> {
    host: &'a str,
    playbook: &'a Playbook,
    play: &'a Play,
}

/// Counts remote round trips (commands, uploads, downloads) for events and the benchmark.
struct Counting {
    inner: Arc<dyn Executor>,
    count: AtomicU64,
}

impl Counting {
    fn new(inner: Arc<dyn Executor>) -> Self {
        Counting {
            inner,
            count: AtomicU64::new(0),
        }
    }
    fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl Executor for Counting {
    fn host(&self) -> &str {
        self.inner.host()
    }
    async fn run(&self, command: &Command) -> Result<Output, ExecError> {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.inner.run(command).await
    }
    async fn upload(
        &self,
        data: &[u8],
        path: &str,
        options: &UploadOptions,
    ) -> Result<(), ExecError> {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.inner.upload(data, path, options).await
    }
    async fn upload_shared(
        &self,
        content: &SharedUpload,
        path: &str,
        options: &UploadOptions,
    ) -> Result<(), ExecError> {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.inner.upload_shared(content, path, options).await
    }
    async fn download(&self, path: &str) -> Result<Vec<u8>, ExecError> {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.inner.download(path).await
    }
}
