//! cluster.yaml: raw file types, validation, and the resolved model every phase uses.
