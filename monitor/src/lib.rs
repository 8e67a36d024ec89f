//! clusterkit's monitoring: an exporter that knows the cluster it installed (etcd members,
//! control plane, nodes, certificates, backups), and generated configuration for Prometheus,
//! Alertmanager and Grafana whose targets, certificates and thresholds come from the same
//! cluster description.
//!
//! - [`topology`]: the cluster as the monitor sees it (core's resolved model, no copy of it);
//! - [`generate`]: `clusterkit monitor config`;
//! - [`exporter`]: `clusterkit monitor serve`;
//! - [`deploy`]: `clusterkit monitor deploy`;
//! - [`security`]: the monitoring CA's certificates and the web login every part uses;
//! - [`tls`]: PEM files into rustls server and client configurations;
//! - [`atomic`]: whole-or-nothing file writes.

pub mod atomic;
pub mod deploy;
pub mod duration;
pub mod error;
pub mod exporter;
pub mod generate;
pub mod security;
pub mod tls;
pub mod topology;

pub use error::{MonitorError, Result};
pub use topology::Topology;
