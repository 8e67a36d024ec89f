//! clusterkit's shared foundation: the cluster description (`cluster.yaml`), the way commands
//! reach hosts (`Executor`: SSH or local), parallel fan-out across hosts, the inventory (SSH
//! targets and the playbook context built from cluster.yaml), the playbook engine, the
//! Kubernetes API client every crate uses, and the layout of a cluster (every path, unit and
//! port clusterkit puts on a node or in the state directory).
//!
//! Every other crate (installer, backup, monitor, sandbox) builds on these types and never
//! opens its own SSH connection or parses the cluster file itself.

pub mod config;
pub mod exec;
pub mod facts;
pub mod fanout;
pub mod inventory;
pub mod kube_client;
pub mod layout;
pub mod playbook;
pub mod release;

/// An error and every cause under it on one line (`a: b: c`): what a user needs when an error
/// is shown as text (a transport error's "client error" alone says nothing). A cause whose text
/// the line already shows (errors that print their source in their own message) is not
/// repeated.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let cause = s.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
        source = s.source();
    }
    text
}
