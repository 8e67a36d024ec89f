//! kubeadm-style PKI generated in-process with rcgen.
