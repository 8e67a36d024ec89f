//! LocalExecutor: the same Executor contract on this machine.
