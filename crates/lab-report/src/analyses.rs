//! The analyses' tables ([`lab_results::analysis`]) as rows of text, for `report.md` and the HTML page
//! alike: one row per target and checkpoint (KV cache) or strategy (sampling), and one row per
//! target that could not, with its reason.

use lab_results::analysis::{self, Outcome};
use lab_results::results::TargetResult;

use crate::fmt::fmt_num;

/// A table: its title, the definition under it, the header, which columns are numeric, the rows.
pub struct Table {
    pub id: &'static str,
    pub title: &'static str,
    pub note: String,
    pub head: Vec<&'static str>,
    pub numeric: Vec<bool>,
    pub rows: Vec<Vec<String>>,
}

fn interval(r: Option<lab_results::ratio::Ratio>, scale: f64, unit: &str) -> String {
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
    out.extend(micro_table(results));
    out.extend(lora_table(results));
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

/// The microbenchmark table (`--analysis micro`): one row per case and target.
fn micro_table(results: &[TargetResult]) -> Option<Table> {
    let rows = lab_results::micro::table(results);
    if rows.is_empty() {
        return None;
    }
    let head = vec![
        "op",
        "shape",
        "dtype",
        "target",
        "samples",
        "µs p50",
        "µs p90",
        "device µs p50",
        "GFLOP/s",
        "GB/s",
        "% of read bandwidth",
        "× fastest",
        "output agrees",
        "note",
    ];
    let opt = |v: Option<f64>| v.map(fmt_num).unwrap_or_else(|| "-".into());
    let mut out = Vec::new();
    for r in &rows {
        for c in &r.cells {
            let h = c.host_us.as_ref();
            let note = match (&c.missing, &c.note) {
                (Some(m), _) => m.clone(),
                (None, Some(n)) => n.clone(),
                (None, None) => String::new(),
            };
            out.push(vec![
                r.case.op.name().to_string(),
                r.case.op.shape(),
                r.case.dtype.as_str().to_string(),
                c.target.clone(),
                h.map(|s| {
                    if s.n < lab_results::measure::MIN_SAMPLES {
                        format!("{} (< {})", s.n, lab_results::measure::MIN_SAMPLES)
                    } else {
                        s.n.to_string()
                    }
                })
                .unwrap_or_else(|| "0".into()),
                opt(h.map(|s| s.median)),
                opt(h.map(|s| s.p90)),
                opt(c.device_us.as_ref().map(|s| s.median)),
                opt(c.gflop_per_s),
                opt(c.gb_per_s),
                opt(c.bandwidth_share.map(|b| b * 100.0)),
                c.vs_fastest
                    .map(|v| format!("{}×", fmt_num(v)))
                    .unwrap_or_else(|| "-".into()),
                match c.agrees {
                    Some(true) => "yes".into(),
                    Some(false) => "NO".into(),
                    None => "-".into(),
                },
                note,
            ]);
        }
    }
    Some(Table {
        id: "analysis-micro",
        title: "Op and component microbenchmarks",
        note: "Scenario micro (`--analysis micro`): each framework's own ops on the same seeded inputs (lab-protocol's `micro::fill`), components on the model's layer 0; every call timed alone on the host after the device finished (device µs: CUDA events, GPU only). GFLOP/s = the op's FLOPs ÷ the median (matmul 2·m·k·n, attention 4·heads·queries·keys·head_dim, components their projections and attention); GB/s = the least bytes the op must move ÷ the median, and its share of the machine's measured read bandwidth. × fastest: the median ÷ the fastest target's for that case. Calls repeat on the same data without flushing caches: an op whose data fits in the last-level cache can exceed the DRAM read bandwidth. Output agrees: the sum and the summed magnitude of the output, and 64 of its elements sampled at even strides, agree with at least half of the other frameworks' within 0.1 % (f32) or 2 % (f16/bf16) of the magnitude (elements within 4 × that share; NO: this framework computes something else, or something less precise). Samples: fewer than 100 when the case's time limit ended it first.".into(),
        numeric: vec![
            false, false, false, false, true, true, true, true, true, true, true, true, false, false,
        ],
        head,
        rows: out,
    })
}

/// The LoRA training-step table (`--analysis lora`): one row per target, then the ones that
/// could not.
fn lora_table(results: &[TargetResult]) -> Option<Table> {
    let (rows, missing) = lab_results::train::rows(results);
    if rows.is_empty() && missing.is_empty() {
        return None;
    }
    let head = vec![
        "target",
        "steps",
        "forward ms",
        "backward ms",
        "optimizer ms",
        "step ms",
        "forward / backward / optimizer %",
        "train tok/s",
        "peak RSS MiB",
        "trainable params",
        "loss first → last",
        "first loss vs median",
        "first grads vs first target",
    ];
    let mut out = Vec::new();
    for r in &rows {
        let share = |x: f64| fmt_num(100.0 * x / r.step_ms.median);
        out.push(vec![
            r.target.clone(),
            r.step_ms.n.to_string(),
            fmt_num(r.forward_ms.median),
            fmt_num(r.backward_ms.median),
            fmt_num(r.optimizer_ms.median),
            fmt_num(r.step_ms.median),
            format!(
                "{} / {} / {}",
                share(r.forward_ms.median),
                share(r.backward_ms.median),
                share(r.optimizer_ms.median)
            ),
            fmt_num(r.tokens_per_s),
            r.peak_rss_bytes
                .map(|b| fmt_num(b as f64 / 1048576.0))
                .unwrap_or_else(|| "-".into()),
            r.trainable_params.to_string(),
            format!("{:.4} → {:.4}", r.first_loss, r.last_loss),
            r.loss_rel_diff
                .map(|d| format!("{d:.1e}"))
                .unwrap_or_else(|| "-".into()),
            r.grad_rel_diff
                .map(|d| format!("{d:.1e}"))
                .unwrap_or_else(|| "(reference)".into()),
        ]);
    }
    for m in &missing {
        let mut row = vec![m.target.clone(), m.why.clone()];
        row.resize(head.len(), "-".into());
        out.push(row);
    }
    Some(Table {
        id: "analysis-lora",
        title: "LoRA training step",
        note: format!("Scenario lora (`--analysis lora`): rank 8, alpha 16 adapters on every layer's q and v projections of the model's frozen F32 weights, one fixed sequence (batch 1), AdamW (lr 1e-4, weight decay 0.01); every step timed in three phases after the device finished: forward (to the loss), backward (the adapters' gradients), optimizer (update, gradients cleared). Medians over the measured steps (warm-ups excluded); train tok/s = predicted positions ÷ the median step. Agreement: the first step's loss (the base model's, as B starts at zero) against the median of the frameworks (tolerance {:.0e}), and the first step's adapter gradients (sum and summed magnitude per matrix) against the first target's (tolerance {:.0e}).", lab_results::train::LOSS_TOLERANCE, lab_results::train::GRAD_TOLERANCE),
        numeric: vec![false, true, true, true, true, true, false, true, true, true, false, true, true],
        head,
        rows: out,
    })
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
    use lab_results::startup::{Cache, StartSample};
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
    use lab_results::metric::Metric;
    use lab_results::ratio::{interval, s1_prompts, s1_summary};
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
            crate::fmt::mib(r.report.memory.peak_rss_bytes),
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
        let (_, results) = lab_results::results::fixture::fixture_engines();
        assert!(
            quant_table(&results).is_none(),
            "no engine ran two GGUF levels"
        );
        let as_level = |r: &TargetResult, dtype: &str, k: f64| {
            let mut r =
                lab_results::results::fixture::scaled(r, &format!("llamacpp:gguf-{dtype}"), k);
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
