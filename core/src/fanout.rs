//! Run one operation on many hosts in parallel, bounded, with per-host progress and a summary.
