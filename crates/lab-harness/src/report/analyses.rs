//! The analyses' tables ([`crate::analysis`]) as rows of text, for `report.md` and the HTML page
//! alike: one row per target and checkpoint (KV cache) or strategy (sampling), and one row per
//! target that could not, with its reason.

use crate::analysis::{self, Outcome};
use crate::results::TargetResult;

use super::markdown::fmt_num;

/// A table: its title, the definition under it, the header, which columns are numeric, the rows.
pub struct Table {
    pub id: &'static str,
    pub title: &'static str,
    pub note: String,
    pub head: Vec<&'static str>,
    pub numeric: Vec<bool>,
    pub rows: Vec<Vec<String>>,
}

fn interval(r: Option<crate::report::ratio::Ratio>, scale: f64, unit: &str) -> String {
    match r {
        Some(r) => format!(
            "{}{unit} [{}, {}]",
            fmt_num(r.value * scale),
            fmt_num(r.low * scale),
            fmt_num(r.high * scale)
        ),
        None => "-".into(),
    }
}

fn cannot<T>(o: &Outcome<T>, width: usize, target: &str) -> Option<Vec<String>> {
    let (word, why) = match o {
        Outcome::Rows(_) => return None,
        Outcome::Unsupported(why) => ("cannot", why),
        Outcome::Failed(why) => ("failed", why),
    };
    let mut row = vec![target.to_string(), format!("{word}: {why}")];
    row.resize(width, "-".into());
    Some(row)
}

/// One row per target that could not (its reason), and `row` of every row of those that could.
fn rows_of<T>(
    outcomes: &[(&str, Outcome<T>)],
    width: usize,
    row: impl Fn(&str, &T) -> Vec<String>,
) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for (t, o) in outcomes {
        rows.extend(cannot(o, width, t));
        if let Outcome::Rows(rs) = o {
            rows.extend(rs.iter().map(|r| row(t, r)));
        }
    }
    rows
}

/// Both analyses' tables, the ones the run has.
pub fn tables(results: &[TargetResult]) -> Vec<Table> {
    let mut out = Vec::new();
    let kv = analysis::of_targets(results, analysis::kv);
    if !kv.is_empty() {
        let head = vec![
            "target",
            "tokens",
            "with cache ms",
            "without ms",
            "with tok/s",
            "without tok/s",
            "speed-up (without ÷ with)",
            "same ids",
        ];
        let rows = rows_of(&kv, head.len(), |t, r| {
            vec![
                t.to_string(),
                r.tokens.to_string(),
                fmt_num(r.on_ms.median),
                fmt_num(r.off_ms.median),
                fmt_num(r.tok_per_s(&r.on_ms)),
                fmt_num(r.tok_per_s(&r.off_ms)),
                interval(r.speedup, 1.0, "×"),
                match r.ids_differ_at {
                    None => "yes".into(),
                    Some(k) => format!("no: from token {k}"),
                },
            ]
        });
        out.push(Table {
            id: "analysis-kv",
            title: "KV cache on/off",
            note: "Scenarios kv-on and kv-off: the same prompt and fixed-length greedy generation; without the cache every step recomputes the whole prefix. Cumulative time to N tokens = TTFT + the first N − 1 inter-token gaps (median over iterations); speed-up = median without ÷ median with, 95 % interval in brackets. Same ids: whether both generated the same greedy ids (a difference is numerics, a batched prefill against one-token steps, or a broken path).".into(),
            numeric: vec![false, true, true, true, true, true, true, false],
            head,
            rows,
        });
    }
    out.extend(startup_table(results));
    out.extend(quant_table(results));
    let sampling = analysis::of_targets(results, analysis::sampling);
    if !sampling.is_empty() {
        let head = vec![
            "target",
            "strategy",
            "logits",
            "selections",
            "selection µs p50",
            "selection µs p99",
            "decode step µs p50",
            "share of the step",
        ];
        let rows = rows_of(&sampling, head.len(), |t, r| {
            vec![
                t.to_string(),
                r.strategy.clone(),
                r.logits.to_string(),
                r.sample_us.n.to_string(),
                fmt_num(r.sample_us.median),
                fmt_num(r.sample_us.p99),
                fmt_num(r.forward_us.median),
                interval(r.share, 100.0, " %"),
            ]
        });
        out.push(Table {
            id: "analysis-sampling",
            title: "Sampling overhead",
            note: "Scenario sampling: each strategy selects tokens one at a time from the logits of the engine's last forward pass (the whole vocabulary), each selection timed alone; the decode step (one forward pass and a greedy selection) is the same scenario's median inter-token gap. Share = median selection ÷ median decode step, 95 % interval in brackets.".into(),
            numeric: vec![false, false, true, true, true, true, true, true],
            head,
            rows,
        });
    }
    out
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// The start-up table: `--analysis cold-start`'s starts per page-cache state (medians), else
/// each target's own start in the run ("as found").
fn startup_table(results: &[TargetResult]) -> Option<Table> {
    use crate::startup::{Cache, StartSample};
    let mut rows = Vec::new();
    let mut how = None;
    for r in results.iter().filter(|r| r.run() == 1) {
        let samples: Vec<StartSample> = match &r.startup {
            Some(s) => {
                how.get_or_insert_with(|| s.cold_cache.clone());
                s.samples.clone()
            }
            None => match &r.report.load {
                Some(l) if !l.phases.is_empty() => vec![StartSample {
                    cache: Cache::AsFound,
                    spawn_to_main_ms: None,
                    phases: l.phases.clone(),
                    first_token_ms: l.first_token_ms,
                    wall_ms: r.process_wall_ms,
                    error: None,
                }],
                _ => continue,
            },
        };
        for cache in [Cache::Cold, Cache::Warm, Cache::AsFound] {
            let of: Vec<&StartSample> = samples
                .iter()
                .filter(|s| s.cache == cache && s.error.is_none())
                .collect();
            let failed = samples
                .iter()
                .filter(|s| s.cache == cache && s.error.is_some())
                .count();
            if of.is_empty() && failed == 0 {
                continue;
            }
            let cell = |v: Vec<f64>| median(v).map(fmt_num).unwrap_or_else(|| "-".into());
            let mut row = vec![
                r.target.clone(),
                cache.name().to_string(),
                if failed > 0 {
                    format!("{} ({failed} failed)", of.len())
                } else {
                    of.len().to_string()
                },
                cell(of.iter().filter_map(|s| s.spawn_to_main_ms).collect()),
            ];
            let durations: Vec<Vec<(&str, Option<f64>)>> =
                of.iter().map(|s| s.durations()).collect();
            let phases = durations.first().map_or(0, |d| d.len());
            for i in 0..phases {
                row.push(cell(durations.iter().filter_map(|d| d[i].1).collect()));
            }
            row.push(cell(
                of.iter()
                    .filter_map(|s| s.spawn_to_first_token_ms())
                    .collect(),
            ));
            rows.push(row);
        }
    }
    if rows.is_empty() {
        return None;
    }
    let note = match how {
        Some(h) => format!(
            "Each start serves one 16-token prompt and one token; medians over the starts, ms. Each column is the time from the previous phase the engine marked (from its `main` for the first); `-`: the engine's library does that phase inside a later one. Cold page cache: {h}."
        ),
        None => "The run's own start of each engine (page cache as found: not a controlled cold start; `--analysis cold-start` measures cold and warm starts), ms; each column is the time from the previous phase the engine marked (from its `main` for the first); `-`: the engine's library does that phase inside a later one.".into(),
    };
    Some(Table {
        id: "analysis-startup",
        title: "Start-up, broken down",
        note,
        head: vec![
            "target",
            "page cache",
            "starts",
            "spawn → main",
            "runtime init",
            "file open",
            "weights parsed",
            "weights loaded",
            "ready",
            "→ first token",
            "spawn → first token",
        ],
        numeric: vec![
            false, false, false, true, true, true, true, true, true, true, true,
        ],
        rows,
    })
}

/// The quantization table (`--analysis quant`): every GGUF target of an engine the run measured
/// at two or more levels, side by side: S1 speed at the longest prompt, peak memory and the
/// teacher-forced agreement with the reference.
fn quant_table(results: &[TargetResult]) -> Option<Table> {
    use crate::metric::Metric;
    use crate::report::ratio::{interval, s1_prompts, s1_summary};
    let gguf: Vec<&TargetResult> = results
        .iter()
        .filter(|r| {
            r.run() == 1 && r.report.engine.weight_format == lab_protocol::WeightFormat::Gguf
        })
        .collect();
    let levels = |engine: &str| {
        gguf.iter()
            .filter(|r| r.report.engine.name == engine)
            .count()
    };
    let mut rows = Vec::new();
    for r in gguf.iter().filter(|r| levels(&r.report.engine.name) >= 2) {
        let prompt = s1_prompts(r).into_iter().max_by_key(|(_, n)| *n);
        let cell = |m: Metric| {
            prompt
                .as_ref()
                .and_then(|(p, _)| s1_summary(r, p, m))
                .map(|s| {
                    let (lo, hi) = interval(s);
                    format!("{} [{}, {}]", fmt_num(s.median), fmt_num(lo), fmt_num(hi))
                })
                .unwrap_or_else(|| "-".into())
        };
        let (agreement, prefix) = match &r.correctness {
            Some(c) => (
                format!(
                    "{:.1} % ({}/{}, gate {:.0} %)",
                    c.top1_agreement * 100.0,
                    c.top1_agree,
                    c.positions,
                    c.gate * 100.0
                ),
                format!("{}/{}", c.greedy_prefix_tokens, c.greedy_tokens),
            ),
            None => ("-".into(), "-".into()),
        };
        let (decode, prefill) = (cell(Metric::DecodeTokPerS), cell(Metric::PrefillTokPerS));
        rows.push(vec![
            r.report.engine.name.clone(),
            r.report.engine.dtype.clone(),
            prompt.map(|(p, _)| p).unwrap_or_else(|| "-".into()),
            decode,
            prefill,
            super::markdown::mib(r.report.memory.peak_rss_bytes),
            agreement,
            prefix,
        ]);
    }
    if rows.is_empty() {
        return None;
    }
    Some(Table {
        id: "analysis-quant",
        title: "Quantization levels",
        note: "Every GGUF level an engine ran: the shipped Q4_1 and the volume's Q8_0, Q4_0 and F16 files, derived from that Q4_1 by the lab's quantizer (so they carry Q4_1's error too). S1 at its longest prompt, median [95 % interval]; peak RSS of the process; teacher-forced top-1 agreement with the reference and the greedy tokens that match it before the first difference.".into(),
        head: vec![
            "engine",
            "level",
            "S1 prompt",
            "decode tok/s",
            "prefill tok/s",
            "peak RSS MiB",
            "top-1 agreement",
            "greedy prefix",
        ],
        numeric: vec![false, false, false, true, true, true, true, true],
        rows,
    })
}

/// The tables as Markdown sections.
pub fn markdown(results: &[TargetResult]) -> String {
    let mut s = String::new();
    for t in tables(results) {
        s.push_str(&format!("\n## {}\n\n{}\n\n", t.title, t.note));
        s.push_str(&format!("| {} |\n", t.head.join(" | ")));
        let align: Vec<&str> = t
            .numeric
            .iter()
            .map(|&n| if n { "---:" } else { "---" })
            .collect();
        s.push_str(&format!("|{}|\n", align.join("|")));
        for r in &t.rows {
            s.push_str(&format!("| {} |\n", r.join(" | ")));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quantization_table_sets_an_engines_levels_side_by_side() {
        let (_, results) = crate::results::fixture::fixture_engines();
        assert!(
            quant_table(&results).is_none(),
            "no engine ran two GGUF levels"
        );
        let as_level = |r: &TargetResult, dtype: &str, k: f64| {
            let mut r = crate::results::fixture::scaled(r, &format!("llamacpp:gguf-{dtype}"), k);
            r.report.engine.name = "llamacpp".into();
            r.report.engine.dtype = dtype.into();
            r.report.engine.weight_format = lab_protocol::WeightFormat::Gguf;
            r
        };
        let two = [
            as_level(&results[0], "q4_1", 1.0),
            as_level(&results[0], "q8_0", 0.5),
        ];
        let t = quant_table(&two).unwrap();
        assert_eq!(t.rows.len(), 2);
        assert_eq!(
            (t.rows[0][1].as_str(), t.rows[1][1].as_str()),
            ("q4_1", "q8_0")
        );
        // Half the speed at q8_0: the decode medians differ by 2x.
        let median =
            |row: &Vec<String>| -> f64 { row[3].split(' ').next().unwrap().parse().unwrap() };
        assert!(
            (median(&t.rows[0]) / median(&t.rows[1]) - 2.0).abs() < 0.05,
            "{:?}",
            t.rows
        );
        assert!(markdown(&two).contains("## Quantization levels"));
    }
}
