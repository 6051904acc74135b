//! Runtime images: one per engine, assembled from the locally built release binary and exactly
//! the shared libraries it loads (no base image: nothing can be pulled), built with
//! `containers/engine.Containerfile`, labelled with their provenance.

use std::path::{Path, PathBuf};

use xshell::{cmd, Shell};

use super::runtime::Runtime;
use super::{CONTAINERFILE, ENGINE_PATH, IMAGE_REPO, MODELS_MOUNT, USER};
use crate::{Error, Result};

/// The files `ldd` says `binary` loads (the dynamic loader included), in ldd's order. A
/// missing library is an error naming it.
pub fn parse_ldd(binary: &Path, text: &str) -> Result<Vec<PathBuf>> {
    let mut libs = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.contains("statically linked") {
            continue;
        }
        if let Some((name, rest)) = line.split_once("=>") {
            let rest = rest.trim();
            if rest.starts_with("not found") {
                return Err(Error::msg(format!(
                    "{}: shared library {} not found (ldd)",
                    binary.display(),
                    name.trim()
                )));
            }
            // `libfoo.so => /path/libfoo.so (0x…)`; the vDSO has no file.
            if let Some(path) = rest
                .split_whitespace()
                .next()
                .filter(|p| p.starts_with('/'))
            {
                libs.push(PathBuf::from(path));
            }
        } else if let Some(path) = line
            .split_whitespace()
            .next()
            .filter(|p| p.starts_with('/'))
        {
            // The loader: `/lib64/ld-linux-x86-64.so.2 (0x…)`.
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

pub fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let sh = Shell::new().map_err(|e| Error::msg(e.to_string()))?;
    let text = cmd!(sh, "ldd {binary}")
        .quiet()
        .read()
        .map_err(|e| Error::msg(format!("ldd {}: {e}", binary.display())))?;
    parse_ldd(binary, &text)
}

/// What goes into one engine's image.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// The engine's package (`engine-candle`): the image name.
    pub package: String,
    pub binary: PathBuf,
    /// Provenance labels (git revision, engine version, binary sha256, …).
    pub labels: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// `localhost/inference-lab/engine-candle:<binary sha256 prefix>`.
    pub reference: String,
    /// The image ID: sha256 of the image configuration (`sha256:…`).
    pub id: String,
    pub size_bytes: u64,
}

/// Lays out the image's root file system in `rootfs`: the engine, its libraries at the paths
/// the loader expects, a passwd entry for the engine user, the model mount point and `/tmp`.
pub fn assemble_rootfs(spec: &ImageSpec, rootfs: &Path) -> Result<Vec<PathBuf>> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e| Error::io(&p, e)
    };
    if rootfs.exists() {
        std::fs::remove_dir_all(rootfs).map_err(io(rootfs))?;
    }
    let libs = shared_libraries(&spec.binary)?;
    let engine = rootfs.join(ENGINE_PATH.trim_start_matches('/'));
    std::fs::create_dir_all(engine.parent().expect("has a parent")).map_err(io(rootfs))?;
    std::fs::copy(&spec.binary, &engine).map_err(io(&spec.binary))?;
    for lib in &libs {
        let dest = rootfs.join(lib.strip_prefix("/").expect("ldd paths are absolute"));
        std::fs::create_dir_all(dest.parent().expect("has a parent")).map_err(io(&dest))?;
        // Follows symlinks: the file lands at the path the loader asks for.
        std::fs::copy(lib, &dest).map_err(io(lib))?;
    }
    let (uid, gid) = USER.split_once(':').expect("uid:gid");
    let etc = rootfs.join("etc");
    std::fs::create_dir_all(&etc).map_err(io(&etc))?;
    std::fs::write(
        etc.join("passwd"),
        format!("root:x:0:0::/:/nonexistent\nlab:x:{uid}:{gid}::/tmp:/nonexistent\n"),
    )
    .map_err(io(&etc))?;
    std::fs::write(etc.join("group"), format!("root:x:0:\nlab:x:{gid}:\n")).map_err(io(&etc))?;
    for dir in [MODELS_MOUNT.trim_start_matches('/'), "tmp"] {
        std::fs::create_dir_all(rootfs.join(dir)).map_err(io(rootfs))?;
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(rootfs.join("tmp"), std::fs::Permissions::from_mode(0o1777))
        .map_err(io(rootfs))?;
    Ok(libs)
}

/// Builds `spec`'s image with `engine` from `containers/engine.Containerfile`, in `work_dir`
/// (a build context of its own). The tar is written with fixed owners and times, and podman
/// builds with `--timestamp 0` (containers/runtimes.json), so the same binary gives the same
/// image ID.
pub fn build_image(root: &Path, rt: &Runtime, spec: &ImageSpec, work_dir: &Path) -> Result<Image> {
    let sh = Shell::new().map_err(|e| Error::msg(e.to_string()))?;
    let rootfs = work_dir.join("rootfs");
    assemble_rootfs(spec, &rootfs)?;
    let tar = work_dir.join("rootfs.tar");
    cmd!(
        sh,
        "tar --numeric-owner --owner=0 --group=0 --mtime=@0 --sort=name -C {rootfs} -cf {tar} ."
    )
    .quiet()
    .run()
    .map_err(|e| Error::msg(format!("packing {}: {e}", rootfs.display())))?;
    let containerfile = root.join(CONTAINERFILE);
    let sha = crate::sha256_file(&spec.binary)?;
    let reference = format!("{IMAGE_REPO}/{}:{}", spec.package, &sha[..16]);
    let mut args: Vec<String> = vec!["build".into()];
    args.extend(rt.settings.build_args.iter().cloned());
    for (k, v) in &spec.labels {
        args.push("--label".into());
        args.push(format!("{k}={v}"));
    }
    args.extend([
        "--tag".into(),
        reference.clone(),
        "--file".into(),
        containerfile.display().to_string(),
        work_dir.display().to_string(),
    ]);
    let out = rt
        .cmd(&sh, &args)
        .quiet()
        .ignore_status()
        .output()
        .map_err(|e| Error::msg(format!("{} build: {e}", rt.program())))?;
    if !out.status.success() {
        return Err(Error::msg(format!(
            "{} build of {} failed: {}",
            rt.program(),
            spec.package,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let _ = std::fs::remove_dir_all(&rootfs);
    let _ = std::fs::remove_file(&tar);
    inspect(rt, &reference)
}

/// `image inspect --format <format>` of a local image: its output, or one error naming it.
fn inspect_format(rt: &Runtime, reference: &str, format: &str) -> Result<String> {
    let sh = Shell::new().map_err(|e| Error::msg(e.to_string()))?;
    let args: Vec<String> = vec![
        "image".into(),
        "inspect".into(),
        "--format".into(),
        format.into(),
        reference.into(),
    ];
    let out = rt
        .cmd(&sh, &args)
        .quiet()
        .ignore_status()
        .output()
        .map_err(|e| Error::msg(format!("inspecting image {reference}: {e}")))?;
    if !out.status.success() {
        return Err(Error::msg(format!(
            "{} has no local image {reference}",
            rt.program()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The ID and size of a local image.
pub fn inspect(rt: &Runtime, reference: &str) -> Result<Image> {
    let out = inspect_format(rt, reference, "{{.Id}} {{.Size}}")?;
    let mut it = out.split_whitespace();
    let id = it.next().unwrap_or_default();
    let size = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let id = if id.starts_with("sha256:") {
        id.to_string()
    } else {
        format!("sha256:{id}")
    };
    Ok(Image {
        reference: reference.into(),
        id,
        size_bytes: size,
    })
}

/// The provenance labels of an engine image.
/// The labels of a local image (`{}` when it has none).
pub fn image_labels(
    rt: &Runtime,
    reference: &str,
) -> Result<std::collections::BTreeMap<String, String>> {
    let text = inspect_format(rt, reference, "{{json .Config.Labels}}")?;
    let text = text.trim();
    if text.is_empty() || text == "null" {
        return Ok(Default::default());
    }
    serde_json::from_str(text)
        .map_err(|e| Error::msg(format!("labels of image {reference}: {e}: {text}")))
}

pub fn labels(
    root: &Path,
    package: &str,
    binary: &Path,
    prov: &lab_results::provenance::Provenance,
) -> Result<Vec<(String, String)>> {
    Ok(vec![
        ("org.opencontainers.image.title".into(), package.into()),
        (
            "org.opencontainers.image.revision".into(),
            prov.git_rev.clone(),
        ),
        ("lab.git.dirty".into(), prov.git_dirty.to_string()),
        (
            "lab.engine.version".into(),
            crate::provenance::engine_version(root, package),
        ),
        ("lab.binary.sha256".into(), crate::sha256_file(binary)?),
        ("lab.rustc".into(), prov.rustc.clone()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_becomes_the_list_of_files_to_copy() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibgomp.so.1 => /lib/x86_64-linux-gnu/libgomp.so.1 (0x00007f1)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f2)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f3)\n";
        let libs = parse_ldd(Path::new("e"), text).unwrap();
        assert_eq!(
            libs,
            [
                "/lib/x86_64-linux-gnu/libgomp.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
        let err = parse_ldd(
            Path::new("engine-x"),
            "\tlibcuda.so.1 => not found\n\tlibc.so.6 => /lib/libc.so.6 (0x1)\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("engine-x") && err.contains("libcuda.so.1"),
            "{err}"
        );
        assert!(parse_ldd(Path::new("e"), "\tstatically linked\n")
            .unwrap()
            .is_empty());
    }
}
