//! Playbook files: YAML → validated [`Playbook`], with file and line on every error.
//!
//! Validation happens here, once, before any host is contacted: the YAML shape, that each task
//! names exactly one known module, that its arguments fit the module (unknown keys, wrong
//! types where nothing is templated), that every tera string and condition compiles, that
//! templates referenced by `template` tasks exist and compile, and that every `notify` names a
//! handler of the same play.

use std::collections::BTreeSet;

use serde::Deserialize;
use serde_json::{Map, Value};
use serde_saphyr::Spanned;

use super::library::{Library, Source};
use super::modules;
use super::render;
use super::PlaybookError;

/// A whole playbook, validated.
#[derive(Debug, Clone)]
pub struct Playbook {
    /// Short name (file stem), used in journal keys and events.
    pub name: String,
    /// Where it was read from, for messages.
    pub origin: String,
    pub plays: Vec<Play>,
    /// Where its templates and files are looked up (its own directory first).
    pub library: Library,
}

/// A set of tasks for the hosts it selects.
#[derive(Debug, Clone)]
pub struct Play {
    pub name: String,
    pub line: u32,
    /// Role names, host names, or `all`.
    pub hosts: Vec<String>,
    /// Play-level variables, visible to tera as `vars.NAME` (and as `NAME`).
    pub vars: Map<String, Value>,
    /// Gather facts before the first task (default true; one remote command per host).
    pub gather_facts: bool,
    /// One failing host stops every host of the play and the rest of the playbook.
    pub any_errors_fatal: bool,
    pub tasks: Vec<Task>,
    pub handlers: Vec<Task>,
}

/// One module call.
#[derive(Debug, Clone)]
pub struct Task {
    pub name: String,
    /// Line of the task in its file (for error messages).
    pub line: u32,
    /// The module's name (`template`, `sysctl`, …).
    pub module: String,
    /// The module's arguments, normalised to an object, not yet rendered.
    pub args: Value,
    /// A tera condition; the task is skipped when it is false.
    pub when: Option<String>,
    /// Handler names notified when this task changes something.
    pub notify: Vec<String>,
    /// Store the task's result under this variable name for later tasks.
    pub register: Option<String>,
    /// Overrides the module's own changed verdict (`result.rc`, `result.stdout` available).
    pub changed_when: Option<String>,
    /// Overrides the module's own failed verdict.
    pub failed_when: Option<String>,
    /// A failure is reported but does not stop the host.
    pub ignore_errors: bool,
    /// `check_mode: false` runs the task even in check mode (only for read-only commands).
    pub run_in_check: bool,
    /// Hide arguments, output and diffs of this task (secrets).
    pub no_log: bool,
    /// Run the module once per item (`item` in tera): a YAML list, or `"{{ path }}"` naming a
    /// list or mapping in the context (a mapping yields `{key, value}` items).
    pub loop_items: Option<Value>,
}

impl Play {
    /// Whether a host with this name and these roles is in the play.
    pub fn selects(&self, host: &str, roles: &[String]) -> bool {
        self.hosts
            .iter()
            .any(|h| h == "all" || h == host || roles.iter().any(|r| r == h))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlay {
    name: String,
    hosts: HostsField,
    #[serde(default)]
    vars: Map<String, Value>,
    #[serde(default = "yes")]
    gather_facts: bool,
    #[serde(default)]
    any_errors_fatal: bool,
    #[serde(default)]
    tasks: Vec<Spanned<Map<String, Value>>>,
    #[serde(default)]
    handlers: Vec<Spanned<Map<String, Value>>>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(untagged)]
enum HostsField {
    One(String),
    Many(Vec<String>),
}

/// Task keys that are not module names.
const TASK_KEYS: &[&str] = &[
    "name",
    "when",
    "notify",
    "register",
    "changed_when",
    "failed_when",
    "ignore_errors",
    "check_mode",
    "no_log",
    "loop",
];

/// Loads a playbook by name or path from the library and validates it.
pub fn load(library: &Library, name: &str) -> Result<Playbook, PlaybookError> {
    let source = library.playbook(name)?;
    load_source(&source, library)
}

/// Parses and validates playbook text (`origin` is what errors call the file).
pub fn load_str(origin: &str, text: &str, library: &Library) -> Result<Playbook, PlaybookError> {
    load_source(
        &Source {
            origin: origin.to_string(),
            dir: None,
            text: text.to_string(),
        },
        library,
    )
}

fn load_source(source: &Source, library: &Library) -> Result<Playbook, PlaybookError> {
    let file = source.origin.clone();
    let raw: Vec<Spanned<RawPlay>> =
        serde_saphyr::from_str(&source.text).map_err(|e| yaml_error(&file, e))?;
    // A playbook may live next to its own templates/ and files/: its directory is searched
    // first.
    let library = match &source.dir {
        Some(dir) => library.with_first_dir(dir),
        None => library.clone(),
    };
    let name = std::path::Path::new(&file)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| file.clone());
    let mut plays = Vec::new();
    for play in raw {
        let line = play.referenced.line() as u32;
        let RawPlay {
            name: play_name,
            hosts,
            vars,
            gather_facts,
            any_errors_fatal,
            tasks,
            handlers,
        } = play.value;
        let hosts = match hosts {
            HostsField::One(h) => vec![h],
            HostsField::Many(h) => h,
        };
        if hosts.is_empty() {
            return Err(invalid(
                &file,
                line,
                format!("play `{play_name}` selects no hosts"),
            ));
        }
        for (k, v) in &vars {
            render::each_string(v, &mut |s| check_str(s)).map_err(|source| {
                PlaybookError::Render {
                    file: file.clone(),
                    line,
                    context: format!("play `{play_name}`, var `{k}`"),
                    source: Box::new(source),
                }
            })?;
        }
        let handlers = handlers
            .into_iter()
            .map(|t| parse_task(&file, t, &library))
            .collect::<Result<Vec<_>, _>>()?;
        let handler_names: BTreeSet<&str> = handlers.iter().map(|h| h.name.as_str()).collect();
        let tasks = tasks
            .into_iter()
            .map(|t| parse_task(&file, t, &library))
            .collect::<Result<Vec<_>, _>>()?;
        for task in &tasks {
            for n in &task.notify {
                if !handler_names.contains(n.as_str()) {
                    return Err(invalid(
                        &file,
                        task.line,
                        format!(
                            "task `{}` notifies `{n}`, but play `{play_name}` has no handler of that name",
                            task.name
                        ),
                    ));
                }
            }
        }
        plays.push(Play {
            name: play_name,
            line,
            hosts,
            vars,
            gather_facts,
            any_errors_fatal,
            tasks,
            handlers,
        });
    }
    Ok(Playbook {
        name,
        origin: file,
        plays,
        library,
    })
}

fn parse_task(
    file: &str,
    raw: Spanned<Map<String, Value>>,
    library: &Library,
) -> Result<Task, PlaybookError> {
    let line = raw.referenced.line() as u32;
    let map = raw.value;
    let err = |m: String| invalid(file, line, m);
    let module_keys: Vec<&String> = map
        .keys()
        .filter(|k| !TASK_KEYS.contains(&k.as_str()))
        .collect();
    let name = match map.get("name") {
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(err("task `name` must be a string".into())),
        None => String::new(),
    };
    let module = match module_keys.as_slice() {
        [one] => (*one).clone(),
        [] => {
            return Err(err(format!(
                "task `{name}` names no module (one of: {})",
                modules::NAMES.join(", ")
            )))
        }
        many => {
            let unknown: Vec<&str> = many
                .iter()
                .filter(|k| !modules::NAMES.contains(&k.as_str()))
                .map(|k| k.as_str())
                .collect();
            return Err(err(if unknown.is_empty() {
                format!("task `{name}` names more than one module: {many:?}")
            } else {
                format!(
                    "task `{name}`: unknown key(s) {unknown:?} (task keys: {}; modules: {})",
                    TASK_KEYS.join(", "),
                    modules::NAMES.join(", ")
                )
            }));
        }
    };
    if !modules::NAMES.contains(&module.as_str()) {
        return Err(err(format!(
            "task `{name}`: unknown module `{module}` (known modules: {})",
            modules::NAMES.join(", ")
        )));
    }
    let name = if name.is_empty() {
        module.clone()
    } else {
        name
    };
    let raw_args = map.get(&module).cloned().unwrap_or(Value::Null);
    let args_err = |source| PlaybookError::Args {
        file: file.to_string(),
        line,
        context: format!("task `{name}`: module `{module}`"),
        source: Box::new(source),
    };
    let render_err = |context: String, source| PlaybookError::Render {
        file: file.to_string(),
        line,
        context,
        source: Box::new(source),
    };
    let args = modules::normalize(&module, raw_args).map_err(args_err)?;
    render::each_string(&args, &mut |s| check_str(s))
        .map_err(|e| render_err(format!("task `{name}`"), e))?;
    modules::validate(&module, &args, library).map_err(args_err)?;

    let opt_str = |key: &str| -> Result<Option<String>, PlaybookError> {
        match map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Bool(b)) => Ok(Some(b.to_string())),
            Some(_) => Err(err(format!("task `{name}`: `{key}` must be a string"))),
        }
    };
    let opt_bool = |key: &str| -> Result<Option<bool>, PlaybookError> {
        match map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(err(format!("task `{name}`: `{key}` must be true or false"))),
        }
    };
    let when = opt_str("when")?;
    let changed_when = opt_str("changed_when")?;
    let failed_when = opt_str("failed_when")?;
    for (key, cond) in [
        ("when", &when),
        ("changed_when", &changed_when),
        ("failed_when", &failed_when),
    ] {
        if let Some(c) = cond {
            render::check_condition(c)
                .map_err(|e| render_err(format!("task `{name}`: `{key}`"), e))?;
        }
    }
    let notify = match map.get("notify") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                err(format!(
                    "task `{name}`: `notify` must be a string or a list of strings"
                ))
            })?,
        Some(_) => {
            return Err(err(format!(
                "task `{name}`: `notify` must be a string or a list of strings"
            )))
        }
    };
    let register = opt_str("register")?;
    let ignore_errors = opt_bool("ignore_errors")?.unwrap_or(false);
    let run_in_check = opt_bool("check_mode")? == Some(false);
    let no_log = opt_bool("no_log")?.unwrap_or(false);
    let loop_items = match map.get("loop") {
        None | Some(Value::Null) => None,
        Some(v @ Value::Array(_)) => Some(v.clone()),
        Some(Value::String(s)) if s.trim().starts_with("{{") && s.trim().ends_with("}}") => {
            Some(Value::String(s.clone()))
        }
        Some(_) => {
            return Err(err(format!(
                "task `{name}`: `loop` must be a list or \"{{{{ variable }}}}\" naming one"
            )))
        }
    };
    Ok(Task {
        name,
        line,
        module,
        args,
        when,
        notify,
        register,
        changed_when,
        failed_when,
        ignore_errors,
        run_in_check,
        no_log,
        loop_items,
    })
}

fn check_str(s: &str) -> Result<(), render::RenderError> {
    if render::is_template(s) {
        render::check_syntax(s).map_err(|e| match e {
            render::RenderError::Tera(source) => render::RenderError::Syntax {
                text: s.to_string(),
                source,
            },
            other => other,
        })
    } else {
        Ok(())
    }
}

fn invalid(file: &str, line: u32, message: String) -> PlaybookError {
    PlaybookError::Invalid {
        file: file.to_string(),
        line,
        message,
    }
}

fn yaml_error(file: &str, e: serde_saphyr::Error) -> PlaybookError {
    let line = e.location().map(|loc| loc.line() as u32);
    // The message names the line and column; the source snippet would only repeat the file.
    let e = match e {
        serde_saphyr::Error::WithSnippet { error, .. } => *error,
        other => other,
    };
    PlaybookError::Yaml {
        file: file.to_string(),
        line,
        source: Box::new(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lib() -> Library {
        let mut lib = Library::new();
        lib.embed("templates/ok.conf", "x = {{ host.name }}\n");
        lib.embed("templates/broken.conf", "x = {{ host.name \n");
        lib
    }

    const GOOD: &str = "\
- name: prepare
  hosts: [worker, control-plane]
  vars:
    greeting: hello
  tasks:
    - name: say
      shell: echo {{ greeting }}
      changed_when: \"false\"
    - name: conf
      template: { src: ok.conf, dest: /etc/x.conf, mode: \"0644\" }
      notify: restart x
  handlers:
    - name: restart x
      systemd: { name: x, state: restarted }
";

    #[test]
    fn parses_a_good_playbook() {
        let pb = load_str("good.yaml", GOOD, &lib()).unwrap();
        assert_eq!(pb.plays.len(), 1);
        let play = &pb.plays[0];
        assert!(play.selects("w1", &["worker".to_string()]));
        assert!(!play.selects("e1", &["etcd".to_string()]));
        assert_eq!(play.tasks[0].module, "shell");
        assert_eq!(play.tasks[0].args["cmd"], "echo {{ greeting }}");
        assert_eq!(play.tasks[1].line, 9);
        assert_eq!(play.tasks[1].notify, vec!["restart x".to_string()]);
    }

    fn error_of(text: &str) -> String {
        load_str("bad.yaml", text, &lib()).unwrap_err().to_string()
    }

    #[test]
    fn unknown_module_names_file_and_line() {
        let e = error_of(
            "- name: p\n  hosts: all\n  tasks:\n    - name: t\n      frobnicate: { a: 1 }\n",
        );
        assert!(e.starts_with("bad.yaml:4:"), "{e}");
        assert!(
            e.contains("unknown key(s) [\"frobnicate\"]") || e.contains("unknown module"),
            "{e}"
        );
    }

    #[test]
    fn bad_argument_names_file_and_line() {
        let e = error_of("- name: p\n  hosts: all\n  tasks:\n    - name: a\n      shell: 'true'\n    - name: t\n      sysctl: { nmae: x, value: 1 }\n");
        assert!(e.starts_with("bad.yaml:6:"), "{e}");
        assert!(e.contains("nmae"), "{e}");
    }

    #[test]
    fn tera_syntax_error_names_file_and_line() {
        let e = error_of(
            "- name: p\n  hosts: all\n  tasks:\n    - name: t\n      shell: echo {{ oops\n",
        );
        assert!(e.starts_with("bad.yaml:4:"), "{e}");
        let e = error_of("- name: p\n  hosts: all\n  tasks:\n    - name: t\n      template: { src: broken.conf, dest: /x }\n");
        assert!(
            e.starts_with("bad.yaml:4:") && e.contains("broken.conf"),
            "{e}"
        );
        let e = error_of("- name: p\n  hosts: all\n  tasks:\n    - name: t\n      shell: 'true'\n      when: a ==\n");
        assert!(e.starts_with("bad.yaml:4:") && e.contains("when"), "{e}");
    }

    #[test]
    fn unknown_handler_and_play_keys() {
        let e = error_of("- name: p\n  hosts: all\n  tasks:\n    - name: t\n      shell: 'true'\n      notify: nobody\n");
        assert!(e.starts_with("bad.yaml:4:") && e.contains("nobody"), "{e}");
        let e = error_of("- name: p\n  hosts: all\n  taks: []\n");
        assert!(e.starts_with("bad.yaml:"), "{e}");
        assert!(e.contains("taks"), "{e}");
    }
}
