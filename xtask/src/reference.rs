//! `cargo xtask reference`: regenerate `baselines/reference/<model>.json`, the correctness
//! oracle, with Hugging Face transformers loading the model's original GGUF (an independent path:
//! the lab's GGUF -> safetensors converter is not involved). Prompts come from
//! `prompts/reference.json`, tokenized with the volume's `tokenizer.json`, so the reference is
//! keyed by the same token ids every engine receives.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use lab_harness::catalog;
use lab_harness::model;
use lab_protocol::TopLogits;
use lab_results::correctness::{self, Reference, ReferencePrompt};
use serde::Deserialize;
use xshell::cmd;

use crate::paths;

#[derive(clap::Args)]
pub struct Flags {
    /// Model volume entry (a real model with `model.gguf`).
    #[arg(long, default_value = "smollm2-135m")]
    pub model: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PromptFile {
    about: String,
    continuation_tokens: u32,
    prompts: Vec<PromptText>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PromptText {
    name: String,
    text: String,
}

/// What `python -m lab_engine_pytorch.reference` writes.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PyOutput {
    generator: BTreeMap<String, String>,
    continuation_tokens: u32,
    top_k: u32,
    prompts: Vec<PyPrompt>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PyPrompt {
    name: String,
    token_ids: Vec<u32>,
    greedy: Vec<u32>,
    teacher_forced: Vec<TopLogits>,
}

pub fn run(flags: Flags) -> Result<()> {
    if !model::is_entry_name(&flags.model) || flags.model.starts_with("synthetic-") {
        bail!(
            "--model {}: a reference needs a real model volume entry (random weights have no reference)",
            flags.model
        );
    }
    crate::models::ensure(&flags.model)?;
    let resolved = model::resolve(&paths::models_dir(), &flags.model)?;
    let gguf = resolved.dir.join("model.gguf");
    if !gguf.exists() {
        bail!("{}: missing (run `cargo xtask models`)", gguf.display());
    }
    let python = crate::pyenv::ensure(false)?;

    let root = paths::root();
    let prompt_path = root.join("prompts/reference.json");
    let file: PromptFile = serde_json::from_str(
        &std::fs::read_to_string(&prompt_path)
            .with_context(|| prompt_path.display().to_string())?,
    )
    .with_context(|| format!("{}: malformed", prompt_path.display()))?;
    let mut prompts = Vec::new();
    for p in &file.prompts {
        let ids = catalog::tokenize(&resolved.tokenizer_json, &p.text)?;
        if ids.is_empty() {
            bail!(
                "{}: prompt `{}` has no tokens",
                prompt_path.display(),
                p.name
            );
        }
        prompts.push(serde_json::json!({"name": p.name, "token_ids": ids}));
    }
    let spec = serde_json::json!({
        "model_dir": resolved.dir,
        "gguf_file": "model.gguf",
        "continuation_tokens": file.continuation_tokens,
        "prompts": prompts,
    })
    .to_string();

    eprintln!(
        "reference: {} prompts x {} tokens with transformers on {}",
        file.prompts.len(),
        file.continuation_tokens,
        gguf.display()
    );
    let sh = paths::shell()?;
    let pkg = root.join("engines/engine-pytorch");
    let _pp = sh.push_env("PYTHONPATH", &pkg);
    let _bc = sh.push_env("PYTHONDONTWRITEBYTECODE", "1");
    let out = cmd!(sh, "{python} -m lab_engine_pytorch.reference")
        .stdin(spec)
        .read()
        .context("running the reference generator")?;
    let py: PyOutput = serde_json::from_str(&out).context("reference generator output")?;
    if py.prompts.len() != file.prompts.len() {
        bail!(
            "the reference generator returned {} prompts",
            py.prompts.len()
        );
    }
    let reference = Reference {
        about: format!(
            "Correctness reference for {}: {} Regenerate with `cargo xtask reference --model {}`.",
            flags.model, file.about, flags.model
        ),
        model: flags.model.clone(),
        gguf_sha256: lab_harness::sha256_file(&gguf)?,
        generator: py.generator,
        continuation_tokens: py.continuation_tokens,
        top_k: py.top_k,
        prompts: py
            .prompts
            .into_iter()
            .zip(&file.prompts)
            .map(|(p, t)| ReferencePrompt {
                name: p.name,
                text: t.text.clone(),
                token_ids: p.token_ids,
                greedy: p.greedy,
                teacher_forced: p.teacher_forced,
            })
            .collect(),
    };
    let path = correctness::reference_path(&root, &flags.model);
    std::fs::create_dir_all(path.parent().expect("has a parent"))?;
    lab_results::results::write_json_atomic(&path, &reference)?;
    // Read it back through the same validation `bench` and `check` use.
    correctness::load_reference(&path)?;
    eprintln!("wrote {}", path.display());
    Ok(())
}
