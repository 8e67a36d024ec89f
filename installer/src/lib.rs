//! The installer: phases that take bare hosts to a running Kubernetes cluster over SSH, and the
//! PKI, kubeconfigs, version rules and offline bundles they rely on.

pub mod bundle;
pub mod certs;
pub mod csr;
pub mod images;
pub mod kubeconfig;
pub mod node;
pub mod phases;
pub mod pki;
pub mod readiness;
pub mod release;
pub mod reset;
pub mod token;
pub mod versions;
