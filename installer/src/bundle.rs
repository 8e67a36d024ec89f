//! Offline bundles: packages, binaries and images with a checksummed manifest.
