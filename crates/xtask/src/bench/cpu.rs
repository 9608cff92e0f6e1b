//! Where the CPU goes while tabs join: Chromium's processes by type (a renderer's main thread,
//! where the app runs, apart from its other threads) and the relay, sampled in the background
//! so that the CPU spent between two moments known only afterwards (the start of the loads, the
//! last tab listing every other one) can be read back.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tabmesh_e2e::unix_now_ms;

use super::{cpu_seconds, stat_cpu_seconds};

/// How often the sampler reads `/proc`: one `stat` file per process and per renderer's main
/// thread, cheap enough not to slow what it measures.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// CPU seconds so far by part, at a Unix time in milliseconds.
type Sample = (f64, BTreeMap<&'static str, f64>);

/// The background sampler of one browser and one relay; stops when dropped.
pub(super) struct CpuSampler {
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl CpuSampler {
    /// Samples Chromium (the descendants of its driver, `root`) and the relay (`relay`).
    pub(super) fn start(root: u32, relay: u32) -> Self {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let (samples, stop) = (samples.clone(), stop.clone());
            move || {
                let mut kinds = HashMap::new();
                while !stop.load(Ordering::Relaxed) {
                    let mut parts = chromium_cpu(root, &mut kinds);
                    parts.insert("relay", cpu_seconds(&[relay]));
                    let at = unix_now_ms() as f64;
                    if let Ok(mut samples) = samples.lock() {
                        samples.push((at, parts));
                    }
                    std::thread::sleep(SAMPLE_EVERY);
                }
            }
        });
        Self {
            samples,
            stop,
            thread: Some(thread),
        }
    }

    /// CPU seconds by part between the last sample at or before `from` and the first at or
    /// after `to` (Unix milliseconds), and that span in seconds; `None` without such samples.
    pub(super) fn between(&self, from: f64, to: f64) -> Option<(BTreeMap<&'static str, f64>, f64)> {
        let samples = self.samples.lock().ok()?;
        let start = samples.iter().rev().find(|(at, _)| *at <= from)?;
        let end = samples.iter().find(|(at, _)| *at >= to)?;
        // A process started in between counts from zero.
        let spent = end
            .1
            .iter()
            .map(|(part, secs)| {
                let before = start.1.get(part).copied().unwrap_or_default();
                (*part, (secs - before).max(0.0))
            })
            .collect();
        Some((spent, (end.0 - start.0) / 1e3))
    }
}

impl Drop for CpuSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// CPU seconds so far of Chromium's processes under `root`, by part: `renderer main` (the pages'
/// main threads: the app's wasm, Blink), `renderer other` (wasm compilation, WebRTC, I/O, the
/// search worker), and the other process types (`browser`, `gpu-process`, `utility`: the
/// network service among others). `kinds` caches each process's type.
fn chromium_cpu(root: u32, kinds: &mut HashMap<u32, &'static str>) -> BTreeMap<&'static str, f64> {
    let mut parts = BTreeMap::new();
    for pid in tabmesh_e2e::with_descendants(root) {
        let kind = *kinds.entry(pid).or_insert_with(|| process_kind(pid));
        let Some(total) = read_cpu(&format!("/proc/{pid}/stat")) else {
            continue;
        };
        if kind == "renderer" {
            let main = read_cpu(&format!("/proc/{pid}/task/{pid}/stat")).unwrap_or_default();
            *parts.entry("renderer main").or_default() += main;
            *parts.entry("renderer other").or_default() += (total - main).max(0.0);
        } else {
            *parts.entry(kind).or_default() += total;
        }
    }
    parts
}

fn read_cpu(path: &str) -> Option<f64> {
    stat_cpu_seconds(&std::fs::read_to_string(path).ok()?)
}

/// A Chromium process's type from its `--type=` argument (none: the browser process).
fn process_kind(pid: u32) -> &'static str {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmdline = String::from_utf8_lossy(&cmdline);
    // Chromium rewrites its child processes' command lines into one space-separated string.
    let kind = cmdline
        .split(['\0', ' '])
        .find_map(|arg| arg.strip_prefix("--type="));
    match kind {
        Some("renderer") => "renderer",
        Some("gpu-process") => "gpu-process",
        Some("utility") => "utility",
        Some("zygote") => "zygote",
        Some(_) => "other",
        None if cmdline.contains("chromedriver") => "driver",
        None => "browser",
    }
}
