//! clusterkit's shared foundation: the cluster description (`cluster.yaml`), the way commands
//! reach hosts (`Executor`: SSH or local), and parallel fan-out across hosts.
//!
//! Every other crate (installer, backup, monitor, sandbox) builds on these types and never
//! opens its own SSH connection or parses the cluster file itself.

pub mod exec;
