//! `cargo xtask sim`: builds and runs the DHT simulation (`tabmesh-dht-sim`) in release mode.

use crate::shell;

/// Runs `tabmesh-dht-sim` with `args` (`--help-sim` shows its own help).
pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let args: Vec<String> = args
        .iter()
        .map(|a| {
            if a == "--help-sim" {
                "--help".to_owned()
            } else {
                a.clone()
            }
        })
        .collect();
    let mut cmd = shell::cargo();
    cmd.args(["run", "--quiet", "--release", "-p", "tabmesh-dht-sim", "--"])
        .args(&args);
    shell::run(&mut cmd)
}
