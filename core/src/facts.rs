//! Facts gathered from a host: OS, kernel, CPUs, memory, swap, cgroups, product_uuid.
