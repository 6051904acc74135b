//! The cold-start analysis's recorded types (`--analysis cold-start`; the harness measures it):
//! after a target's run, its engine is started
//! again several times with a one-token request, first on a cold page cache (every clean page
//! dropped: `sync`, then `3` into `/proc/sys/vm/drop_caches`, which needs root), then on a warm
//! one. Each start is broken down from the engine's own marks ([`lab_protocol::LoadTimings`]):
//! spawn → `main` (process exec, and the container's start in a container), then each loading
//! phase the engine can tell apart, `ready`, and the first token. Definitions are written here
//! once; `report.md` and `index.html` show the medians per cache state.

use std::path::PathBuf;

use lab_protocol::{LoadPhase, LOAD_PHASES};
use serde::{Deserialize, Serialize};

/// Where the page cache is dropped.
pub const DROP_CACHES: &str = "/proc/sys/vm/drop_caches";

/// How many starts `--analysis cold-start` makes per target (recorded in the plan).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StartSettings {
    /// Starts on a dropped page cache (each after its own drop).
    pub cold: u32,
    /// Starts right after, on the warm page cache.
    pub warm: u32,
    /// Where `3` is written to drop the page cache, when not [`DROP_CACHES`] (the harness's
    /// tests use a plain file: a fake that records the request without touching the machine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_caches_file: Option<PathBuf>,
}

impl StartSettings {
    pub fn drop_caches_file(&self) -> PathBuf {
        self.drop_caches_file
            .clone()
            .unwrap_or_else(|| PathBuf::from(DROP_CACHES))
    }
}

/// The page-cache state a start ran on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Cache {
    Cold,
    Warm,
    /// The run's own start: whatever the cache held (not a controlled measurement).
    AsFound,
}

impl Cache {
    pub fn name(self) -> &'static str {
        match self {
            Cache::Cold => "cold",
            Cache::Warm => "warm",
            Cache::AsFound => "as found",
        }
    }
}

/// One start of an engine process, ms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StartSample {
    pub cache: Cache,
    /// Spawn → the engine's `main` (exec, interpreter start, container start).
    pub spawn_to_main_ms: Option<f64>,
    /// The engine's phases, ms since its `main`.
    pub phases: Vec<LoadPhase>,
    /// `main` → first token of the first request.
    pub first_token_ms: Option<f64>,
    /// Spawn → the process exited (the one-token request included).
    pub wall_ms: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl StartSample {
    /// Spawn → first token, when both parts are known.
    pub fn spawn_to_first_token_ms(&self) -> Option<f64> {
        Some(self.spawn_to_main_ms? + self.first_token_ms?)
    }

    /// How long each phase took (from the previous mark, `main` first), in [`LOAD_PHASES`]
    /// order, `None` for phases the engine did not mark; then `ready` → first token.
    pub fn durations(&self) -> Vec<(&'static str, Option<f64>)> {
        let mut prev = 0.0;
        let mut out = Vec::new();
        for name in LOAD_PHASES {
            let at = self.phases.iter().find(|p| p.name == name).map(|p| p.at_ms);
            out.push((name, at.map(|a| a - prev)));
            if let Some(a) = at {
                prev = a;
            }
        }
        out.push(("first_token", self.first_token_ms.map(|f| f - prev)));
        out
    }
}

/// The starts of one target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Startup {
    /// How the cold page cache was obtained.
    pub cold_cache: String,
    pub samples: Vec<StartSample>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_is_broken_down_into_the_phases_the_engine_marked() {
        let s = StartSample {
            cache: Cache::Cold,
            spawn_to_main_ms: Some(40.0),
            phases: [
                ("runtime_init", 5.0),
                ("weights_loaded", 105.0),
                ("ready", 110.0),
            ]
            .iter()
            .map(|&(n, a)| LoadPhase {
                name: n.into(),
                at_ms: a,
            })
            .collect(),
            first_token_ms: Some(130.0),
            wall_ms: 200.0,
            error: None,
        };
        assert_eq!(s.spawn_to_first_token_ms(), Some(170.0));
        let d = s.durations();
        assert_eq!(
            d,
            [
                ("runtime_init", Some(5.0)),
                ("file_open", None),
                ("weights_parsed", None),
                ("weights_loaded", Some(100.0)),
                ("ready", Some(5.0)),
                ("first_token", Some(20.0)),
            ]
        );
    }
}
