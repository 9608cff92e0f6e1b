//! What the web app's module is made of (`cargo xtask bench --only size`): the bytes of its
//! functions after wasm-opt, by the crate each serves, and a few kinds of code that every crate
//! instantiates for its own types.
//!
//! A function is counted for the first crate in its name that is not the standard library's:
//! `BTreeMap<PeerId, u64>::insert` for `libp2p_identity` (`PeerId`), a derived `Serialize` for
//! the crate of the type. What is left is generic code over the standard library's own types
//! (`BTreeMap<String, u64>`) and the standard library itself. The module is built a second time
//! for this, with names ([`web::build_with_names`]); its code is within 1% of the served one's.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::Context;

use crate::web::{self, mb};

/// The standard library's crates (and the allocator's).
const STD: &[&str] = &[
    "alloc",
    "core",
    "std",
    "hashbrown",
    "compiler_builtins",
    "dlmalloc",
];

/// Kinds of code across crates, found by a piece of the function's name.
const KINDS: &[(&str, &str)] = &[
    ("BTreeMap/BTreeSet", "collections::btree"),
    ("HashMap/HashSet", "hashbrown::"),
    ("sorting", "slice::sort"),
    ("serde (any)", "serde"),
    (
        "serde's buffering of tagged and flattened types",
        "de::content::",
    ),
    ("Debug impls", "as core::fmt::Debug>::fmt"),
    ("Display impls", "as core::fmt::Display>::fmt"),
    ("drop glue", "drop_in_place"),
];

/// The module's functions, as (demangled name, body bytes), and its data segments' bytes.
fn functions(wasm: &[u8]) -> anyhow::Result<(Vec<(String, usize)>, usize)> {
    use wasmparser::{KnownCustom, Name, Parser, Payload, TypeRef};
    let mut imported = 0;
    let mut bodies = Vec::new();
    let mut names = HashMap::new();
    let mut data = 0;
    for payload in Parser::new(0).parse_all(wasm) {
        match payload? {
            Payload::ImportSection(imports) => {
                for import in imports {
                    imported += usize::from(matches!(import?.ty, TypeRef::Func(_)));
                }
            }
            Payload::CodeSectionEntry(body) => bodies.push(body.range().len()),
            Payload::DataSection(segments) => data = segments.range().len(),
            Payload::CustomSection(section) => {
                if let KnownCustom::Name(subsections) = section.as_known() {
                    for subsection in subsections {
                        if let Name::Function(map) = subsection? {
                            for naming in map {
                                let naming = naming?;
                                names.insert(naming.index as usize, naming.name);
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    let functions = bodies
        .into_iter()
        .enumerate()
        .map(|(i, size)| {
            let name = names.get(&(imported + i)).copied().unwrap_or("?");
            (
                without_hashes(&format!("{:#}", rustc_demangle::demangle(name))),
                size,
            )
        })
        .collect();
    Ok((functions, data))
}

/// `name` without the crate hashes binaryen leaves in the names it demangles itself
/// (`core[c5930c85a12de822]::ptr`).
fn without_hashes(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find(']') {
            Some(close) if close > 0 && after[..close].bytes().all(|b| b.is_ascii_hexdigit()) => {
                rest = &after[close + 1..];
            }
            _ => {
                out.push('[');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The crates a demangled name mentions, in order: every identifier that starts a path.
fn crates_in(name: &str) -> Vec<&str> {
    let mut crates = Vec::new();
    let mut start = None;
    for (i, c) in name.char_indices() {
        match (start, c) {
            (None, 'a'..='z' | '_')
                if i == 0 || name[..i].ends_with(['<', ' ', '(', '&', ',', '*', '[']) =>
            {
                start = Some(i);
            }
            (Some(_), 'a'..='z' | '0'..='9' | '_') => {}
            (Some(s), _) => {
                if name[i..].starts_with("::") {
                    crates.push(&name[s..i]);
                }
                start = None;
            }
            _ => {}
        }
    }
    crates
}

/// The crate a function is counted for (see the module's documentation).
fn owner(name: &str) -> &str {
    let crates = crates_in(name);
    crates
        .iter()
        .find(|c| !STD.contains(c))
        .copied()
        .unwrap_or("(the standard library, and generic code over its types)")
}

pub(super) fn report() -> anyhow::Result<()> {
    let Some(wasm) = web::build_with_names()? else {
        println!("(what the module is made of needs wasm-opt)");
        return Ok(());
    };
    let bytes = std::fs::read(&wasm).with_context(|| format!("reading {}", wasm.display()))?;
    let (functions, data) = functions(&bytes)?;
    print_report(&functions, data, &wasm);
    Ok(())
}

fn print_report(functions: &[(String, usize)], data: usize, wasm: &Path) {
    let code: usize = functions.iter().map(|(_, size)| size).sum();
    let row = |bytes: usize, what: &str| {
        let share = 100.0 * bytes as f64 / code.max(1) as f64;
        println!("  {:>8.1} KB {share:>5.1}%  {what}", bytes as f64 / 1e3);
    };
    let mut by_crate = BTreeMap::<&str, usize>::new();
    for (name, size) in functions {
        *by_crate.entry(owner(name)).or_default() += size;
    }
    let mut by_crate: Vec<(&str, usize)> = by_crate.into_iter().collect();
    by_crate.sort_by_key(|(_, bytes)| std::cmp::Reverse(*bytes));
    println!(
        "== what the app's module is made of (function bytes after wasm-opt, by crate; {}) ==",
        wasm.display()
    );
    println!(
        "code {} in {} functions, data {}",
        mb(code as u64),
        functions.len(),
        mb(data as u64)
    );
    let shown = 24;
    for (krate, bytes) in by_crate.iter().take(shown) {
        row(*bytes, krate);
    }
    let others = by_crate.len().saturating_sub(shown);
    let rest = by_crate.iter().skip(shown).map(|(_, bytes)| bytes).sum();
    row(rest, &format!("{others} other crates"));
    for prefix in ["tabmesh_", "libp2p_"] {
        let together = by_crate
            .iter()
            .filter(|(krate, _)| krate.starts_with(prefix))
            .map(|(_, bytes)| bytes)
            .sum();
        row(together, &format!("all {prefix}* crates together"));
    }
    println!("by kind, across crates:");
    for (kind, piece) in KINDS {
        let bytes = functions
            .iter()
            .filter(|(name, _)| name.contains(piece))
            .map(|(_, size)| size)
            .sum();
        row(bytes, kind);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_function_counts_for_the_first_crate_that_is_not_the_standard_librarys() {
        assert_eq!(
            owner(
                "<alloc::collections::btree::map::BTreeMap<libp2p_identity::peer_id::PeerId, u64>>::insert"
            ),
            "libp2p_identity"
        );
        assert_eq!(
            owner(
                "<tabmesh_core::view::NodeView as serde::ser::Serialize>::serialize::<&mut serde_json::ser::Serializer<&mut alloc::vec::Vec<u8>>>"
            ),
            "tabmesh_core"
        );
        assert_eq!(
            owner("<alloc::collections::btree::map::BTreeMap<alloc::string::String, u64>>::insert"),
            "(the standard library, and generic code over its types)"
        );
        assert_eq!(owner("yew::scheduler::start"), "yew");
        assert_eq!(
            without_hashes("<data_encoding[2ffb0a9b961b0e37]::Encoding>::decode_mut::<[u8; 4]>"),
            "<data_encoding::Encoding>::decode_mut::<[u8; 4]>"
        );
        assert_eq!(
            crates_in("core::ptr::drop_in_place::<[tabmesh_web::state::Row]>"),
            ["core", "tabmesh_web"]
        );
    }
}
