//! known_hosts parsing, verification and trust-on-first-use recording.
