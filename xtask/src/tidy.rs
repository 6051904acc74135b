//! Conventions enforced as tests (run by `cargo xtask test` like every other test).

use std::path::{Path, PathBuf};

use crate::paths;

fn tracked_files() -> Vec<PathBuf> {
    let sh = paths::shell().unwrap();
    let out = xshell::cmd!(sh, "git ls-files --cached --others --exclude-standard")
        .read()
        .unwrap();
    out.lines()
        .map(|l| paths::root().join(l))
        .filter(|p| p.exists())
        .collect()
}

fn rel(p: &Path) -> String {
    p.strip_prefix(paths::root())
        .unwrap_or(p)
        .display()
        .to_string()
}

/// A committed `target-cpu=native` makes binaries that crash with SIGILL on other CPUs.
#[test]
fn no_native_cpu_flags_in_build_configuration() {
    let offenders: Vec<String> = tracked_files()
        .into_iter()
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.ends_with(".toml")
                || name.ends_with(".yml")
                || name.ends_with(".nix")
                || name == "run"
        })
        .filter(|p| {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .lines()
                .any(|l| {
                    let l = l.trim_start();
                    !l.starts_with('#') && l.contains("target-cpu=native")
                })
        })
        .map(|p| rel(&p))
        .collect();
    assert!(
        offenders.is_empty(),
        "target-cpu=native is committed in: {offenders:?}"
    );
}

/// Every Rust source file starts with a module doc comment (`//!`).
#[test]
fn every_rust_file_has_module_docs() {
    let missing: Vec<String> = tracked_files()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .filter(|p| {
            !std::fs::read_to_string(p)
                .unwrap_or_default()
                .trim_start()
                .starts_with("//!")
        })
        .map(|p| rel(&p))
        .collect();
    assert!(missing.is_empty(), "add a `//!` module doc to: {missing:?}");
}

/// Every engine under engines/ is a bench target (an engine that is not benchmarked is a
/// forgotten engine), and every Rust one is a workspace member.
#[test]
fn every_engine_is_wired_into_the_catalog() {
    let manifest = std::fs::read_to_string(paths::root().join("Cargo.toml")).unwrap();
    let packages: Vec<&str> = lab_harness::catalog::targets()
        .iter()
        .map(|t| t.package)
        .collect();
    for entry in std::fs::read_dir(paths::root().join("engines")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().to_string();
        if !name.starts_with("engine-") {
            continue;
        }
        let is_crate = paths::root()
            .join("engines")
            .join(&name)
            .join("Cargo.toml")
            .exists();
        assert!(
            !is_crate || manifest.contains(&format!("\"engines/{name}\"")),
            "{name} is not a workspace member"
        );
        assert!(
            packages.contains(&name.as_str()),
            "{name} has no target in lab_harness::catalog::targets()"
        );
    }
}

/// Files that are committed must not mention this machine's paths (results are written with
/// paths relative to the project root).
#[test]
fn committed_results_hold_no_absolute_project_paths() {
    let root = paths::root().display().to_string();
    // The home directory too: the model volume and a CI target directory live under it.
    let home = std::env::var("HOME")
        .ok()
        .filter(|h| h.len() > 1)
        .map(|h| format!("{}/", h.trim_end_matches('/')));
    let offenders: Vec<String> = tracked_files()
        .into_iter()
        .filter(|p| {
            p.starts_with(paths::root().join("results"))
                || p.starts_with(paths::root().join("baselines"))
        })
        .filter(|p| {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            text.contains(&root) || home.as_ref().is_some_and(|h| text.contains(h.as_str()))
        })
        .map(|p| rel(&p))
        .collect();
    assert!(
        offenders.is_empty(),
        "absolute paths of this checkout or home directory in: {offenders:?}"
    );
}
