//! Replays the kept inputs through every target on each `cargo test`: the corpora that
//! libFuzzer grew (`corpus/<target>/`) and the inputs that once broke a rule
//! (`regressions/<target>/`, each with a test beside its fix).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use tabmesh_fuzz::{Outcome, TARGETS};

fn kept(dir: &str, target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir).join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    files.retain(|p| p.is_file() && !p.ends_with("README.md"));
    files.sort();
    files
}

fn subdirectories(dir: &str) -> BTreeSet<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn every_seed_is_accepted_by_its_target() {
    for target in TARGETS {
        let seeds = (target.seeds)();
        assert!(!seeds.is_empty(), "{} has no seeds", target.name);
        for (i, seed) in seeds.iter().enumerate() {
            assert_eq!(
                (target.run)(seed),
                Outcome::Accepted,
                "seed {i} of {} is refused: {}",
                target.name,
                String::from_utf8_lossy(seed)
            );
        }
    }
}

#[test]
fn every_target_has_a_corpus_and_every_corpus_a_target() {
    let names: BTreeSet<String> = TARGETS.iter().map(|t| t.name.to_owned()).collect();
    assert_eq!(names.len(), TARGETS.len(), "target names are unique");
    assert_eq!(
        subdirectories("corpus"),
        names,
        "corpus/ has one directory per target"
    );
    for dir in subdirectories("regressions") {
        assert!(names.contains(&dir), "regressions/{dir} names no target");
    }
    for target in TARGETS {
        assert!(
            !kept("corpus", target.name).is_empty(),
            "corpus/{} is empty: `cargo run -p tabmesh-fuzz -- --write-seeds crates/fuzz/corpus`",
            target.name
        );
    }
}

#[test]
fn the_kept_inputs_break_no_rule() {
    let mut replayed = 0;
    for target in TARGETS {
        for file in kept("corpus", target.name)
            .into_iter()
            .chain(kept("regressions", target.name))
        {
            let data = std::fs::read(&file).expect("a kept input is readable");
            let result = std::panic::catch_unwind(|| (target.run)(&data));
            assert!(
                result.is_ok(),
                "{} broke a rule of {}; replay it with `cargo run -p tabmesh-fuzz -- {} {}`",
                file.display(),
                target.name,
                target.name,
                file.display()
            );
            replayed += 1;
        }
    }
    assert!(replayed >= TARGETS.len(), "only {replayed} inputs replayed");
}
