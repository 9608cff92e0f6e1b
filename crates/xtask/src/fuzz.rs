//! `cargo xtask fuzz`: coverage-guided fuzzing of every decoder with libFuzzer, on the stable
//! toolchain.
//!
//! The fuzz binary (`crates/fuzz`, feature `libfuzzer`) is built with LLVM's SanitizerCoverage
//! passes, which rustc runs on stable when asked with `-C passes` and `-C llvm-args`, the flags
//! `cargo fuzz` passes when no sanitizer is chosen. No AddressSanitizer (nightly only): what a
//! run finds is a panic (a broken rule or an overflow, both checked), an abort, a hang or
//! runaway memory. Each target runs in turn on its corpus; new inputs go to a scratch copy
//! under `target/fuzz/`, and into `crates/fuzz/corpus/` only with `--merge`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use clap::Args;

use crate::shell::{self, cargo};

/// The options of `cargo xtask fuzz`.
#[derive(Debug, Args)]
pub(crate) struct FuzzArgs {
    /// Targets to run (all when none is named); `--list` names them.
    targets: Vec<String>,
    /// Seconds per target.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// libFuzzer's random seed (a fresh one when not given; printed, to replay a run).
    #[arg(long)]
    seed: Option<u64>,
    /// Afterwards, add the inputs that reached new code to the kept corpus
    /// (`crates/fuzz/corpus/<target>/`, minimised by libFuzzer's merge), to commit.
    #[arg(long)]
    merge: bool,
    /// List the targets and what each one reads.
    #[arg(long)]
    list: bool,
}

/// What one target's run did.
struct Ran {
    runs: u64,
    new_inputs: u64,
    coverage: u64,
}

/// Seconds per target in `cargo xtask test` (`TABMESH_FUZZ_SECONDS` overrides).
const TEST_SECONDS: u64 = 10;

/// `cargo xtask fuzz`.
pub(crate) fn run(args: FuzzArgs) -> anyhow::Result<()> {
    if args.list {
        for t in tabmesh_fuzz::TARGETS {
            println!("{:<20} {}", t.name, t.about);
        }
        return Ok(());
    }
    let targets = chosen(&args.targets)?;
    let seed = args.seed.unwrap_or_else(fresh_seed);
    eprintln!("fuzz: seed {seed} (replay this run with --seed {seed})");
    let binary = build()?;
    let mut ran = Vec::new();
    for target in targets {
        ran.push(run_target(&binary, target, args.seconds, seed, false)?);
        if args.merge {
            merge(&binary, target)?;
        }
    }
    report(&ran);
    Ok(())
}

/// The bounded run of `cargo xtask test`: every target, a few seconds each, with fixed seeds
/// (a run finds the same inputs on every machine) and a scratch corpus started afresh.
pub(crate) fn run_for_tests() -> anyhow::Result<()> {
    let seconds = std::env::var("TABMESH_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(TEST_SECONDS);
    let binary = build()?;
    let mut ran = Vec::new();
    for (i, target) in tabmesh_fuzz::TARGETS.iter().enumerate() {
        ran.push(run_target(
            &binary,
            target.name,
            seconds,
            1 + i as u64,
            true,
        )?);
    }
    report(&ran);
    Ok(())
}

fn chosen(names: &[String]) -> anyhow::Result<Vec<&'static str>> {
    if names.is_empty() {
        return Ok(tabmesh_fuzz::TARGETS.iter().map(|t| t.name).collect());
    }
    names
        .iter()
        .map(|name| match tabmesh_fuzz::target(name) {
            Some(t) => Ok(t.name),
            None => bail!("no fuzz target {name:?}; `cargo xtask fuzz --list` names them"),
        })
        .collect()
}

fn fresh_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    u64::from(nanos % 1_000_000_007) + 1
}

fn fuzz_dir() -> PathBuf {
    shell::root().join("target/fuzz")
}

/// Builds the instrumented binary; returns its path.
fn build() -> anyhow::Result<PathBuf> {
    let host = host_triple()?;
    let flags = [
        "-Cpasses=sancov-module",
        "-Cllvm-args=-sanitizer-coverage-level=4",
        "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
        "-Cllvm-args=-sanitizer-coverage-pc-table",
        "-Cllvm-args=-sanitizer-coverage-trace-compares",
        "--cfg=fuzzing",
        "-Cdebug-assertions",
        "-Coverflow-checks",
    ];
    let mut build = cargo();
    build
        .args(["build", "-p", "tabmesh-fuzz", "--bin", "tabmesh-fuzz"])
        .args(["--features", "libfuzzer", "--profile", "fuzz"])
        // An explicit target keeps build scripts and proc macros uninstrumented.
        .args(["--target", &host])
        .arg("--target-dir")
        .arg(fuzz_dir())
        .env("RUSTFLAGS", flags.join(" "))
        // It would take precedence over RUSTFLAGS.
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    eprintln!("fuzz: building the instrumented fuzz binary (first time: a few minutes)");
    shell::run(&mut build)?;
    Ok(fuzz_dir().join(host).join("fuzz/tabmesh-fuzz"))
}

fn host_triple() -> anyhow::Result<String> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let info = shell::output(Command::new(rustc).arg("-vV")).context("cannot run rustc -vV")?;
    info.lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_owned)
        .context("rustc -vV names no host")
}

fn kept_corpus(target: &str) -> PathBuf {
    shell::root().join("crates/fuzz/corpus").join(target)
}

fn run_target(
    binary: &Path,
    target: &'static str,
    seconds: u64,
    seed: u64,
    fresh: bool,
) -> anyhow::Result<Ran> {
    let scratch = fuzz_dir().join("corpus").join(target);
    let artifacts = fuzz_dir().join("artifacts").join(target);
    if fresh {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    let _ = std::fs::remove_dir_all(&artifacts);
    for dir in [&scratch, &artifacts] {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let log = fuzz_dir().join("logs").join(format!("{target}.log"));
    std::fs::create_dir_all(log.parent().unwrap_or(Path::new(".")))?;
    let mut cmd = Command::new(binary);
    cmd.env("TABMESH_FUZZ_TARGET", target)
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-seed={seed}"))
        .args(["-timeout=10", "-rss_limit_mb=2048", "-max_len=4096"])
        .args(["-print_final_stats=1", "-close_fd_mask=1"])
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg(&scratch)
        .arg(kept_corpus(target))
        .stderr(std::fs::File::create(&log)?);
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {}", binary.display()))?;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    if !status.success() {
        return Err(found(target, &artifacts, &log, &text));
    }
    let ran = Ran {
        runs: stat(&text, "stat::number_of_executed_units:"),
        new_inputs: stat(&text, "stat::new_units_added:"),
        coverage: coverage(&text),
    };
    eprintln!(
        "fuzz {target}: {} runs in {seconds} s, {} new inputs, {} edges covered",
        ran.runs, ran.new_inputs, ran.coverage
    );
    Ok(ran)
}

/// The error for a failed run: what broke, the input, and how to replay and keep it.
fn found(target: &str, artifacts: &Path, log: &Path, text: &str) -> anyhow::Error {
    let input = std::fs::read_dir(artifacts)
        .ok()
        .and_then(|entries| entries.filter_map(|e| e.ok()).map(|e| e.path()).next());
    // A broken rule is a panic: its message (and the assertion's two sides). Otherwise what
    // libFuzzer says (a timeout, runaway memory, a signal).
    let panic: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.contains("panicked at"))
        .take(3)
        .collect();
    let why = if panic.is_empty() {
        text.lines()
            .filter(|l| l.contains("ERROR:"))
            .take(3)
            .collect::<Vec<_>>()
            .join("\n  ")
    } else {
        panic.join("\n  ")
    };
    let log = log.display();
    match input {
        Some(input) => {
            let input = input.display();
            anyhow::anyhow!(
                "fuzz target {target} broke a rule:\n  {why}\n\
                 input: {input}\n\
                 replay: cargo run -p tabmesh-fuzz -- {target} {input}\n\
                 keep it as a regression: cp {input} crates/fuzz/regressions/{target}/<what-it-shows>\n\
                 full log: {log}"
            )
        }
        None => {
            anyhow::anyhow!("fuzz target {target} failed without an input (see {log}):\n  {why}")
        }
    }
}

fn stat(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The last `cov:` figure libFuzzer printed.
fn coverage(text: &str) -> u64 {
    text.lines()
        .rev()
        .find_map(|l| {
            let rest = l.split("cov: ").nth(1)?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or(0)
}

/// Folds the scratch corpus's new coverage into the kept corpus.
fn merge(binary: &Path, target: &str) -> anyhow::Result<()> {
    let kept = kept_corpus(target);
    let before = count(&kept);
    let mut cmd = Command::new(binary);
    cmd.env("TABMESH_FUZZ_TARGET", target)
        .args(["-set_cover_merge=1", "-max_len=4096"])
        .arg(&kept)
        .arg(fuzz_dir().join("corpus").join(target))
        .stderr(std::process::Stdio::null());
    shell::run(&mut cmd)?;
    eprintln!(
        "fuzz {target}: kept corpus {before} -> {} inputs",
        count(&kept)
    );
    Ok(())
}

fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

fn report(ran: &[Ran]) {
    let runs: u64 = ran.iter().map(|r| r.runs).sum();
    let new_inputs: u64 = ran.iter().map(|r| r.new_inputs).sum();
    eprintln!(
        "fuzz: {} targets passed, {runs} runs, {new_inputs} new inputs, 0 failed",
        ran.len()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libfuzzer_figures_are_read_from_its_output() {
        let text = "#2\tINITED cov: 40 ft: 41 corp: 1/1b\n\
                    #512\tpulse  cov: 57 ft: 80 corp: 6/30b\n\
                    #9021\tDONE   cov: 61 ft: 99 corp: 9/55b lim: 4 exec/s: 902\n\
                    stat::number_of_executed_units: 9021\n\
                    stat::new_units_added: 8\n";
        assert_eq!(stat(text, "stat::number_of_executed_units:"), 9021);
        assert_eq!(stat(text, "stat::new_units_added:"), 8);
        assert_eq!(coverage(text), 61);
        assert_eq!(coverage(""), 0);
    }

    #[test]
    fn unknown_targets_are_named() {
        let error = chosen(&["gimps_mesage".into()]).unwrap_err().to_string();
        assert!(
            error.contains("gimps_mesage") && error.contains("--list"),
            "{error}"
        );
        assert_eq!(chosen(&[]).unwrap().len(), tabmesh_fuzz::TARGETS.len());
    }
}
