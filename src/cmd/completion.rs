//! `clusterkit completion SHELL`: the shell's completion script for every subcommand and flag,
//! from clap's own generator (as `kubectl completion` does), so it cannot drift from the parser.
//!
//! Use: `source <(clusterkit completion bash)`, or write it where the shell loads completions
//! (e.g. `/etc/bash_completion.d/clusterkit`, a directory on zsh's `$fpath` as `_clusterkit`,
//! `~/.config/fish/completions/clusterkit.fish`).

#[derive(clap::Args)]
pub struct Args {
    /// The shell to print the completion script for.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

impl Args {
    /// Prints the script for `cli`, the whole command tree.
    pub fn print(&self, cli: &mut clap::Command) -> anyhow::Result<()> {
        let mut script = Vec::new();
        clap_complete::generate(self.shell, cli, "clusterkit", &mut script);
        super::write_stdout(&String::from_utf8_lossy(&script))
    }
}
