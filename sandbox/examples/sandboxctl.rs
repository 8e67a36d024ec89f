//! Drives the sandbox library without the `clusterkit` binary (handy while the rest of the
//! workspace is being built): `sandboxctl up NAME N | status [NAME] | down NAME`.

use clusterkit_sandbox::{self as sandbox, Dirs, Sandbox, UpOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dirs = Dirs::from_env();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["up", name, n] => {
            let sb = Sandbox::up_in(&dirs, UpOptions::new(*name, n.parse()?))?;
            for n in sb.nodes() {
                eprintln!("{} {} {:?}", n.name, n.address, n.pid);
            }
            println!("{}", sb.cluster_yaml().display());
        }
        ["status", rest @ ..] => {
            let list = sandbox::status_in(&dirs, rest.first().copied())?;
            println!("{}", serde_json::to_string_pretty(&list)?);
        }
        ["down", name] => sandbox::down_in(&dirs, name)?,
        _ => return Err("usage: sandboxctl up NAME N | status [NAME] | down NAME".into()),
    }
    Ok(())
}
