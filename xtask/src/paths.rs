//! Where things are: the project root, the model volume, the cargo target directory.

use std::path::PathBuf;

pub fn root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .expect("xtask lives one level below the root")
        .to_path_buf()
}

/// `LAB_MODELS_DIR` or `<root>/models`.
pub fn models_dir() -> PathBuf {
    std::env::var_os("LAB_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("models"))
}

/// `CARGO_TARGET_DIR` or `<root>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from) {
        Some(p) if p.is_absolute() => p,
        Some(p) => root().join(p),
        None => root().join("target"),
    }
}

pub fn release_binary(name: &str) -> PathBuf {
    target_dir().join("release").join(name)
}

pub fn shell() -> anyhow::Result<xshell::Shell> {
    let sh = xshell::Shell::new()?;
    sh.change_dir(root());
    Ok(sh)
}
