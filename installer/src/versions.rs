//! Per-Kubernetes-version rules for component flags, kept in one place.
