//! The resource limits an engine process ran under, as recorded in every result (the harness
//! applies them).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The resource limits of one engine process, as applied (recorded in every result).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// The most memory the engine may take, bytes; absent: no limit.
    pub memory_bytes: Option<u64>,
    /// How the memory limit is enforced.
    pub memory_by: Option<MemoryLimitBy>,
    /// The most processes and threads the engine may have (a container's pids cgroup);
    /// absent: no limit (a native process: the kernel's per-user limit only).
    pub pids: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MemoryLimitBy {
    /// The container's memory cgroup, swap included (`--memory` = `--memory-swap`): resident
    /// memory; the kernel kills the engine when it is exceeded.
    Cgroup,
    /// `RLIMIT_AS` set in the native child before `exec` (`ulimit -v`): the address space, so
    /// memory maps and thread stacks count too; an allocation beyond it fails.
    AddressSpace,
}

impl Limits {
    /// `memory 512 MiB (cgroup), pids 4096`, or `none`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(b) = self.memory_bytes {
            let by = match self.memory_by {
                Some(MemoryLimitBy::Cgroup) => "container cgroup, no swap",
                Some(MemoryLimitBy::AddressSpace) => "RLIMIT_AS, address space",
                None => "?",
            };
            parts.push(format!("memory {} MiB ({by})", b >> 20));
        }
        if let Some(p) = self.pids {
            parts.push(format!("pids {p}"));
        }
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(", ")
        }
    }
}
