//! The playbook engine: YAML plays of check-then-act tasks run on many hosts.
