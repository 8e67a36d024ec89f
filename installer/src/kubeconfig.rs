//! Kubeconfig files for the admin, components and kubelets.
