//! Engines in containers (podman or docker; CI installs podman): the sandbox holds, and a run in
//! a container records the image it ran.

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use lab_results::results::TargetStatus;
use lab_testkit as testkit;

use super::{mock, plan};

fn mock_in_container(
    engine: &lab_harness::container::Runtime,
    mode: &str,
) -> lab_harness::PreparedTarget {
    let mut t = mock(lab_protocol::Dtype::F32, mode);
    t.target.package = "mock-engine";
    testkit::in_container(engine, t)
}

/// The engine runs as the unprivileged image user, cannot create a file in the model volume
/// (mounted read-only), has no network interface but loopback, and cannot connect out.
#[test]
fn an_engine_container_cannot_write_the_volume_or_reach_the_network() {
    let Some(engine) = testkit::container_runtime() else {
        return;
    };
    let t = mock_in_container(&engine, "probe");
    let p = plan("probe", vec![t], Duration::from_secs(120));
    let (m, _) = lab_harness::bench(&p, &AtomicBool::new(false)).unwrap();
    assert_eq!(m.targets[0].status, TargetStatus::Failed);
    let probe = m.targets[0].error.clone().unwrap();
    eprintln!("{probe}");
    assert!(probe.contains("probe: uid=10001;"), "{probe}");
    assert!(
        probe.contains("write /models/smollm2-135m/.probe-write: Read-only file system"),
        "{probe}"
    );
    assert!(probe.contains("interfaces: lo;"), "{probe}");
    assert!(
        probe.contains("connect 192.0.2.1:80: Network is unreachable"),
        "{probe}"
    );
    assert!(!testkit::models_dir()
        .join("smollm2-135m/.probe-write")
        .exists());
}

/// S1 through the container runtime: the result names the runtime and the image ID, and
/// building the image again from the same binary gives the same ID.
#[test]
fn a_run_in_a_container_records_its_image() {
    let Some(engine) = testkit::container_runtime() else {
        return;
    };
    let t = mock_in_container(&engine, "ok");
    let id = t.image_digest.clone().unwrap();
    assert!(id.starts_with("sha256:") && id.len() == 71, "{id}");
    assert_eq!(t.runtime.to_string(), engine.kind.name());
    let name = container_name(&t);
    let p = plan("container-ok", vec![t], Duration::from_secs(120));
    let (m, res) = lab_harness::bench(&p, &AtomicBool::new(false)).unwrap();
    assert_eq!(m.targets[0].status, TargetStatus::Ok, "{:?}", m.targets[0]);
    // Run without `--rm` (the harness reads its OOM flag), the container is still removed.
    assert!(
        containers_named(&engine, &name).trim().is_empty(),
        "{name} left behind"
    );
    assert_eq!(res[0].image_digest.as_deref(), Some(id.as_str()));
    // The image's size, as the runtime reports it, is recorded with the binary's.
    let f = res[0].footprint.clone().expect("a footprint");
    assert!(
        f.image_bytes.is_some_and(|b| b >= f.binary_bytes.unwrap()),
        "{f:?}"
    );
    assert_eq!(
        res[0].runtime.as_ref().map(|r| r.to_string()).as_deref(),
        Some(engine.kind.name())
    );
    assert_eq!(res[0].model.name, "smollm2-135m");
    assert!(!res[0].report.scenarios[0].prompts[0]
        .generated_token_ids
        .is_empty());

    let again = mock_in_container(&engine, "ok");
    assert_eq!(
        again.image_digest.as_deref(),
        Some(id.as_str()),
        "image IDs differ"
    );
}

/// A container that outlives its client is removed when the engine is killed (timeout).
#[test]
fn a_hung_engine_container_is_killed_and_removed() {
    let Some(engine) = testkit::container_runtime() else {
        return;
    };
    let t = mock_in_container(&engine, "hang");
    let name = t
        .launch
        .args
        .iter()
        .skip_while(|a| *a != "--name")
        .nth(1)
        .unwrap()
        .clone();
    let p = plan("container-hang", vec![t], Duration::from_secs(5));
    let (m, _) = lab_harness::bench(&p, &AtomicBool::new(false)).unwrap();
    assert_eq!(m.targets[0].status, TargetStatus::Failed);
    assert!(m.targets[0].error.as_deref().unwrap().contains("timed out"));
    let sh = xshell::Shell::new().unwrap();
    let rt = engine.kind.name();
    let g = &engine.settings.global_args;
    let left = xshell::cmd!(sh, "{rt} {g...} ps --all --quiet --filter name={name}")
        .read()
        .unwrap();
    assert!(left.trim().is_empty(), "container {name} still exists");
}

/// `--image ENGINE=REF`: an existing image (e.g. the flake's, after `podman load`) runs as it is
/// and is recorded by ID; a reference that does not exist is one error naming it.
#[test]
fn a_prebuilt_image_runs_as_given_and_a_missing_one_is_named() {
    let Some(engine) = testkit::container_runtime() else {
        return;
    };
    let built = mock_in_container(&engine, "ok");
    let id = built.image_digest.clone().unwrap();
    let root = testkit::root();
    let prov = lab_harness::provenance::collect(&root, "t".into());
    let model_dir = testkit::models_dir().join("smollm2-135m");
    let host_sha = lab_harness::sha256_file(&mock(lab_protocol::Dtype::F32, "ok").binary).unwrap();
    let prepare = |reference: &str| {
        let mut t = mock(lab_protocol::Dtype::F32, "ok");
        t.target.package = "mock-engine";
        // No host binary: a prebuilt image carries its engine.
        t.binary = std::path::PathBuf::from("/nonexistent/mock-engine");
        t.launch.program = lab_harness::container::ENGINE_PATH.into();
        lab_harness::container::containerize(
            &root,
            &engine,
            t,
            &model_dir,
            &std::env::temp_dir(),
            &lab_harness::container::Sandbox::default(),
            &prov,
            Some(reference),
        )
    };
    // The built image under its tag: what `podman load` of a flake image gives.
    let sh = xshell::Shell::new().unwrap();
    let rt = engine.kind.name();
    let g = &engine.settings.global_args;
    let tag = "localhost/inference-lab/mock-engine:prebuilt-test";
    xshell::cmd!(sh, "{rt} {g...} tag {id} {tag}")
        .run()
        .unwrap();
    let t = prepare(tag).unwrap();
    assert_eq!(t.image_digest.as_deref(), Some(id.as_str()));
    let ran = t.runtime.to_string();
    assert!(ran.contains("prebuilt image"), "{ran}");
    // Provenance from the image's labels (this image was built by the lab, so it has them).
    assert_eq!(t.binary_sha256.as_deref(), Some(host_sha.as_str()));
    assert!(ran.contains("built by the lab's xtask"), "{ran}");
    let p = plan("container-prebuilt", vec![t], Duration::from_secs(120));
    let (m, res) = lab_harness::bench(&p, &AtomicBool::new(false)).unwrap();
    assert_eq!(m.targets[0].status, TargetStatus::Ok, "{:?}", m.targets[0]);
    assert_eq!(res[0].engine_binary_sha256, host_sha);
    assert_eq!(res[0].engine_binary, format!("image {tag}"));

    let e = prepare("localhost/inference-lab/no-such-image:1")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("--image localhost/inference-lab/no-such-image:1"),
        "{e}"
    );
}

/// The name `--name` gives the engine's container.
fn container_name(t: &lab_harness::PreparedTarget) -> String {
    t.launch
        .args
        .iter()
        .skip_while(|a| *a != "--name")
        .nth(1)
        .unwrap()
        .clone()
}

fn containers_named(engine: &lab_harness::container::Runtime, name: &str) -> String {
    let sh = xshell::Shell::new().unwrap();
    let rt = engine.kind.name();
    let g = &engine.settings.global_args;
    xshell::cmd!(sh, "{rt} {g...} ps --all --quiet --filter name={name}")
        .read()
        .unwrap()
}

/// An engine container runs under a memory and a pids limit (recorded in its result): one that
/// takes more memory is killed by the kernel and recorded as out of memory, one that starts too
/// many threads is refused them, a healthy one after them is unaffected, and no container is
/// left behind by any of them.
#[test]
fn container_limits_hold_and_are_recorded() {
    let Some(engine) = testkit::container_runtime() else {
        return;
    };
    let sandbox = lab_harness::container::Sandbox {
        memory_bytes: Some(256 << 20),
        pids: Some(64),
        ..Default::default()
    };
    let limited = |tag: &str, fault: Option<&str>| {
        let mut t = mock(lab_protocol::Dtype::F32, "ok");
        t.target.package = "mock-engine";
        t.label_suffix = format!("@{tag}");
        if let Some(f) = fault {
            t.launch
                .env
                .push(("MOCK_ENGINE_FAULT_AT".into(), format!("3:{f}")));
        }
        testkit::in_container_with(&engine, t, &sandbox)
    };
    let targets = vec![
        limited("oom", Some("oom")),
        limited("threads", Some("threads")),
        limited("ok", None),
    ];
    let names: Vec<String> = targets.iter().map(container_name).collect();
    let p = plan("container-limits", targets, Duration::from_secs(120));
    let (m, res) = lab_harness::bench(&p, &AtomicBool::new(false)).unwrap();
    let err = |i: usize| m.targets[i].error.clone().unwrap_or_default();
    eprintln!("{}\n{}", err(0), err(1));
    assert_eq!(m.targets[0].status, TargetStatus::Failed);
    // Confirmed by the runtime: its OOM flag, or the `oom` file its monitor writes into the
    // client's working directory (podman 4 with runc on cgroup v1 sets no flag).
    assert!(
        err(0).contains("out of memory: killed by the container's memory limit (limit: memory 256 MiB (container cgroup, no swap), pids 64)"),
        "{}",
        err(0)
    );
    assert!(
        !std::path::Path::new("oom").exists(),
        "nothing is written into the working directory"
    );
    assert_eq!(m.targets[1].status, TargetStatus::Failed);
    assert!(err(1).contains("cannot start thread"), "{}", err(1));
    assert_eq!(m.targets[2].status, TargetStatus::Ok, "{}", err(2));
    let limits = res.last().unwrap().limits.clone().unwrap();
    assert_eq!(limits, sandbox.limits());
    for name in &names {
        assert!(
            containers_named(&engine, name).trim().is_empty(),
            "container {name} still exists"
        );
    }
}
