//! clusterkit's shared foundation: the cluster description (`cluster.yaml`), the way commands
//! reach hosts (`Executor`: SSH or local), parallel fan-out across hosts, and the playbook
//! engine.
//!
//! Every other crate (installer, backup, monitor, sandbox) builds on these types and never
//! opens its own SSH connection or parses the cluster file itself.

pub mod config;
pub mod exec;
pub mod facts;
pub mod fanout;
pub mod playbook;
