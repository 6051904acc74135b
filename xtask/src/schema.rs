//! `cargo xtask schema`: writes the protocol's JSON Schemas (a test fails when they are stale).

use anyhow::{Context, Result};

use crate::paths;

pub fn run() -> Result<()> {
    let dir = paths::root().join("crates/lab-protocol/schema");
    std::fs::create_dir_all(&dir)?;
    for (name, text) in lab_protocol::json_schemas() {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| path.display().to_string())?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
