//! `cargo xtask schema`: writes the JSON Schemas of the protocol and of the result files (a test
//! fails when they are stale).

use anyhow::{Context, Result};

use crate::paths;

pub fn run() -> Result<()> {
    let sets = [
        ("crates/lab-protocol/schema", lab_protocol::json_schemas()),
        (
            "crates/lab-results/schema",
            lab_results::results::json_schemas(),
        ),
    ];
    for (dir, schemas) in sets {
        let dir = paths::root().join(dir);
        std::fs::create_dir_all(&dir)?;
        for (name, text) in schemas {
            let path = dir.join(name);
            std::fs::write(&path, text).with_context(|| path.display().to_string())?;
            eprintln!("wrote {}", path.display());
        }
    }
    Ok(())
}
