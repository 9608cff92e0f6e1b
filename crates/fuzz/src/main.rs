//! The fuzz binary.
//!
//! Built with the `libfuzzer` feature (by `cargo xtask fuzz`, with coverage instrumentation)
//! it is a libFuzzer program running the target named by `TABMESH_FUZZ_TARGET`; libFuzzer's
//! own flags follow (`-max_total_time=60 corpus/`).
//!
//! Built without it, it replays files: `tabmesh-fuzz <target> <file or directory>...`, or
//! `tabmesh-fuzz --list`, or `tabmesh-fuzz --write-seeds <dir>` (each target's seeds into
//! `<dir>/<target>/`).

#![cfg_attr(feature = "libfuzzer", no_main)]

#[cfg(feature = "libfuzzer")]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    use std::sync::OnceLock;
    static TARGET: OnceLock<&'static tabmesh_fuzz::Target> = OnceLock::new();
    let target = TARGET.get_or_init(|| {
        let name = std::env::var("TABMESH_FUZZ_TARGET").unwrap_or_default();
        tabmesh_fuzz::target(&name).unwrap_or_else(|| {
            eprintln!("TABMESH_FUZZ_TARGET={name:?} names no target; `tabmesh-fuzz --list`");
            std::process::exit(2)
        })
    });
    let _ = (target.run)(data);
});

#[cfg(not(feature = "libfuzzer"))]
fn main() -> std::process::ExitCode {
    match replay::main(std::env::args().skip(1).collect()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("tabmesh-fuzz: {message}");
            std::process::ExitCode::from(2)
        }
    }
}

#[cfg(not(feature = "libfuzzer"))]
mod replay {
    use std::path::{Path, PathBuf};

    use tabmesh_fuzz::{TARGETS, target};

    const USAGE: &str = "usage: tabmesh-fuzz <target> <file or directory>... | --list | \
                         --write-seeds <dir>";

    pub(super) fn main(args: Vec<String>) -> Result<(), String> {
        match args.first().map(String::as_str) {
            None | Some("-h" | "--help") => {
                println!("{USAGE}");
                Ok(())
            }
            Some("--list") => {
                for t in TARGETS {
                    println!("{:<20} {}", t.name, t.about);
                }
                Ok(())
            }
            Some("--write-seeds") => {
                let dir = args.get(1).ok_or(USAGE)?;
                write_seeds(Path::new(dir))
            }
            Some(name) => {
                let t = target(name)
                    .ok_or_else(|| format!("no target {name:?}; `tabmesh-fuzz --list`"))?;
                if args.len() < 2 {
                    return Err(USAGE.into());
                }
                for path in &args[1..] {
                    for file in files(Path::new(path))? {
                        let data =
                            std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
                        let outcome = (t.run)(&data);
                        println!("{}: {outcome:?}", file.display());
                    }
                }
                Ok(())
            }
        }
    }

    fn files(path: &Path) -> Result<Vec<PathBuf>, String> {
        if path.is_file() {
            return Ok(vec![path.to_owned()]);
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        Ok(files)
    }

    fn write_seeds(dir: &Path) -> Result<(), String> {
        for t in TARGETS {
            let target_dir = dir.join(t.name);
            std::fs::create_dir_all(&target_dir)
                .map_err(|e| format!("{}: {e}", target_dir.display()))?;
            for (i, seed) in (t.seeds)().iter().enumerate() {
                let file = target_dir.join(format!("seed-{i}"));
                std::fs::write(&file, seed).map_err(|e| format!("{}: {e}", file.display()))?;
            }
        }
        Ok(())
    }
}
