//! What can be benchmarked: engine targets, scenarios and the committed prompt set.

use std::path::Path;

use lab_protocol::{Dtype, Prompt, ScenarioKind, WeightFormat};
use serde::Deserialize;

use crate::{Error, Result};

/// One engine with one kind of weights, e.g. `candle:gguf-q4_1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Lab engine name, e.g. `candle`.
    pub engine: &'static str,
    /// Cargo package that builds the engine binary.
    pub package: &'static str,
    /// Binary name under `target/release/`.
    pub binary: &'static str,
    pub format: WeightFormat,
    pub dtype: Dtype,
}

impl Target {
    /// `gguf-q4_1` or `hf-f32`.
    pub fn variant(&self) -> String {
        let f = match self.format {
            WeightFormat::Gguf => "gguf",
            WeightFormat::Safetensors => "hf",
        };
        format!("{f}-{}", self.dtype.as_str())
    }

    /// `candle:gguf-q4_1`.
    pub fn label(&self) -> String {
        format!("{}:{}", self.engine, self.variant())
    }

    /// Label usable as a file name: `candle.gguf-q4_1`.
    pub fn file_stem(&self) -> String {
        format!("{}.{}", self.engine, self.variant())
    }
}

/// Every target the lab knows on CPU, in run order.
pub fn targets() -> Vec<Target> {
    vec![
        Target {
            engine: "candle",
            package: "engine-candle",
            binary: "engine-candle",
            format: WeightFormat::Gguf,
            dtype: Dtype::Q4_1,
        },
        Target {
            engine: "candle",
            package: "engine-candle",
            binary: "engine-candle",
            format: WeightFormat::Safetensors,
            dtype: Dtype::F32,
        },
        Target {
            engine: "llamacpp",
            package: "engine-llamacpp",
            binary: "engine-llamacpp",
            format: WeightFormat::Gguf,
            dtype: Dtype::Q4_1,
        },
    ]
}

/// Resolves `--engine` values: an engine name selects all its variants, `engine:variant` one.
/// An empty selection means every target.
pub fn select_targets(specs: &[String]) -> Result<Vec<Target>> {
    let all = targets();
    if specs.is_empty() {
        return Ok(all);
    }
    let mut out: Vec<Target> = Vec::new();
    for spec in specs {
        let matched: Vec<Target> = all
            .iter()
            .filter(|t| t.engine == spec.as_str() || t.label() == *spec)
            .cloned()
            .collect();
        if matched.is_empty() {
            let mut known: Vec<String> = all.iter().map(|t| t.engine.to_string()).collect();
            known.dedup();
            known.extend(all.iter().map(Target::label));
            return Err(Error::msg(format!(
                "unknown engine `{spec}` (known: {})",
                known.join(", ")
            )));
        }
        for t in matched {
            if !out.contains(&t) {
                out.push(t);
            }
        }
    }
    Ok(out)
}

/// A scenario the harness can ask engines to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub id: &'static str,
    pub kind: ScenarioKind,
    pub description: &'static str,
    /// Prompt set file under `prompts/`.
    pub prompt_file: &'static str,
}

pub fn scenarios() -> Vec<Scenario> {
    vec![Scenario {
        id: "s1",
        kind: ScenarioKind::SingleRequestLatency,
        description: "single-request latency: prompts of 10, 50 and 200 tokens, fixed-length greedy generation",
        prompt_file: "s1.json",
    }]
}

pub fn select_scenarios(specs: &[String]) -> Result<Vec<Scenario>> {
    let all = scenarios();
    if specs.is_empty() {
        return Ok(all);
    }
    specs
        .iter()
        .map(|s| {
            all.iter()
                .find(|x| x.id == s.to_lowercase())
                .cloned()
                .ok_or_else(|| {
                    let known: Vec<_> = all.iter().map(|x| x.id).collect();
                    Error::msg(format!(
                        "unknown scenario `{s}` (known: {})",
                        known.join(", ")
                    ))
                })
        })
        .collect()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PromptFile {
    #[allow(dead_code)]
    about: String,
    lengths: Vec<usize>,
    text: String,
}

/// Tokenizes the scenario's committed passage with the volume's `tokenizer.json` and cuts the
/// prompts (`p<N>` = the first N ids).
pub fn load_prompts(
    prompts_dir: &Path,
    scenario: &Scenario,
    tokenizer_json: &Path,
) -> Result<Vec<Prompt>> {
    let path = prompts_dir.join(scenario.prompt_file);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let file: PromptFile = serde_json::from_str(&text)
        .map_err(|e| Error::msg(format!("{}: malformed prompt file: {e}", path.display())))?;
    let ids = tokenize(tokenizer_json, &file.text)?;
    file.lengths
        .iter()
        .map(|&n| {
            if n == 0 || n > ids.len() {
                return Err(Error::msg(format!(
                    "{}: prompt length {n} is not within the passage's {} tokens",
                    path.display(),
                    ids.len()
                )));
            }
            Ok(Prompt {
                name: format!("p{n}"),
                token_ids: ids[..n].to_vec(),
            })
        })
        .collect()
}

/// Token ids of `text` with the volume's tokenizer (no special tokens added).
pub fn tokenize(tokenizer_json: &Path, text: &str) -> Result<Vec<u32>> {
    let tok = tokenizers::Tokenizer::from_file(tokenizer_json).map_err(|e| {
        Error::msg(format!(
            "{}: cannot load tokenizer: {e}",
            tokenizer_json.display()
        ))
    })?;
    let enc = tok.encode(text, false).map_err(|e| {
        Error::msg(format!(
            "{}: cannot tokenize: {e}",
            tokenizer_json.display()
        ))
    })?;
    Ok(enc.get_ids().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_names_select_all_variants_and_labels_select_one() {
        let all = select_targets(&[]).unwrap();
        assert!(all.len() >= 2);
        let candle = select_targets(&["candle".into()]).unwrap();
        assert!(candle.iter().all(|t| t.engine == "candle") && candle.len() == 2);
        assert_eq!(
            select_targets(&["llamacpp".into()]).unwrap()[0].label(),
            "llamacpp:gguf-q4_1"
        );
        let one = select_targets(&["candle:hf-f32".into()]).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].label(), "candle:hf-f32");
        // Asking twice does not run twice.
        assert_eq!(
            select_targets(&["candle".into(), "candle:hf-f32".into()])
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn unknown_names_are_one_clear_error() {
        let e = select_targets(&["candel".into()]).unwrap_err().to_string();
        assert!(
            e.contains("unknown engine `candel`") && e.contains("candle:gguf-q4_1"),
            "{e}"
        );
        let e = select_scenarios(&["s9".into()]).unwrap_err().to_string();
        assert!(
            e.contains("unknown scenario `s9`") && e.contains("s1"),
            "{e}"
        );
        assert_eq!(select_scenarios(&["S1".into()]).unwrap()[0].id, "s1");
    }
}
