//! engine-llamacpp on the real model: the tokenizer cross-check against llama.cpp (an
//! implementation nobody in this project wrote), the end-to-end `bench` + `check`, and errors.
//! Needs the model volume (`cargo xtask test` builds it).

use std::path::Path;

use lab_protocol::{Dtype, WeightFormat};
use lab_testkit::{self as testkit, models_dir};
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

fn corpus() -> Vec<String> {
    let read = |p: &Path| -> Vec<serde_json::Value> {
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut texts: Vec<String> = read(&here.join("tests/tokenizer_corpus.json"))
        .into_iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    // The corpus the volume's own reference ids were made for (code, digits, CJK, chat markup, the
    // S1 passage, ...).
    let reference = here.join("../../crates/model-volume/tests/reference/corpus.json");
    texts.extend(
        read(&reference)
            .into_iter()
            .map(|v| v.as_str().unwrap().to_string()),
    );
    texts
}

/// llama.cpp (`smollm` pre-tokenizer, parse_special) and the lab's rebuilt `tokenizer.json`
/// (through the `tokenizers` crate) give identical ids for every text, and both decode the ids
/// back to the original text.
#[test]
fn llama_cpp_and_the_volume_tokenizer_agree_on_a_multilingual_corpus() {
    let dir = models_dir().join("smollm2-135m");
    let mut backend = LlamaBackend::init().unwrap();
    backend.void_logs();
    let model = LlamaModel::load_from_file(
        &backend,
        dir.join("model.gguf"),
        &LlamaModelParams::default().with_vocab_only(true),
    )
    .unwrap();
    assert_eq!(model.meta_val_str("tokenizer.ggml.pre").unwrap(), "smollm");
    let vocab = model.vocab();
    let tok = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();

    let texts = corpus();
    assert!(texts.len() >= 45, "corpus too small: {}", texts.len());
    let mut mismatches = Vec::new();
    let mut tokens = 0;
    for text in &texts {
        let ours: Vec<u32> = tok.encode(text.as_str(), false).unwrap().get_ids().to_vec();
        let theirs: Vec<u32> = vocab
            .tokenize(text.as_bytes(), false, true)
            .iter()
            .map(|t| t.0 as u32)
            .collect();
        tokens += theirs.len();
        if ours != theirs {
            mismatches.push(format!(
                "ids differ for {text:?}\n  tokenizer.json {ours:?}\n  llama.cpp      {theirs:?}"
            ));
            continue;
        }
        let ids: Vec<LlamaToken> = theirs.iter().map(|&t| LlamaToken(t as i32)).collect();
        let theirs_text = String::from_utf8(vocab.detokenize(&ids, false, true)).unwrap();
        let ours_text = tok.decode(&ours, false).unwrap();
        if theirs_text != *text || ours_text != *text {
            mismatches.push(format!("decode differs for {text:?}: llama.cpp {theirs_text:?}, tokenizer.json {ours_text:?}"));
        }
    }
    eprintln!(
        "tokenizer cross-check: {} texts, {tokens} tokens, {} mismatches",
        texts.len(),
        mismatches.len()
    );
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

/// Teacher-forced top-1 agreement with the reference (transformers on the original GGUF).
#[test]
fn llamacpp_agrees_with_the_reference() {
    let binary = Path::new(env!("CARGO_BIN_EXE_engine-llamacpp"));
    let (_, results) = testkit::run_correctness(
        "llamacpp-ref",
        vec![testkit::target(
            "llamacpp",
            binary,
            WeightFormat::Gguf,
            Dtype::Q4_1,
            &[],
        )],
    );
    testkit::assert_correct(&results);
}

#[test]
fn bench_and_check_on_the_real_model() {
    let binary = Path::new(env!("CARGO_BIN_EXE_engine-llamacpp"));
    let (plan, results) = testkit::run_s1(
        "llamacpp",
        vec![testkit::target(
            "llamacpp",
            binary,
            WeightFormat::Gguf,
            Dtype::Q4_1,
            &[],
        )],
        1,
        2,
    );
    for r in &results {
        // The build's CPU features are recorded from llama.cpp itself.
        let info = &r.report.engine.settings["system_info"];
        assert!(info.contains("CPU"), "{info}");
    }
    testkit::assert_tokens_match_baseline(&plan, &results);
}

#[test]
fn refuses_anything_but_the_gguf_and_a_missing_file() {
    let binary = Path::new(env!("CARGO_BIN_EXE_engine-llamacpp"));
    let t = testkit::target(
        "llamacpp",
        binary,
        WeightFormat::Safetensors,
        Dtype::F32,
        &[],
    );
    let run = |t: lab_harness::PreparedTarget| {
        let mut req = testkit::raw_request(&t, Path::new("/nonexistent/dir"));
        req.scenarios.clear();
        testkit::engine_failure(&t, &req)
    };
    let msg = run(t.clone());
    assert!(msg.contains("gguf") && msg.contains("f32"), "{msg}");
    let g = testkit::target("llamacpp", binary, WeightFormat::Gguf, Dtype::Q4_1, &[]);
    let msg = run(g);
    assert!(
        msg.contains("/nonexistent/dir/model.gguf is missing") && msg.contains("never download"),
        "{msg}"
    );
}

/// The engine contract every engine keeps (`lab_testkit::conformance`).
#[test]
fn conforms_to_the_engine_contract() {
    testkit::assert_conforms(&testkit::target(
        "llamacpp",
        Path::new(env!("CARGO_BIN_EXE_engine-llamacpp")),
        WeightFormat::Gguf,
        Dtype::Q4_1,
        &[],
    ));
}

/// The same engine inside its container (podman or docker; CI installs podman) produces the
/// token ids of the committed baseline: the image carries everything the binary needs.
#[test]
fn s1_in_a_container_matches_the_baselines() {
    testkit::assert_s1_in_container_matches_baseline(
        "llamacpp-container",
        vec![testkit::target(
            "llamacpp",
            Path::new(env!("CARGO_BIN_EXE_engine-llamacpp")),
            WeightFormat::Gguf,
            Dtype::Q4_1,
            &[],
        )],
    );
}

/// S2 and S3 with real sequence ids: every request completes, sequences really share decode
/// steps, and batched greedy outputs are compared with unbatched ones (printed; see the
/// assertion for what must hold).
#[test]
fn batched_sequences_match_serial_and_account_for_every_request() {
    let binary = Path::new(env!("CARGO_BIN_EXE_engine-llamacpp"));
    let load = testkit::load::small_load();
    let (_, results) = testkit::load::run_load(
        "llamacpp-load",
        vec![testkit::target(
            "llamacpp",
            binary,
            WeightFormat::Gguf,
            Dtype::Q4_1,
            &[],
        )],
        &["s2", "s3", "s5"],
        load.clone(),
    );
    testkit::load::assert_every_request_completed(&results, load.new_tokens);
    assert!(testkit::load::max_active(&results[0]) >= 4, "never batched");
    let diff = testkit::load::batched_vs_serial(&results);
    eprintln!("batched vs serial, prompts whose ids differ: {diff:?}");
    // S5 at 1024 tokens: beyond the old 4096-cell context's reach for nothing, but a real depth.
    let s5 = results[0]
        .report
        .scenarios
        .iter()
        .find(|s| s.id == "s5")
        .unwrap();
    assert_eq!(s5.prompts[0].prompt_tokens, 1024);
    assert_eq!(s5.prompts[0].generated_token_ids.len(), 8);
}

/// The quantization levels the volume derives from the shipped Q4_1 (the lab's own quantizer),
/// read by llama.cpp itself: each loads, runs and agrees with the reference within its gate. Its
/// agreement per level is the accuracy side of the quantization analysis.
#[test]
fn llamacpp_runs_every_derived_gguf_level_within_its_gate() {
    let binary = Path::new(env!("CARGO_BIN_EXE_engine-llamacpp"));
    let targets = [Dtype::Q8_0, Dtype::Q4_0, Dtype::F16]
        .into_iter()
        .map(|d| testkit::target("llamacpp", binary, WeightFormat::Gguf, d, &[]))
        .collect();
    let (_, results) = testkit::run_correctness("llamacpp-levels", targets);
    for c in testkit::assert_correct(&results) {
        eprintln!(
            "{}: top-1 agreement {}/{} ({:.1} %), greedy prefix {}/{}",
            c.target,
            c.top1_agree,
            c.positions,
            c.top1_agreement * 100.0,
            c.greedy_prefix_tokens,
            c.greedy_tokens
        );
    }
}
