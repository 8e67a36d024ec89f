//! Day 2: expiry checks and renewal of every certificate and kubeconfig clusterkit issued.
