//! The flake, checked where Nix cannot fetch anything: it parses (`nix-instantiate --parse`,
//! Debian's nix-bin), its inputs evaluate and match the lock, the lock pins every input with a
//! revision and a narHash, and its engine lists, toolchain and versions follow the workspace.
//! `nix flake check` / `nix build` need a machine with Nix and network (see README.md).

use std::collections::BTreeSet;

use serde_json::Value;

use crate::paths;

fn read(rel: &str) -> String {
    std::fs::read_to_string(paths::root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// `nix-instantiate` when installed; without it the test fails if `LAB_REQUIRE_NIX=1` (CI
/// installs nix-bin and sets it), else it says loudly that it is skipped.
///
/// The first evaluation on a machine creates Nix's state directories; several tests doing that
/// at once race (`creating symlink … gcroots/profiles … File exists`, seen on a fresh machine),
/// so one evaluation runs first, once, and every test waits for it.
fn nix_instantiate() -> Option<&'static str> {
    static READY: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let installed = *READY.get_or_init(|| {
        let sh = paths::shell().unwrap();
        let found = xshell::cmd!(sh, "nix-instantiate --version")
            .quiet()
            .ignore_stderr()
            .read()
            .is_ok();
        if found {
            // Evaluating anything initialises the state; its own failure shows in the tests.
            let _ = xshell::cmd!(sh, "nix-instantiate --eval --expr 1")
                .quiet()
                .ignore_stderr()
                .read();
        }
        found
    });
    if installed {
        return Some("nix-instantiate");
    }
    assert!(
        std::env::var("LAB_REQUIRE_NIX").as_deref() != Ok("1"),
        "LAB_REQUIRE_NIX=1 but nix-instantiate is not installed"
    );
    eprintln!(
        "SKIPPED (flake evaluation): nix-instantiate is not installed (apt-get install nix-bin)"
    );
    None
}

/// The names in `name = [ "a" "b" ];` of flake.nix.
fn nix_list(flake: &str, name: &str) -> BTreeSet<String> {
    let start = flake
        .find(&format!("{name} = ["))
        .unwrap_or_else(|| panic!("flake.nix has no `{name} = [ … ];`"));
    let rest = &flake[start..];
    let body = &rest[rest.find('[').unwrap() + 1..rest.find(']').unwrap()];
    body.split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

#[test]
fn the_flake_parses_and_its_inputs_match_the_lock() {
    let Some(nix) = nix_instantiate() else {
        return;
    };
    let sh = paths::shell().unwrap();
    let flake = paths::root().join("flake.nix");
    xshell::cmd!(sh, "{nix} --parse {flake}")
        .quiet()
        .ignore_stdout()
        .run()
        .expect("flake.nix does not parse");
    // The inputs are plain data: evaluate them without fetching anything.
    let expr = format!("(import {}).inputs", flake.display());
    let json = xshell::cmd!(sh, "{nix} --eval --strict --json -E {expr}")
        .quiet()
        .read()
        .expect("flake.nix inputs do not evaluate");
    let inputs: Value = serde_json::from_str(&json).unwrap();
    let lock: Value = serde_json::from_str(&read("flake.lock")).unwrap();
    let root_inputs = &lock["nodes"]["root"]["inputs"];
    let names =
        |v: &Value| -> BTreeSet<String> { v.as_object().unwrap().keys().cloned().collect() };
    assert_eq!(
        names(&inputs),
        names(root_inputs),
        "flake.nix inputs vs flake.lock"
    );
    for (name, input) in inputs.as_object().unwrap() {
        let node = &lock["nodes"][root_inputs[name].as_str().unwrap()];
        let url = input["url"].as_str().unwrap();
        let o = &node["original"];
        let mut want = format!(
            "github:{}/{}",
            o["owner"].as_str().unwrap(),
            o["repo"].as_str().unwrap()
        );
        if let Some(r) = o["ref"].as_str() {
            want = format!("{want}/{r}");
        }
        assert_eq!(
            url, want,
            "input {name}: flake.nix url vs the lock's original"
        );
        // `follows` in flake.nix appear as path lists in the lock.
        if let Some(f) = input["inputs"].as_object() {
            for (sub, spec) in f {
                let follows = spec["follows"].as_str().unwrap();
                assert_eq!(
                    node["inputs"][sub],
                    serde_json::json!([follows]),
                    "input {name}.{sub} follows {follows}"
                );
            }
        }
    }
}

#[test]
fn the_lock_pins_every_input_with_a_revision_and_a_nar_hash() {
    let lock: Value = serde_json::from_str(&read("flake.lock")).unwrap();
    assert_eq!(lock["version"], 7);
    let nodes = lock["nodes"].as_object().unwrap();
    let root = lock["root"].as_str().unwrap();
    let mut seen = BTreeSet::new();
    let mut todo = vec![root.to_string()];
    while let Some(n) = todo.pop() {
        if !seen.insert(n.clone()) {
            continue;
        }
        let node = &nodes[&n];
        for (name, target) in node["inputs"].as_object().into_iter().flatten() {
            match target {
                Value::String(s) => todo.push(s.clone()),
                // `follows`: a path of input names from the root; it must resolve.
                Value::Array(path) => {
                    let mut at = root.to_string();
                    for p in path {
                        at = nodes[&at]["inputs"][p.as_str().unwrap()]
                            .as_str()
                            .unwrap_or_else(|| {
                                panic!("{n}.{name}: follows {path:?} does not resolve")
                            })
                            .to_string();
                    }
                }
                _ => panic!("{n}.{name}: bad input {target}"),
            }
        }
        if n == root {
            continue;
        }
        let l = &node["locked"];
        assert_eq!(l["type"], "github", "{n}");
        let rev = l["rev"].as_str().unwrap_or("");
        assert!(
            rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit()),
            "{n}: rev {rev:?}"
        );
        let nar = l["narHash"].as_str().unwrap_or("");
        let b64 = nar.strip_prefix("sha256-").unwrap_or("");
        assert!(
            b64.len() == 44
                && b64.ends_with('=')
                && b64[..43]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/'),
            "{n}: narHash {nar:?}"
        );
        assert!(
            l["lastModified"].as_u64().unwrap_or(0) > 1_700_000_000,
            "{n}"
        );
        assert!(l["owner"].is_string() && l["repo"].is_string(), "{n}");
        assert!(node["original"].is_object(), "{n}: no original");
    }
    let unreachable: Vec<_> = nodes.keys().filter(|k| !seen.contains(*k)).collect();
    assert!(
        unreachable.is_empty(),
        "unreachable lock nodes: {unreachable:?}"
    );
    // rust-overlay follows our nixpkgs: one nixpkgs in the lock, not two.
    let nixpkgs = nodes
        .values()
        .filter(|n| n["locked"]["repo"] == "nixpkgs")
        .count();
    assert_eq!(nixpkgs, 1, "more than one nixpkgs is locked");
}

#[test]
fn the_flake_has_a_package_and_an_image_for_every_engine() {
    let flake = read("flake.nix");
    let root = paths::root();
    let mut rust = BTreeSet::new();
    let mut cuda = BTreeSet::new();
    let mut python = BTreeSet::new();
    for e in std::fs::read_dir(root.join("engines")).unwrap() {
        let dir = e.unwrap().path();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        if let Ok(manifest) = std::fs::read_to_string(dir.join("Cargo.toml")) {
            if manifest
                .lines()
                .any(|l| l.trim_start().starts_with("cuda ="))
            {
                cuda.insert(name.clone());
            }
            rust.insert(name);
        } else if dir.join("requirements.txt").exists() {
            python.insert(name);
        } else {
            panic!("engines/{name}: neither a Cargo package nor a Python package");
        }
    }
    assert_eq!(
        nix_list(&flake, "rustEngines"),
        rust,
        "flake.nix rustEngines vs engines/"
    );
    assert_eq!(
        nix_list(&flake, "cudaEngines"),
        cuda,
        "flake.nix cudaEngines vs the engines with a `cuda` feature"
    );
    assert_eq!(
        nix_list(&flake, "pythonEngines"),
        python,
        "flake.nix pythonEngines vs engines/"
    );
    // The harness knows the same engines (the catalog is what bench and images use).
    let catalog: BTreeSet<String> = lab_harness::catalog::targets()
        .iter()
        .map(|t| t.package.to_string())
        .collect();
    let all: BTreeSet<String> = rust.union(&python).cloned().collect();
    assert_eq!(catalog, all, "catalog engines vs engines/");
    // Images and packages are generated from those lists for every engine.
    for needle in [
        "forEngines rustEngines (n: mkEngine { name = n; })",
        "forEngines cudaEngines (n: mkEngine { name = n; cudaSupport = true; })",
        "forEngines rustEngines (n: rustImage n false)",
        "forEngines cudaEngines (n: rustImage n true)",
        "engine-pytorch-image = pytorchImage false;",
    ] {
        assert!(flake.contains(needle), "flake.nix lost `{needle}`");
    }
    assert!(
        python.len() == 1 && python.contains("engine-pytorch"),
        "a new Python engine needs its image in flake.nix"
    );
}

#[test]
fn the_flake_uses_the_workspace_toolchain_cuda_12_and_the_python_stack() {
    let flake = read("flake.nix");
    assert!(flake.contains("pkgs.rust-bin.fromRustupToolchainFile ./rust-toolchain.toml"));
    let channel = toml_string(&read("rust-toolchain.toml"), "channel");
    let rust_version = toml_string(&read("Cargo.toml"), "rust-version");
    assert!(
        channel.starts_with(&rust_version),
        "rust-toolchain.toml {channel} vs Cargo.toml rust-version {rust_version}"
    );
    assert!(flake.contains(
        "(builtins.fromTOML (builtins.readFile ./Cargo.toml)).workspace.package.version"
    ));
    assert!(flake.contains("cargoLock.lockFile = ./Cargo.lock;"));
    assert!(flake.contains("cuda = pkgsCuda.cudaPackages_12;"));
    assert!(flake.contains("cudnn"));
    assert!(
        !flake.contains("allowUnfree = true"),
        "unfree must stay limited to CUDA/cuDNN"
    );
    // The Python engine's direct dependencies are in the flake's Python too.
    let requirements = read("engines/engine-pytorch/requirements.txt");
    let python_list = nix_list_after(&flake, "pythonFor = p: p.python3.withPackages");
    for pkg in [
        "torch",
        "transformers",
        "safetensors",
        "tokenizers",
        "gguf",
        "accelerate",
        "numpy",
        "jsonschema",
    ] {
        assert!(
            requirements
                .lines()
                .any(|l| l.starts_with(&format!("{pkg}=="))),
            "{pkg} is not pinned in requirements.txt"
        );
        assert!(
            python_list.contains(pkg),
            "{pkg} missing from the flake's Python"
        );
    }
}

/// The first `key = "value"` line of a TOML file, unquoted.
fn toml_string(text: &str, key: &str) -> String {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no `{key} = …` line"))
        .trim_matches('"')
        .to_string()
}

/// The bare words of the first `[ … ]` after `marker`.
fn nix_list_after(flake: &str, marker: &str) -> BTreeSet<String> {
    let rest = &flake[flake.find(marker).unwrap_or_else(|| panic!("no {marker}"))..];
    let body = &rest[rest.find('[').unwrap() + 1..rest.find(']').unwrap()];
    body.split_whitespace().map(str::to_string).collect()
}

#[test]
fn nothing_is_required_of_the_host_but_the_flake_inputs() {
    // A flake that reads the environment in pure evaluation would not be reproducible: the only
    // getEnv is the opt-in CUDA_COMPUTE_CAP (honoured with --impure, 90 otherwise).
    let flake = read("flake.nix");
    assert_eq!(flake.matches("builtins.getEnv").count(), 1);
    assert!(flake.contains("if fromEnv == \"\" then \"90\" else fromEnv"));
}

/// nix/cuda.nix, evaluated (it needs no nixpkgs): the unfree predicate accepts exactly the
/// NVIDIA licences PyTorch with CUDA needs, as nixpkgs names them, and compute capabilities of
/// three digits (Blackwell) parse.
#[test]
fn the_cuda_licence_predicate_and_compute_capabilities_evaluate() {
    let Some(nix) = nix_instantiate() else {
        return;
    };
    let sh = paths::shell().unwrap();
    let file = paths::root().join("nix/cuda.nix");
    // Licence records shaped as nixpkgs' (`shortName`, `free`): the CUDA package set's NVIDIA
    // licences, nixpkgs' generic unfree ones, and a free one.
    let expr = format!(
        r#"let
          c = import {};
          nv = s: {{ shortName = s; fullName = s; free = false; }};
          pkg = ls: {{ meta.license = ls; }};
        in {{
          accepted = map (s: c.licensed (pkg (nv s))) [ "CUDA EULA" "cuDNN EULA" "cuSPARSELt EULA" ];
          refused = map (s: c.licensed (pkg (nv s))) [ "cuTENSOR EULA" "TensorRT EULA" "NVidia OptiX EULA" "unfree" "unfreeRedistributable" ];
          free = c.licensed (pkg {{ shortName = "MIT"; free = true; }});
          noMeta = c.licensed {{ }};
          mixed = c.licensed (pkg [ (nv "CUDA EULA") (nv "unfree") ]);
          torchCuda = c.licensed (pkg [ (nv "CUDA EULA") (nv "cuDNN EULA") (nv "cuSPARSELt EULA") {{ shortName = "bsd3"; free = true; }} ]);
          caps = map c.capability [ "80" "86" "89" "90" "100" "120" ];
        }}"#,
        file.display()
    );
    let json = xshell::cmd!(sh, "{nix} --eval --strict --json -E {expr}")
        .quiet()
        .read()
        .expect("nix/cuda.nix evaluates");
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["accepted"], serde_json::json!([true, true, true]), "{v}");
    assert_eq!(
        v["refused"],
        serde_json::json!([false, false, false, false, false]),
        "{v}"
    );
    assert_eq!(
        (&v["free"], &v["noMeta"], &v["mixed"]),
        (&Value::Bool(true), &Value::Bool(true), &Value::Bool(false))
    );
    assert_eq!(
        v["torchCuda"],
        Value::Bool(true),
        "PyTorch with CUDA's licences"
    );
    assert_eq!(
        v["caps"],
        serde_json::json!(["8.0", "8.6", "8.9", "9.0", "10.0", "12.0"])
    );
    // A malformed capability is one error naming the variable.
    let bad = format!("(import {}).capability \"9a\"", file.display());
    let out = xshell::cmd!(sh, "{nix} --eval --strict -E {bad}")
        .quiet()
        .ignore_status()
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("CUDA_COMPUTE_CAP=9a: expected"));
    // The flake uses them, and `cccl` under its new name when nixpkgs has it.
    let flake = read("flake.nix");
    assert!(flake.contains("cudaLib = import ./nix/cuda.nix;"));
    assert!(flake.contains("allowUnfreePredicate = cudaLicensed;"));
    assert!(flake.contains("(cuda.cccl or cuda.cuda_cccl)"));
}

/// Every output of the flake evaluates to a derivation (licence checks, rust-overlay's toolchain
/// from rust-toolchain.toml, Cargo.lock) against the nixpkgs stand-in of `nix/eval/`: needs a Nix
/// of at least 2.18 and the pinned rust-overlay and nixpkgs' lib as source trees, given as
/// `LAB_NIX_EVAL="<nix> <rust-overlay dir> <nixpkgs.lib dir>"` (nix/eval/run.sh says how to get
/// them). Without it the test says it is skipped; Debian bookworm's nix-bin (2.8) cannot
/// evaluate nixpkgs.
#[test]
fn every_flake_output_evaluates_against_the_nixpkgs_stand_in() {
    let Ok(spec) = std::env::var("LAB_NIX_EVAL") else {
        eprintln!("SKIPPED (flake outputs): set LAB_NIX_EVAL=\"<nix >= 2.18> <rust-overlay dir> <nixpkgs.lib dir>\" (see nix/eval/run.sh)");
        return;
    };
    let parts: Vec<&str> = spec.split_whitespace().collect();
    assert_eq!(
        parts.len(),
        3,
        "LAB_NIX_EVAL: expected three paths, got `{spec}`"
    );
    let sh = paths::shell().unwrap();
    let script = paths::root().join("nix/eval/run.sh");
    let (nix, overlay, nixlib) = (parts[0], parts[1], parts[2]);
    let json = xshell::cmd!(sh, "{script} {nix} {overlay} {nixlib}")
        .quiet()
        .ignore_stderr()
        .read()
        .expect("the flake's outputs evaluate");
    let v: Value = serde_json::from_str(&json).unwrap();
    let flake = read("flake.nix");
    let rust = nix_list(&flake, "rustEngines");
    let cuda = nix_list(&flake, "cudaEngines");
    let packages = v["packages"].as_object().unwrap();
    let mut want: BTreeSet<String> = [
        "default",
        "xtask",
        "engine-pytorch-image",
        "engine-pytorch-cuda-image",
    ]
    .map(String::from)
    .into();
    for e in &rust {
        want.insert(e.clone());
        want.insert(format!("{e}-image"));
    }
    for e in &cuda {
        want.insert(format!("{e}-cuda"));
        want.insert(format!("{e}-cuda-image"));
    }
    assert_eq!(packages.keys().cloned().collect::<BTreeSet<_>>(), want);
    let drv = |x: &Value| {
        x.as_str()
            .is_some_and(|s| s.starts_with("/nix/store/") && s.ends_with(".drv"))
    };
    assert!(packages.values().all(drv), "{v}");
    assert_eq!(v["checks"].as_object().unwrap().len(), rust.len());
    assert!(drv(&v["devShell"]), "{v}");
}
