//! SshExecutor: commands and file transfer over russh.
