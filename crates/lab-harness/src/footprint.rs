//! Measuring what an engine occupies on disk (`lab_results::footprint::Footprint`, recorded in
//! every result): the engine binary (Rust engines),
//! its container image (as the runtime reports the image's size) and, for the PyTorch engine,
//! its Python environment (every file under the virtual environment the interpreter belongs to).

use std::path::Path;

use lab_results::footprint::Footprint;

use crate::catalog::EngineKind;
use crate::PreparedTarget;

/// Bytes of every regular file under `dir` (symlinks count as nothing, so a shared library is
/// not counted twice).
pub fn dir_bytes(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let m = e.path().symlink_metadata()?;
            if m.is_dir() {
                stack.push(e.path());
            } else if m.is_file() {
                total += m.len();
            }
        }
    }
    Ok(total)
}

/// The footprint of a prepared target.
pub fn of(t: &PreparedTarget) -> Footprint {
    let mut f = Footprint {
        image_bytes: t.image_bytes,
        ..Footprint::default()
    };
    match t.target.kind {
        EngineKind::Rust => {
            f.binary_bytes = std::fs::metadata(&t.binary)
                .ok()
                .filter(|m| m.is_file())
                .map(|m| m.len());
        }
        EngineKind::Python if t.image_digest.is_none() => {
            let (bytes, what) = python_environment(Path::new(interpreter(&t.launch)));
            f.environment_bytes = bytes;
            f.environment = Some(what);
        }
        EngineKind::Python => {}
    }
    f
}

/// The interpreter a Python target's launch runs: its program, or the program `taskset -c CPUS`
/// starts when the engine is pinned.
fn interpreter(launch: &crate::runner::Launch) -> &str {
    let pinned = Path::new(&launch.program).file_name() == Some("taskset".as_ref());
    match (pinned, launch.args.get(2)) {
        (true, Some(program)) => program,
        _ => &launch.program,
    }
}

/// The virtual environment of `python` (`<prefix>/bin/python` with `<prefix>/pyvenv.cfg`) and
/// its size, or why there is none to measure.
fn python_environment(python: &Path) -> (Option<u64>, String) {
    let Some(prefix) = python.parent().and_then(Path::parent) else {
        return (
            None,
            format!("{}: no environment directory", python.display()),
        );
    };
    if !prefix.join("pyvenv.cfg").is_file() {
        return (
            None,
            format!(
                "{} is not in a virtual environment (no pyvenv.cfg in {}): not measured",
                python.display(),
                prefix.display()
            ),
        );
    }
    match dir_bytes(prefix) {
        Ok(b) => (Some(b), "the virtual environment (every file)".into()),
        Err(e) => (None, format!("{}: {e}", prefix.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_counts_its_files_once_and_a_venv_is_recognised() {
        let d = std::env::temp_dir().join(format!("lab-footprint-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("bin")).unwrap();
        std::fs::create_dir_all(d.join("lib/site")).unwrap();
        std::fs::write(d.join("bin/python"), vec![0u8; 1000]).unwrap();
        std::fs::write(d.join("lib/site/torch.so"), vec![0u8; 24]).unwrap();
        std::os::unix::fs::symlink(d.join("bin/python"), d.join("bin/python3")).unwrap();
        assert_eq!(dir_bytes(&d).unwrap(), 1024);
        let (b, why) = python_environment(&d.join("bin/python"));
        assert_eq!(b, None);
        assert!(why.contains("not in a virtual environment"), "{why}");
        std::fs::write(d.join("pyvenv.cfg"), "home = /usr/bin\n").unwrap();
        let (b, _) = python_environment(&d.join("bin/python"));
        assert_eq!(b, Some(1024 + 16));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_pinned_python_engine_is_measured_by_its_interpreter_not_taskset() {
        let launch = |program: &str, args: &[&str]| crate::runner::Launch {
            program: program.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            env: vec![],
            cleanup: vec![],
            ..Default::default()
        };
        let env = "/opt/lab-pyenv/bin/python";
        assert_eq!(
            interpreter(&launch(env, &["-m", "lab_engine_pytorch"])),
            env
        );
        assert_eq!(
            interpreter(&launch(
                "taskset",
                &["-c", "0-1", env, "-m", "lab_engine_pytorch"]
            )),
            env
        );
    }
}
