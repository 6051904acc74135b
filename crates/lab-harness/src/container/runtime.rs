//! Which container runtime runs the engines: the kinds (`native`, `podman`, `docker`), their
//! per-machine settings from `containers/runtimes.json`, and detection (`auto`).

use std::path::Path;

use serde::Deserialize;
use xshell::{cmd, Shell};

use super::CONFIG_FILE;
use crate::{Error, Result};

pub use lab_results::runtime::RuntimeKind;

/// `--runtime`: `native`, `podman` or `docker`; `auto` is `None` (see [`detect`]).
pub fn runtime_kind(s: &str) -> Result<Option<RuntimeKind>> {
    match s {
        "auto" => Ok(None),
        _ => RuntimeKind::from_name(s).map(Some).ok_or_else(|| {
            Error::msg(format!(
                "--runtime {s}: expected auto, native, podman or docker"
            ))
        }),
    }
}

/// Arguments a container runtime needs on this kind of machine (`containers/runtimes.json`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSettings {
    /// Before the subcommand (`podman --runtime runc …`).
    #[serde(default)]
    pub global_args: Vec<String>,
    /// Added to every `build`.
    #[serde(default)]
    pub build_args: Vec<String>,
    /// Added to every `run`.
    #[serde(default)]
    pub run_args: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    #[serde(default, rename = "//")]
    pub comment: Option<serde_json::Value>,
    pub podman: RuntimeSettings,
    pub docker: RuntimeSettings,
}

impl RuntimeConfig {
    pub fn settings(&self, rt: RuntimeKind) -> RuntimeSettings {
        match rt {
            RuntimeKind::Podman => self.podman.clone(),
            RuntimeKind::Docker => self.docker.clone(),
            RuntimeKind::Native => RuntimeSettings::default(),
        }
    }
}

pub fn load_config(root: &Path) -> Result<RuntimeConfig> {
    let path = root.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::msg(format!("{}: {e}", path.display())))
}

/// A container runtime ready to use: which one and its settings.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub kind: RuntimeKind,
    pub settings: RuntimeSettings,
    /// `podman version 4.3.1`, as the runtime reports itself.
    pub version: String,
}

impl Runtime {
    pub(crate) fn program(&self) -> &'static str {
        self.kind.name()
    }

    /// `program global_args… args…` as one command.
    pub(crate) fn cmd<'a>(&self, sh: &'a Shell, args: &[String]) -> xshell::Cmd<'a> {
        let p = self.program();
        let g = &self.settings.global_args;
        cmd!(sh, "{p} {g...} {args...}")
    }
}

/// Whether `rt` can run containers here: its settings and version, or why not (not installed,
/// daemon not running, …).
pub fn probe(root: &Path, rt: RuntimeKind) -> std::result::Result<Runtime, String> {
    let config = load_config(root).map_err(|e| e.to_string())?;
    let settings = config.settings(rt);
    let sh = Shell::new().map_err(|e| e.to_string())?;
    let p = rt.name();
    let version = cmd!(sh, "{p} --version")
        .quiet()
        .ignore_stderr()
        .read()
        .map_err(|_| format!("{p} is not installed"))?;
    let g = &settings.global_args;
    let out = cmd!(sh, "{p} {g...} info")
        .quiet()
        .ignore_status()
        .output()
        .map_err(|e| format!("{p} info: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let line = err.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        return Err(format!("`{p} info` failed: {}", line.trim()));
    }
    Ok(Runtime {
        kind: rt,
        settings,
        version: version.trim().to_string(),
    })
}

/// `auto`: podman when it works, else docker when it works, else native; the reason says why
/// the others were not taken.
pub fn detect(root: &Path) -> (Option<Runtime>, String) {
    let mut why = Vec::new();
    for rt in [RuntimeKind::Podman, RuntimeKind::Docker] {
        match probe(root, rt) {
            Ok(e) => {
                let reason = format!("{} found ({})", rt.name(), e.version);
                return (Some(e), reason);
            }
            Err(e) => why.push(e),
        }
    }
    (None, format!("no container runtime: {}", why.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::super::CONTAINERFILE;
    use super::*;
    #[test]
    fn runtimes_parse_and_the_committed_config_loads() {
        assert_eq!(runtime_kind("auto").unwrap(), None);
        assert_eq!(runtime_kind("podman").unwrap(), Some(RuntimeKind::Podman));
        let e = runtime_kind("lxc").unwrap_err().to_string();
        assert!(e.contains("--runtime lxc"), "{e}");
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let c = load_config(&root).unwrap();
        assert!(c.podman.run_args.iter().any(|a| a.starts_with("nofile=")));
        assert!(root.join(CONTAINERFILE).exists());
    }
}
