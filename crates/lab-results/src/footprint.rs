//! What an engine occupies on disk, recorded in every result (the harness measures it): the engine binary (Rust engines),
//! its container image (as the runtime reports the image's size) and, for the PyTorch engine,
//! its Python environment (every file under the virtual environment the interpreter belongs to).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Footprint {
    /// The engine binary on the host, bytes (Rust engines run from the host or an image built
    /// from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary_bytes: Option<u64>,
    /// The engine's container image, bytes, as the runtime reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_bytes: Option<u64>,
    /// The Python environment the engine runs in, bytes (every file, symlinks not followed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment_bytes: Option<u64>,
    /// What `environment_bytes` measured, or why there is no figure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
}
