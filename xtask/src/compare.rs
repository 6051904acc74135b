//! `cargo xtask compare <run-a> <run-b>`: run B relative to run A, per target and metric, with
//! the ratio's interval and a verdict (`lab_report::compare`), as Markdown on stdout and,
//! with `--out DIR`, `compare.md` and `compare.html` there. Works across commits and machines
//! (the latter labelled).

use std::path::PathBuf;

use anyhow::{bail, Result};
use lab_report::compare::compare;
use lab_results::results;

#[derive(clap::Args)]
pub struct Flags {
    /// The earlier (reference) run directory.
    pub a: PathBuf,
    /// The run compared with it.
    pub b: PathBuf,
    /// Also write `compare.md` and `compare.html` into this directory (created if missing).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(flags: Flags) -> Result<()> {
    let (ma, ra) = results::load_run(&flags.a)?;
    let (mb, rb) = results::load_run(&flags.b)?;
    if ma.settings.model.name != mb.settings.model.name {
        bail!(
            "{} ran `{}` and {} ran `{}`: numbers of different models are not comparable",
            flags.a.display(),
            ma.settings.model.name,
            flags.b.display(),
            mb.settings.model.name
        );
    }
    let c = compare((&ma, &ra), (&mb, &rb));
    if c.rows.is_empty() {
        bail!(
            "{} and {} have no target, scenario and prompt or level in common",
            flags.a.display(),
            flags.b.display()
        );
    }
    let md = c.markdown();
    println!("{md}");
    if let Some(out) = &flags.out {
        std::fs::create_dir_all(out)?;
        results::write_atomic(&out.join("compare.md"), md.as_bytes())?;
        results::write_atomic(
            &out.join("compare.html"),
            lab_report::html::compare_page(&c).as_bytes(),
        )?;
        eprintln!("comparison: {}", out.join("compare.html").display());
    }
    let (faster, slower, same) = c.counts();
    eprintln!(
        "{faster} faster, {slower} slower, {same} same within noise; {}",
        c.scope()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(a: &str, b: &str, out: Option<PathBuf>) -> Flags {
        let root = crate::paths::root().join("results");
        Flags {
            a: root.join(a),
            b: root.join(b),
            out,
        }
    }

    #[test]
    fn a_run_and_its_reproduction_compare_and_the_files_are_written() {
        let out = std::env::temp_dir().join(format!("xtask-compare-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        run(flags(
            "cpu-standard-pinned-20261128",
            "cpu-standard-pinned-20261128-repro",
            Some(out.clone()),
        ))
        .unwrap();
        let md = std::fs::read_to_string(out.join("compare.md")).unwrap();
        assert!(md.contains("one machine (cpu-authenticamd"), "{md}");
        assert!(md.contains("| native:gguf-q4_1 | s1 | p"), "{md}");
        let html = std::fs::read_to_string(out.join("compare.html")).unwrap();
        assert!(html.contains("id=\"table-compare\"") && !html.contains("https://"));
        let _ = std::fs::remove_dir_all(&out);
    }

    #[test]
    fn runs_from_two_machines_are_labelled_as_such() {
        let out = std::env::temp_dir().join(format!("xtask-compare-x-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        run(flags(
            "cpu-7targets-20261122",
            "cpu-all-quick-20261129",
            Some(out.clone()),
        ))
        .unwrap();
        let md = std::fs::read_to_string(out.join("compare.md")).unwrap();
        assert!(
            md.contains("ACROSS MACHINES (cpu-genuineintel-f6m167-2t vs cpu-authenticamd-f25m17-2t), two commits"),
            "{md}"
        );
        let html = std::fs::read_to_string(out.join("compare.html")).unwrap();
        assert!(html.contains("ACROSS MACHINES"));
        let _ = std::fs::remove_dir_all(&out);
    }

    #[test]
    fn runs_of_different_models_are_refused() {
        let e = run(flags(
            "synthetic-llama-3.2-1b-cpu-20261122",
            "cpu-3targets-20261122",
            None,
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("numbers of different models are not comparable"),
            "{e}"
        );
    }
}
