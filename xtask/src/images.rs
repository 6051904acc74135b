//! `cargo xtask images`: one OCI image per Rust engine, from its release binary and exactly the
//! shared libraries it loads (`containers/engine.Containerfile`; nothing is pulled). `bench`
//! builds the same images itself when it runs engines in containers; this command builds them
//! ahead of time and shows what they contain.

use anyhow::{bail, Context, Result};
use lab_harness::catalog::{self, EngineKind};
use lab_harness::{container, provenance};

use crate::paths;

#[derive(clap::Args)]
pub struct Flags {
    /// Engine (`candle`); repeatable; default: every engine that has an image.
    #[arg(long)]
    pub engine: Vec<String>,
    /// `auto` (podman, else docker), `podman` or `docker`.
    #[arg(long, default_value = "auto")]
    pub runtime: String,
    /// Use the engine binaries already built (skip `cargo build`).
    #[arg(long)]
    pub no_build: bool,
}

pub fn run(flags: Flags) -> Result<()> {
    let root = paths::root();
    let engine = match container::runtime_kind(&flags.runtime)? {
        Some(container::RuntimeKind::Native) => bail!("--runtime native builds no images"),
        Some(rt) => container::probe(&root, rt)
            .map_err(|why| anyhow::anyhow!("--runtime {}: {why}", rt.name()))?,
        None => {
            let (e, why) = container::detect(&root);
            e.ok_or_else(|| {
                anyhow::anyhow!("cannot build images: {why}; install podman (and runc) or docker")
            })?
        }
    };
    let mut targets = catalog::select_targets(&flags.engine)?;
    for t in targets.iter().filter(|t| t.kind == EngineKind::Python) {
        eprintln!(
            "{}: no image (the Python engine's pinned ~5 GB environment runs natively; bench says so in its results)",
            t.label()
        );
    }
    targets.retain(|t| t.kind == EngineKind::Rust);
    let mut packages: Vec<&'static str> = targets.iter().map(|t| t.package).collect();
    packages.sort();
    packages.dedup();
    if packages.is_empty() {
        bail!("no selected engine has an image");
    }
    if !flags.no_build {
        crate::bench::build_packages(&packages, false)?;
    }
    let prov = provenance::collect(
        &root,
        lab_results::provenance::rfc3339(lab_results::provenance::now_unix()),
    );
    let release = paths::target_dir().join("release");
    let mut rows = Vec::new();
    for package in packages {
        let binary_name = targets
            .iter()
            .find(|t| t.package == package)
            .map(|t| t.binary)
            .expect("package comes from targets");
        let binary = release.join(binary_name);
        if !binary.exists() {
            bail!(
                "{package}: {} is missing (build it, or drop --no-build)",
                binary.display()
            );
        }
        eprintln!("{package}: building its image with {}", engine.version);
        let spec = container::ImageSpec {
            package: package.into(),
            binary: binary.clone(),
            labels: container::labels(&root, package, &binary, &prov)?,
        };
        let work = paths::target_dir().join("lab-images").join(package);
        std::fs::create_dir_all(&work).with_context(|| work.display().to_string())?;
        let libs = container::shared_libraries(&binary)?;
        let image = container::build_image(&root, &engine, &spec, &work)?;
        rows.push((package, image, libs.len()));
    }
    println!("| engine | image | ID | size | shared libraries |");
    println!("|---|---|---|---:|---:|");
    for (package, image, libs) in rows {
        println!(
            "| {package} | {} | {} | {:.1} MB | {libs} |",
            image.reference,
            &image.id[..19],
            image.size_bytes as f64 / 1e6
        );
    }
    Ok(())
}
