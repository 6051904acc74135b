//! What can be benchmarked: engine targets, scenarios and the committed prompt set.

use std::path::Path;

use lab_protocol::{Device, Dtype, Prompt, ScenarioKind, WeightFormat};
use serde::Deserialize;

use lab_results::ScenarioId;

use crate::{Error, Result};

/// How an engine is built and started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    /// A Rust binary built by cargo: `package` is the cargo package, `binary` the file under
    /// `target/release/`.
    Rust,
    /// A Python package under `engines/<package>/`, started as `python -m <binary>` with the
    /// lab's pinned Python environment (`cargo xtask pyenv`).
    Python,
}

/// One engine with one kind of weights, e.g. `candle:gguf-q4_1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Lab engine name, e.g. `candle`.
    pub engine: &'static str,
    pub kind: EngineKind,
    /// Directory under `engines/` (for Rust engines also the cargo package).
    pub package: &'static str,
    /// Rust: binary name under `target/release/`; Python: the module run with `python -m`.
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

/// Why `engine` cannot generate without its KV cache (`--kv-cache off`), or `None` when it can.
/// Every step-wise engine can (the kit recomputes the prefix; PyTorch passes `use_cache=False`);
/// the `kv-off` scenario of an engine that cannot is recorded as unsupported with the engine's
/// own words, and `--kv-cache off` with it selected is refused before anything is built.
pub fn kv_cache_off_unsupported(engine: &str) -> Option<&'static str> {
    match engine {
        "mistralrs" => Some("mistral.rs's KV cache is a setting of its whole runner, and a runner built without it does not recompute the prefix (measured: same step time, wrong ids); the adapter refuses it"),
        _ => None,
    }
}

/// Why `engine` cannot run with an injected slowdown (`bench --slowdown`, the gate study's
/// A/B), or `None` when it can: the kit stretches the steps it times, the Python engine its
/// forward passes; mistral.rs runs its steps inside its own engine loop.
pub fn slowdown_unsupported(engine: &str) -> Option<&'static str> {
    match engine {
        "mistralrs" => Some("mistral.rs runs its forward steps inside its own engine loop, which the kit cannot stretch"),
        _ => None,
    }
}

/// Every target the lab knows on CPU, in run order.
pub fn targets() -> Vec<Target> {
    vec![
        Target {
            engine: "candle",
            kind: EngineKind::Rust,
            package: "engine-candle",
            binary: "engine-candle",
            format: WeightFormat::Gguf,
            dtype: Dtype::Q4_1,
        },
        Target {
            engine: "candle",
            kind: EngineKind::Rust,
            package: "engine-candle",
            binary: "engine-candle",
            format: WeightFormat::Safetensors,
            dtype: Dtype::F32,
        },
        Target {
            engine: "mistralrs",
            kind: EngineKind::Rust,
            package: "engine-mistralrs",
            binary: "engine-mistralrs",
            format: WeightFormat::Gguf,
            dtype: Dtype::Q4_1,
        },
        Target {
            engine: "mistralrs",
            kind: EngineKind::Rust,
            package: "engine-mistralrs",
            binary: "engine-mistralrs",
            format: WeightFormat::Safetensors,
            dtype: Dtype::F32,
        },
        Target {
            engine: "llamacpp",
            kind: EngineKind::Rust,
            package: "engine-llamacpp",
            binary: "engine-llamacpp",
            format: WeightFormat::Gguf,
            dtype: Dtype::Q4_1,
        },
        Target {
            engine: "native",
            kind: EngineKind::Rust,
            package: "engine-native",
            binary: "engine-native",
            format: WeightFormat::Gguf,
            dtype: Dtype::Q4_1,
        },
        Target {
            engine: "native",
            kind: EngineKind::Rust,
            package: "engine-native",
            binary: "engine-native",
            format: WeightFormat::Safetensors,
            dtype: Dtype::F32,
        },
        Target {
            engine: "burn",
            kind: EngineKind::Rust,
            package: "engine-burn",
            binary: "engine-burn",
            format: WeightFormat::Safetensors,
            dtype: Dtype::F32,
        },
        Target {
            engine: "pytorch",
            kind: EngineKind::Python,
            package: "engine-pytorch",
            binary: "lab_engine_pytorch",
            format: WeightFormat::Safetensors,
            dtype: Dtype::F32,
        },
        Target {
            engine: "pytorch",
            kind: EngineKind::Python,
            package: "engine-pytorch",
            binary: "lab_engine_pytorch",
            format: WeightFormat::Safetensors,
            dtype: Dtype::Bf16,
        },
    ]
}

/// Why `engine` has no path on `device` (its targets are left out of such a run and recorded
/// as skipped with this reason, never failed).
pub fn unsupported(engine: &str, device: &Device) -> Option<&'static str> {
    match (engine, device) {
        ("native", Device::Cuda { .. }) => Some(
            "the native engine is a CPU engine (AVX2/AVX-512 kernels over memory-mapped weights); it has no GPU path",
        ),
        _ => None,
    }
}

/// Every target on `device`, in run order: on CPU [`targets`]; on CUDA the precisions each
/// engine's users run there — candle's GGUF and F32/F16/BF16, mistral.rs's GGUF and F32/BF16,
/// llama.cpp's GGUF with every layer offloaded, burn's F32/F16/BF16 (CubeCL), PyTorch eager
/// F32/BF16/F16 — and no target of an engine without a GPU path ([`unsupported`]).
pub fn targets_on(device: &Device) -> Vec<Target> {
    if *device == Device::Cpu {
        return targets();
    }
    let cpu = targets();
    let like = |engine: &str| {
        cpu.iter()
            .find(|t| t.engine == engine)
            .cloned()
            .expect("every engine has a CPU target")
    };
    let with = |engine: &str, format: WeightFormat, dtype: Dtype| Target {
        format,
        dtype,
        ..like(engine)
    };
    use Dtype::*;
    use WeightFormat::*;
    vec![
        with("candle", Gguf, Q4_1),
        with("candle", Safetensors, F32),
        with("candle", Safetensors, F16),
        with("candle", Safetensors, Bf16),
        with("mistralrs", Gguf, Q4_1),
        with("mistralrs", Safetensors, F32),
        with("mistralrs", Safetensors, Bf16),
        with("llamacpp", Gguf, Q4_1),
        with("burn", Safetensors, F32),
        with("burn", Safetensors, F16),
        with("burn", Safetensors, Bf16),
        with("pytorch", Safetensors, F32),
        with("pytorch", Safetensors, Bf16),
        with("pytorch", Safetensors, F16),
    ]
    .into_iter()
    .filter(|t| unsupported(t.engine, device).is_none())
    .collect()
}

/// The engines that read GGUF files of any level (the native engine's kernels are Q4_1's).
pub const QUANT_ENGINES: [&str; 3] = ["llamacpp", "candle", "mistralrs"];

/// The quantization analysis's targets on `device` (`--analysis quant`, or one by its label):
/// each engine of [`QUANT_ENGINES`] on the volume's derived Q8_0, Q4_0 and F16 GGUFs. They are
/// not in a default run; the shipped Q4_1 targets they compare with are.
pub fn quant_targets(device: &Device) -> Vec<Target> {
    let all = targets_on(device);
    QUANT_ENGINES
        .iter()
        .filter_map(|e| all.iter().find(|t| t.engine == *e).cloned())
        .flat_map(|t| {
            [Dtype::Q8_0, Dtype::Q4_0, Dtype::F16].map(|dtype| Target {
                format: WeightFormat::Gguf,
                dtype,
                ..t.clone()
            })
        })
        .collect()
}

/// The engines whose frameworks expose single operations (the microbenchmark analysis); the
/// others' libraries run whole models only.
pub const MICRO_ENGINES: [&str; 4] = ["candle", "burn", "native", "pytorch"];

/// The microbenchmark analysis's targets on `device` (`--analysis micro` alone): one per
/// engine of [`MICRO_ENGINES`], its F32 safetensors target (components read that model's layer
/// 0; every case's dtype is its own).
pub fn micro_targets(device: &Device) -> Vec<Target> {
    targets_on(device)
        .into_iter()
        .filter(|t| {
            MICRO_ENGINES.contains(&t.engine)
                && t.format == WeightFormat::Safetensors
                && t.dtype == Dtype::F32
        })
        .collect()
}

/// The engines whose frameworks can train (the LoRA analysis); the others run inference only.
pub const LORA_ENGINES: [&str; 3] = ["pytorch", "candle", "burn"];

/// The LoRA analysis's targets on `device` (`--analysis lora` alone): one per engine of
/// [`LORA_ENGINES`], its F32 safetensors target (the weights the adapters train on).
pub fn lora_targets(device: &Device) -> Vec<Target> {
    targets_on(device)
        .into_iter()
        .filter(|t| {
            LORA_ENGINES.contains(&t.engine)
                && t.format == WeightFormat::Safetensors
                && t.dtype == Dtype::F32
        })
        .collect()
}

/// Targets left out of a run, with the reason: `(label, why)`.
pub type Skipped = Vec<(String, String)>;

/// Resolves `--engine` values for `device`: an engine name selects all its variants there,
/// `engine:variant` one. An empty selection means every target. Targets of an engine without a
/// path on `device` come back as skipped, with the reason; an unknown name is an error.
pub fn select_targets_on(specs: &[String], device: &Device) -> Result<(Vec<Target>, Skipped)> {
    let all = targets_on(device);
    // Engines without a path here are still known names (their CPU targets), to be skipped.
    let elsewhere: Vec<Target> = targets()
        .into_iter()
        .filter(|t| unsupported(t.engine, device).is_some())
        .collect();
    let mut out: Vec<Target> = Vec::new();
    let mut skipped: Vec<(String, String)> = Vec::new();
    let mut skip = |t: &Target| {
        let why = unsupported(t.engine, device).expect("filtered").to_string();
        if !skipped.iter().any(|(l, _)| *l == t.label()) {
            skipped.push((t.label(), why));
        }
    };
    if specs.is_empty() {
        elsewhere.iter().for_each(&mut skip);
        return Ok((all, skipped));
    }
    let quant = quant_targets(device);
    for spec in specs {
        let matches = |t: &&Target| t.engine == spec.as_str() || t.label() == *spec;
        let mut matched: Vec<Target> = all.iter().filter(matches).cloned().collect();
        if spec == "micro" {
            matched.extend(micro_targets(device));
        }
        if spec == "lora" {
            matched.extend(lora_targets(device));
        }
        if spec == "quant" {
            // Every level of every GGUF engine: the shipped Q4_1 and the derived ones.
            for e in QUANT_ENGINES {
                matched.extend(
                    all.iter()
                        .filter(|t| t.engine == e && t.format == WeightFormat::Gguf)
                        .cloned(),
                );
                matched.extend(quant.iter().filter(|t| t.engine == e).cloned());
            }
        } else {
            matched.extend(quant.iter().filter(|t| t.label() == *spec).cloned());
        }
        let unsupported: Vec<&Target> = elsewhere.iter().filter(matches).collect();
        if matched.is_empty() && unsupported.is_empty() {
            let mut known: Vec<String> = all.iter().map(|t| t.engine.to_string()).collect();
            known.dedup();
            known.extend(all.iter().map(Target::label));
            return Err(Error::msg(format!(
                "unknown engine `{spec}` on {device} (known: {})",
                known.join(", ")
            )));
        }
        unsupported.into_iter().for_each(&mut skip);
        for t in matched {
            if !out.contains(&t) {
                out.push(t);
            }
        }
    }
    Ok((out, skipped))
}

/// [`select_targets_on`] the CPU.
pub fn select_targets(specs: &[String]) -> Result<Vec<Target>> {
    Ok(select_targets_on(specs, &Device::Cpu)?.0)
}

/// Where a scenario's prompts come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptSource {
    /// A committed passage under `prompts/`, cut into prompts of given lengths.
    Passage(&'static str),
    /// The reference prompts of `baselines/reference/<model>.json`, with greedy generation of the
    /// reference's length (one untimed-for-stats iteration).
    ReferenceGreedy,
    /// The reference prompts, teacher-forced with the reference's greedy continuation.
    ReferenceTeacherForced,
    /// No prompts: the microbenchmark cases (`lab_results::micro::cases`).
    Ops,
    /// The LoRA step's training sequence: the first ids of a committed passage.
    Training(&'static str),
}

/// A scenario the harness can ask engines to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub id: &'static str,
    pub kind: ScenarioKind,
    pub description: &'static str,
    pub source: PromptSource,
}

impl Scenario {
    /// A default run (`bench --all`) measures S1–S5 and correctness; the analyses run when named.
    pub fn in_default_run(&self) -> bool {
        self.is_correctness()
            || matches!(
                ScenarioId::parse(self.id),
                Some(ScenarioId::S1 | ScenarioId::S2 | ScenarioId::S3 | ScenarioId::S5)
            )
    }

    /// Correctness scenarios are compared with the reference, not timed against baselines.
    pub fn is_correctness(&self) -> bool {
        matches!(
            self.source,
            PromptSource::ReferenceGreedy | PromptSource::ReferenceTeacherForced
        )
    }
}

/// Ids of the correctness scenarios (their timings are not statistics).
pub fn is_correctness_scenario(id: &str) -> bool {
    lab_results::scenario::is_correctness_scenario(id)
}

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            id: ScenarioId::S1.as_str(),
            kind: ScenarioKind::SingleRequestLatency,
            description: "single-request latency: prompts of 10, 50 and 200 tokens, fixed-length greedy generation",
            source: PromptSource::Passage("s1.json"),
        },
        Scenario {
            id: ScenarioId::S2.as_str(),
            kind: ScenarioKind::BatchedThroughput,
            description: "sustained batched throughput: static batches of equal-length prompts (32 tokens), fixed-length greedy generation, repeated for a duration per batch size",
            source: PromptSource::Passage("s2.json"),
        },
        Scenario {
            id: ScenarioId::S3.as_str(),
            kind: ScenarioKind::ConcurrentLoad,
            description: "concurrent load: closed-loop clients (or Poisson arrivals) sending the committed workload of 8-128-token prompts, served by continuous batching",
            source: PromptSource::Passage("s3.json"),
        },
        Scenario {
            id: ScenarioId::S5.as_str(),
            kind: ScenarioKind::SingleRequestLatency,
            description: "long context: prompts of 1024, 4096 and 8064 tokens, prefill and decode at that depth, peak memory per prompt",
            source: PromptSource::Passage("s5.json"),
        },
        Scenario {
            id: ScenarioId::KvOn.as_str(),
            kind: ScenarioKind::SingleRequestLatency,
            description: "KV-cache analysis, with the cache: a 16-token prompt, fixed-length generation (64 tokens in the small profiles, 512 in standard/full); cumulative time at 64/256/512 tokens",
            source: PromptSource::Passage("kv.json"),
        },
        Scenario {
            id: ScenarioId::KvOff.as_str(),
            kind: ScenarioKind::SingleRequestLatency,
            description: "KV-cache analysis, without the cache: the same generation, every step recomputing the whole prefix (prompt + tokens so far); engines whose library cannot say so",
            source: PromptSource::Passage("kv.json"),
        },
        Scenario {
            id: ScenarioId::Sampling.as_str(),
            kind: ScenarioKind::SamplingOverhead,
            description: "sampling overhead: greedy, T=0.7, top-k 50 and top-p 0.9 each timed over 1,000 selections from the real vocabulary's logits, as a share of the same engine's forward pass (decode step)",
            source: PromptSource::Passage("sampling.json"),
        },
        Scenario {
            id: ScenarioId::Micro.as_str(),
            kind: ScenarioKind::Micro,
            description: "microbenchmarks (`--analysis micro`, not in a default run): matmul at the model's shapes and a 1024² square, softmax, RMSNorm, RoPE, attention and the model's layer-0 components (embedding, attention block, MLP block, layer) at 512 tokens and one token after 512, each framework's own ops, every case timed alone",
            source: PromptSource::Ops,
        },
        Scenario {
            id: ScenarioId::Lora.as_str(),
            kind: ScenarioKind::LoraStep,
            description: "LoRA training step (`--analysis lora`, not in a default run): rank 8, alpha 16 adapters on every layer's q and v projections of the frozen F32 weights, AdamW (lr 1e-4, weight decay 0.01), one fixed 512-token sequence (prompts/lora.json), forward, backward and optimizer of every step timed",
            source: PromptSource::Training("lora.json"),
        },
        Scenario {
            id: ScenarioId::RefGreedy.as_str(),
            kind: ScenarioKind::SingleRequestLatency,
            description: "correctness: greedy continuations of the reference prompts, compared with the reference",
            source: PromptSource::ReferenceGreedy,
        },
        Scenario {
            id: ScenarioId::RefTf.as_str(),
            kind: ScenarioKind::TeacherForced,
            description: "correctness: the reference continuation teacher-forced, top-1 per position compared with the reference",
            source: PromptSource::ReferenceTeacherForced,
        },
    ]
}

/// Resolves `--scenario` values; `ref` selects both correctness scenarios. Empty: all.
pub fn select_scenarios(specs: &[String]) -> Result<Vec<Scenario>> {
    let all = scenarios();
    if specs.is_empty() {
        // The mission's scenarios and correctness; the analyses (KV cache, sampling,
        // microbenchmarks, LoRA) are asked for by name: each costs minutes per engine.
        return Ok(all.into_iter().filter(Scenario::in_default_run).collect());
    }
    let mut out: Vec<Scenario> = Vec::new();
    for s in specs {
        let s = s.to_lowercase();
        let matched: Vec<&Scenario> = all
            .iter()
            .filter(|x| {
                x.id == s
                    || (s == "ref" && x.is_correctness())
                    || (s == "kv" && x.id.starts_with("kv-"))
                    // S4 (memory) is measured in every load and long-context scenario.
                    || (s == "s4" && matches!(x.id, "s2" | "s3" | "s5"))
            })
            .collect();
        if matched.is_empty() {
            let known: Vec<_> = all.iter().map(|x| x.id).collect();
            return Err(Error::msg(format!(
                "unknown scenario `{s}` (known: {}, s4, kv, ref)",
                known.join(", ")
            )));
        }
        for m in matched {
            if !out.contains(m) {
                out.push(m.clone());
            }
        }
    }
    Ok(out)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PromptFile {
    #[allow(dead_code)]
    about: String,
    lengths: Vec<usize>,
    /// The passage itself, or `text_file`: a text file beside the prompt file.
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    text_file: Option<String>,
    /// `windows: N`: N prompts `w<i>` of `lengths[0]` tokens, the i-th run of that many
    /// consecutive ids (equal lengths, different text), instead of prefixes.
    #[serde(default)]
    windows: Option<usize>,
}

/// Tokenizes the scenario's committed passage with the volume's `tokenizer.json` and cuts the
/// prompts (`p<N>` = the first N ids).
pub fn load_prompts(
    prompts_dir: &Path,
    prompt_file: &str,
    tokenizer_json: &Path,
) -> Result<Vec<Prompt>> {
    load_prompts_of_lengths(prompts_dir, prompt_file, tokenizer_json, None)
}

/// [`load_prompts`], with other prompt lengths than the file's when `lengths` is given.
pub fn load_prompts_of_lengths(
    prompts_dir: &Path,
    prompt_file: &str,
    tokenizer_json: &Path,
    lengths: Option<&[usize]>,
) -> Result<Vec<Prompt>> {
    let path = prompts_dir.join(prompt_file);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let mut file: PromptFile = serde_json::from_str(&text)
        .map_err(|e| Error::msg(format!("{}: malformed prompt file: {e}", path.display())))?;
    if let Some(l) = lengths {
        file.lengths = l.to_vec();
    }
    let passage = match (&file.text, &file.text_file) {
        (Some(t), None) => t.clone(),
        (None, Some(f)) => {
            let p = prompts_dir.join(f);
            std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?
        }
        _ => {
            return Err(Error::msg(format!(
                "{}: a prompt file has exactly one of `text` and `text_file`",
                path.display()
            )))
        }
    };
    let ids = tokenize(tokenizer_json, &passage)?;
    if let Some(n) = file.windows {
        let len = match file.lengths[..] {
            [len] if len > 0 => len,
            _ => {
                return Err(Error::msg(format!(
                    "{}: `windows` needs exactly one length of at least 1",
                    path.display()
                )))
            }
        };
        if n == 0 || n * len > ids.len() {
            return Err(Error::msg(format!(
                "{}: {n} windows of {len} tokens are not within the passage's {} tokens",
                path.display(),
                ids.len()
            )));
        }
        return Ok((0..n)
            .map(|i| Prompt {
                name: format!("w{i}"),
                token_ids: ids[i * len..(i + 1) * len].to_vec(),
                forced_token_ids: Vec::new(),
            })
            .collect());
    }
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
                forced_token_ids: Vec::new(),
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
    fn the_catalog_has_every_scenario_id_in_order_and_agrees_on_correctness() {
        let ids: Vec<&str> = scenarios().iter().map(|s| s.id).collect();
        let all: Vec<&str> = ScenarioId::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(ids, all);
        for s in scenarios() {
            assert_eq!(
                s.is_correctness(),
                ScenarioId::parse(s.id).unwrap().is_correctness(),
                "{}",
                s.id
            );
        }
        let engines: Vec<&str> = targets().iter().map(|t| t.engine).collect();
        for e in lab_results::ENGINES {
            assert!(engines.contains(&e), "{e} has no target");
        }
        assert!(engines.iter().all(|e| lab_results::ENGINES.contains(e)));
    }

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
    fn on_cuda_each_engine_runs_its_gpu_precisions_and_native_is_skipped_with_the_reason() {
        let cuda = Device::Cuda { ordinal: 0 };
        let (all, skipped) = select_targets_on(&[], &cuda).unwrap();
        let labels: Vec<String> = all.iter().map(Target::label).collect();
        assert_eq!(
            labels,
            [
                "candle:gguf-q4_1",
                "candle:hf-f32",
                "candle:hf-f16",
                "candle:hf-bf16",
                "mistralrs:gguf-q4_1",
                "mistralrs:hf-f32",
                "mistralrs:hf-bf16",
                "llamacpp:gguf-q4_1",
                "burn:hf-f32",
                "burn:hf-f16",
                "burn:hf-bf16",
                "pytorch:hf-f32",
                "pytorch:hf-bf16",
                "pytorch:hf-f16",
            ]
        );
        let why = unsupported("native", &cuda).unwrap();
        assert_eq!(
            skipped,
            [
                ("native:gguf-q4_1".to_string(), why.to_string()),
                ("native:hf-f32".to_string(), why.to_string())
            ]
        );
        // Asked for by name: skipped, not an error, and not failed.
        let (t, s) = select_targets_on(&["native".into(), "burn:hf-f16".into()], &cuda).unwrap();
        assert_eq!(
            t.iter().map(Target::label).collect::<Vec<_>>(),
            ["burn:hf-f16"]
        );
        assert_eq!(s.len(), 2);
        let (t, s) = select_targets_on(&["native:hf-f32".into()], &cuda).unwrap();
        assert!(t.is_empty() && s.len() == 1);
        // A CUDA-only precision is not a CPU target.
        let e = select_targets(&["burn:hf-f16".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown engine `burn:hf-f16` on cpu"), "{e}");
        assert!(select_targets_on(&["candel".into()], &cuda).is_err());
        // Nothing is unsupported on the CPU.
        assert!(select_targets_on(&[], &Device::Cpu).unwrap().1.is_empty());
    }

    #[test]
    fn the_quantization_levels_are_selected_by_label_or_by_quant_only() {
        let labels = |specs: &[&str]| -> Vec<String> {
            let specs: Vec<String> = specs.iter().map(|s| s.to_string()).collect();
            select_targets(&specs)
                .unwrap()
                .iter()
                .map(Target::label)
                .collect()
        };
        // Not in a default run, not behind an engine's name.
        assert!(!labels(&[]).iter().any(|l| l.ends_with("q8_0")));
        assert_eq!(labels(&["llamacpp"]), ["llamacpp:gguf-q4_1"]);
        assert_eq!(labels(&["candle:gguf-q4_0"]), ["candle:gguf-q4_0"]);
        let q = labels(&["quant"]);
        assert_eq!(q.len(), 12, "{q:?}");
        for e in QUANT_ENGINES {
            for level in ["q4_1", "q8_0", "q4_0", "f16"] {
                assert!(
                    q.contains(&format!("{e}:gguf-{level}")),
                    "{e} {level}: {q:?}"
                );
            }
        }
        // Every level's file is one the volume builder writes.
        for t in quant_targets(&Device::Cpu) {
            assert!(t.dtype.gguf_file().is_some(), "{}", t.label());
        }
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
        // A default run is the mission's scenarios and correctness; analyses run when named.
        let default: Vec<&str> = select_scenarios(&[])
            .unwrap()
            .iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(default, ["s1", "s2", "s3", "s5", "ref-greedy", "ref-tf"]);
        let r = select_scenarios(&["ref".into(), "ref-tf".into()]).unwrap();
        assert_eq!(
            r.iter().map(|s| s.id).collect::<Vec<_>>(),
            ["ref-greedy", "ref-tf"]
        );
        assert!(is_correctness_scenario("ref-tf") && !is_correctness_scenario("s1"));
    }
}
