//! Undo an installation on hosts: stop services, remove state, clean iptables/ipvs.
