//! `cargo xtask merge --out DIR RUN...`: one cross-hardware report of runs made on different
//! machines (e.g. the GPU fleet workflow's runners). Each run is copied whole under
//! `DIR/runs/<run-id>/`, keeping its provenance and raw files; `DIR/report.md` puts every
//! machine's numbers side by side (`lab_report::merged`); `DIR/merged.json` lists the
//! runs.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use lab_report::merged::{self, MergedRun};
use lab_results::results;

#[derive(clap::Args)]
pub struct Flags {
    /// Where the merged report goes (must not exist yet).
    #[arg(long)]
    pub out: PathBuf,
    /// Run directories (`results/<run-id>`), from any machines.
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
}

pub fn run(flags: Flags) -> Result<()> {
    merge(&flags.out, &flags.runs)?;
    eprintln!("merged report: {}", flags.out.join("report.md").display());
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| to.display().to_string())?;
    for e in std::fs::read_dir(from).with_context(|| from.display().to_string())? {
        let e = e?;
        let dest = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &dest)?;
        } else {
            std::fs::copy(e.path(), &dest)
                .with_context(|| format!("copying {}", e.path().display()))?;
        }
    }
    Ok(())
}

pub fn merge(out: &Path, dirs: &[PathBuf]) -> Result<String> {
    if out.exists() {
        bail!(
            "--out {}: already exists (choose a new directory)",
            out.display()
        );
    }
    let mut loaded = Vec::new();
    for d in dirs {
        let (m, r) = results::load_run(d)?;
        if loaded
            .iter()
            .any(|(_, lm, _): &(PathBuf, results::RunManifest, _)| lm.run_id == m.run_id)
        {
            bail!("{}: run `{}` is given twice", d.display(), m.run_id);
        }
        loaded.push((d.clone(), m, r));
    }
    let runs: Vec<MergedRun> = loaded
        .iter()
        .map(|(_, m, r)| MergedRun {
            manifest: m,
            results: r,
        })
        .collect();
    let report = merged::render(&runs);
    for (d, m, _) in &loaded {
        copy_dir(d, &out.join("runs").join(&m.run_id))?;
    }
    let index = serde_json::json!({
        "runs": loaded.iter().map(|(_, m, _)| serde_json::json!({
            "run_id": m.run_id,
            "hardware_profile": m.profile,
            "device": m.settings.device.to_string(),
            "model": m.settings.model.name,
            "git_rev": m.provenance.git_rev,
            "started_at": m.provenance.started_at,
            "dir": format!("runs/{}", m.run_id),
        })).collect::<Vec<_>>(),
    });
    results::write_atomic(
        &out.join("merged.json"),
        serde_json::to_string_pretty(&index)?.as_bytes(),
    )?;
    results::write_atomic(&out.join("report.md"), report.as_bytes())?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_cpu_runs_merge_into_one_report_keeping_each_run() {
        let root = crate::paths::root();
        let a = root.join("results/cpu-load-native-llamacpp-20261129");
        let b = root.join("results/cpu-s5-long-f32-20261129");
        let out = std::env::temp_dir().join(format!("xtask-merge-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        let report = merge(&out, &[a.clone(), b.clone()]).unwrap();
        assert!(report.starts_with("# Merged report of 2 runs"));
        for run in [
            "cpu-load-native-llamacpp-20261129",
            "cpu-s5-long-f32-20261129",
        ] {
            assert!(report.contains(&format!("| {run} |")), "{run}");
            // Each run is kept whole: it loads from the merged directory as it was.
            let (m, r) = results::load_run(&out.join("runs").join(run)).unwrap();
            assert_eq!(m.run_id, run);
            assert!(!r.is_empty());
        }
        assert!(report.contains("| llamacpp:gguf-q4_1 | s2 |"), "load rows");
        assert!(report.contains("| candle:hf-f32 | s5 |"), "S5 rows");
        let index: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("merged.json")).unwrap())
                .unwrap();
        assert_eq!(index["runs"].as_array().unwrap().len(), 2);
        // Bad input: an existing --out, the same run twice, a directory that is not a run.
        let e = merge(&out, std::slice::from_ref(&a))
            .unwrap_err()
            .to_string();
        assert!(e.contains("already exists"), "{e}");
        let _ = std::fs::remove_dir_all(&out);
        let e = merge(&out, &[a.clone(), a]).unwrap_err().to_string();
        assert!(e.contains("is given twice"), "{e}");
        let e = merge(&out, &[root.join("prompts")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a run directory"), "{e}");
        let _ = std::fs::remove_dir_all(&out);
    }
}
