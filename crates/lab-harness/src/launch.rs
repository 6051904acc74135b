//! How each kind of engine is started: a Rust binary, or a Python module run by the lab's pinned
//! Python environment, offline. Threads and pinning are added by [`crate::placement`].

use std::path::{Path, PathBuf};

use crate::catalog::{EngineKind, Target};
use crate::runner::Launch;

/// The environment an engine gets inside a prebuilt image (whose entrypoint is the engine, with
/// its own paths): for Python, the offline and output flags.
pub fn image_env(target: &Target) -> Vec<(String, String)> {
    match target.kind {
        EngineKind::Rust => Vec::new(),
        EngineKind::Python => vec![
            ("PYTHONUNBUFFERED".into(), "1".into()),
            ("HF_HUB_OFFLINE".into(), "1".into()),
            ("TRANSFORMERS_OFFLINE".into(), "1".into()),
        ],
    }
}

/// The launch and the file hashed as the engine's "binary" in provenance (for a Python engine,
/// its engine module).
pub fn launch_for(
    target: &Target,
    root: &Path,
    release_dir: &Path,
    python: Option<&Path>,
) -> crate::Result<(Launch, PathBuf)> {
    match target.kind {
        EngineKind::Rust => {
            let binary = release_dir.join(target.binary);
            if !binary.exists() {
                return Err(crate::Error::msg(format!(
                    "{}: engine binary {} is missing (build it, or drop --no-build)",
                    target.label(),
                    binary.display()
                )));
            }
            let launch = Launch {
                program: binary.display().to_string(),
                args: Vec::new(),
                env: Vec::new(),
                cleanup: Vec::new(),
                ..Default::default()
            };
            Ok((launch, binary))
        }
        EngineKind::Python => {
            let python = python.ok_or_else(|| {
                crate::Error::msg(format!(
                    "{}: no Python environment (run `cargo xtask pyenv`, or set LAB_PYTHON)",
                    target.label()
                ))
            })?;
            let pkg = root.join("engines").join(target.package);
            let module_file = pkg.join(target.binary).join("engine.py");
            if !module_file.exists() {
                return Err(crate::Error::msg(format!(
                    "{}: {} is missing",
                    target.label(),
                    module_file.display()
                )));
            }
            let launch = Launch {
                program: python.display().to_string(),
                args: vec!["-m".into(), target.binary.into()],
                env: vec![
                    ("PYTHONPATH".into(), pkg.display().to_string()),
                    ("PYTHONDONTWRITEBYTECODE".into(), "1".into()),
                    ("PYTHONUNBUFFERED".into(), "1".into()),
                    ("HF_HUB_OFFLINE".into(), "1".into()),
                    ("TRANSFORMERS_OFFLINE".into(), "1".into()),
                ],
                cleanup: Vec::new(),
                ..Default::default()
            };
            Ok((launch, module_file))
        }
    }
}
