//! clusterkit's backups: etcd snapshots and namespaces streamed to S3 or a directory, verified,
//! optionally encrypted, retained and scheduled; and restores from them (one etcd member, the
//! whole etcd cluster, or a namespace into a live cluster).
//!
//! Entry points: [`store::open_store`] opens `s3://…` or `file://…`; [`etcd::backup_etcd`]
//! takes a snapshot; [`namespace`] backs up and restores namespaces; [`catalog`] lists,
//! verifies and deletes backups (and is how other kinds stage and commit theirs);
//! [`retention::prune`]; [`restore::restore_local`] (one member) and [`restore_cluster`] (every
//! member, from the control-plane hosts); [`drill`] restores a backup into a scratch etcd (or
//! parses and counts a namespace backup) and checks it; [`schedule`] runs the daemon;
//! [`status`] holds the per-kind status and metrics the monitor reads (every backup and
//! restore entry point records its outcome there; prunes and backups hold the store's lock).

pub mod catalog;
pub mod clock;
pub mod crypto;
pub mod drill;
pub mod error;
pub mod etcd;
pub mod lock;
pub mod manifest;
pub mod namespace;
pub mod pipeline;
pub mod restore;
pub mod restore_cluster;
pub mod retention;
pub mod schedule;
pub mod settings;
pub mod status;
pub mod store;
pub mod timer;

pub use error::BackupError;

/// Re-exported so the binary can build durations and times without its own chrono dependency.
pub use chrono;
