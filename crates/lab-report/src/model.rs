//! The one computed report model: what several formats show, computed once from a run's
//! results — the first run of the plan's results, the fastest S1 decode, the speed-ups over the
//! PyTorch baseline, the highest S2/S3 output and the charts — so that Markdown, HTML and the
//! chart files only lay it out (`write_all` computes it once for every format).

use lab_results::metric::Metric;
use lab_results::ratio::{s1_prompts, s1_summary, speedups, Speedup};
use lab_results::results::TargetResult;

use crate::charts::{self, Charts};

/// The fastest S1 decode: the target, at its longest prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct Fastest {
    pub target: String,
    pub prompt: String,
    pub tok_per_s: f64,
}

/// The highest output tok/s of a load scenario, at each target's highest level.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadBest {
    /// `Batched throughput (S2)`.
    pub name: &'static str,
    /// `B` or `C`.
    pub prefix: &'static str,
    pub target: String,
    pub level: u32,
    pub tok_per_s: f64,
}

/// The computed report.
pub struct Model<'a> {
    /// The first run of the plan's results (`--repeat` adds more).
    pub first: Vec<&'a TargetResult>,
    pub fastest_s1: Option<Fastest>,
    /// The PyTorch baseline and every target's decode speed-up over it.
    pub speedups: Option<(String, Vec<Speedup>)>,
    pub best_load: Vec<LoadBest>,
    pub charts: Charts,
}

impl<'a> Model<'a> {
    pub fn of(results: &'a [TargetResult]) -> Model<'a> {
        let first: Vec<&TargetResult> = results.iter().filter(|r| r.run() == 1).collect();
        let speedups = speedups(results);
        let charts = charts::draw(results, speedups.as_ref());
        Model {
            fastest_s1: fastest_s1(&first),
            best_load: best_load(&first),
            first,
            speedups,
            charts,
        }
    }
}

/// The fastest decode at each target's longest prompt.
fn fastest_s1(first: &[&TargetResult]) -> Option<Fastest> {
    first
        .iter()
        .filter_map(|r| {
            let (p, _) = s1_prompts(r).into_iter().max_by_key(|(_, n)| *n)?;
            let v = s1_summary(r, &p, Metric::DecodeTokPerS)?.median;
            Some(Fastest {
                target: r.target.clone(),
                prompt: p,
                tok_per_s: v,
            })
        })
        .max_by(|a, b| a.tok_per_s.total_cmp(&b.tok_per_s))
}

/// S2's and S3's highest output tok/s.
fn best_load(first: &[&TargetResult]) -> Vec<LoadBest> {
    let mut out = Vec::new();
    for (id, name, prefix) in [
        ("s2", "Batched throughput (S2)", "B"),
        ("s3", "Concurrent requests (S3)", "C"),
    ] {
        let best = first
            .iter()
            .filter_map(|r| {
                let sc = r.stats.iter().find(|x| x.id == id)?;
                let p = sc.points.iter().max_by_key(|p| p.level)?;
                Some((r.target.clone(), p.level, p.value("output_tok_per_s")?))
            })
            .max_by(|a, b| a.2.total_cmp(&b.2));
        if let Some((target, level, tok_per_s)) = best {
            out.push(LoadBest {
                name,
                prefix,
                target,
                level,
                tok_per_s,
            });
        }
    }
    out
}
