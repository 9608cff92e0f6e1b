//! Running commands: echo them, fail with a clear message when they fail.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// The workspace root.
pub(crate) fn root() -> PathBuf {
    tabmesh_e2e::workspace_root()
}

/// `cargo` with the workspace root as working directory.
pub(crate) fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

/// Runs `cmd`, echoing it first; fails if it fails.
pub(crate) fn run(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("$ {}", describe(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {}", describe(cmd)))?;
    if !status.success() {
        bail!("`{}` failed ({status})", describe(cmd));
    }
    Ok(())
}

/// Runs `cmd` and returns its stdout, or `None` if it cannot run or fails.
pub(crate) fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn describe(cmd: &Command) -> String {
    let mut text = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// Finds `name` on PATH or at one of `extra` paths.
pub(crate) fn find_tool(name: &str, extra: &[PathBuf]) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(name));
    on_path
        .chain(extra.iter().cloned())
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    path.is_file()
}

/// Wraps `cmd` so that it runs in a new network namespace with only a loopback interface:
/// browsers and servers in tests can then reach nothing but 127.0.0.1.
pub(crate) fn in_loopback_namespace(cmd: &Command) -> anyhow::Result<Command> {
    if find_tool("unshare", &[]).is_none() {
        bail!("`unshare` (util-linux) is needed to isolate browser tests on loopback");
    }
    let root_user = output(Command::new("id").arg("-u")).is_some_and(|u| u.trim() == "0");
    let mut wrapped = Command::new("unshare");
    // Without root, a user namespace grants the capability to set up the network namespace.
    wrapped.arg(if root_user { "-n" } else { "-rn" });
    wrapped.args(["--", "sh", "-c", "ip link set lo up && exec \"$@\"", "sh"]);
    wrapped.arg(cmd.get_program()).args(cmd.get_args());
    if let Some(dir) = cmd.get_current_dir() {
        wrapped.current_dir(dir);
    }
    for (key, value) in cmd.get_envs() {
        match value {
            Some(v) => wrapped.env(key, v),
            None => wrapped.env_remove(key),
        };
    }
    Ok(wrapped)
}
