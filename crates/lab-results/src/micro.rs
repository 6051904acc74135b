//! The microbenchmark analysis (`--analysis micro`): which cases every framework times (the
//! model's real shapes, [`cases`]), and what a run measured of them ([`table`]). The op
//! definitions (FLOPs, bytes, layouts) live once in [`lab_protocol::micro`].
//!
//! Per case and target: the median host time of a call with its 95 % interval, GFLOP/s
//! (FLOPs ÷ median; matmul, attention and components), GB/s (the least bytes the op must move
//! ÷ median) and that as a share of the machine's measured read bandwidth (calls repeat on the
//! same data without flushing caches, so an op whose data fits in the last-level cache can
//! exceed it), the ratio of its median to the fastest target's, and whether its output checksum
//! agrees with at least half of the other frameworks' (relative [`checksum_tolerance`] of the
//! summed magnitudes).

use std::path::Path;

use lab_protocol::micro::{Micro, Op, OpCase, OpChecksum, OpModel};
use lab_protocol::Dtype;

use crate::results::TargetResult;
use crate::stats::{summarize, Summary};
use crate::{Error, Result};

/// The scenario id of the microbenchmarks.
pub const SCENARIO: &str = crate::ScenarioId::Micro.as_str();

pub use crate::settings::MicroSettings;

/// Reads the dimensions the ops use from an HF `config.json`.
pub fn op_model(config: &Path) -> Result<OpModel> {
    let text = std::fs::read_to_string(config)
        .map_err(|e| Error::msg(format!("{}: {e}", config.display())))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::msg(format!("{}: {e}", config.display())))?;
    let num = |k: &str| -> Result<f64> {
        v.get(k).and_then(serde_json::Value::as_f64).ok_or_else(|| {
            Error::msg(format!(
                "{}: `{k}` is missing or not a number",
                config.display()
            ))
        })
    };
    let hidden = num("hidden_size")? as u32;
    let heads = num("num_attention_heads")? as u32;
    let m = OpModel {
        hidden,
        intermediate: num("intermediate_size")? as u32,
        heads,
        kv_heads: num("num_key_value_heads").unwrap_or(heads as f64) as u32,
        head_dim: num("head_dim").unwrap_or((hidden / heads.max(1)) as f64) as u32,
        vocab: num("vocab_size")? as u32,
        rms_eps: num("rms_norm_eps")?,
        rope_theta: num("rope_theta").unwrap_or(10000.0),
    };
    Ok(m)
}

/// The cases of the analysis: matmuls of the model's real shapes (`hidden×hidden`,
/// `hidden×intermediate`, `intermediate×hidden`, `hidden×vocab`) at 1, 32 and 512 rows and a
/// 1024² square; softmax over the vocabulary and over 512 attention scores; RMSNorm; RoPE;
/// attention of one layer (512 tokens causal, and one token after 512); the components at
/// 512 tokens and at the decode shape (one token after 512). `tiny`: the same list at rows
/// 1/4/16 and 16 tokens, for tests.
pub fn cases(m: &OpModel, dtypes: &[Dtype], tiny: bool) -> Vec<OpCase> {
    let (rows, long, square): (&[u32], u32, u32) = if tiny {
        (&[1, 4, 16], 16, 64)
    } else {
        (&[1, 32, 512], 512, 1024)
    };
    let (h, ff, v) = (m.hidden, m.intermediate, m.vocab);
    let mut ops = Vec::new();
    for (k, n) in [(h, h), (h, ff), (ff, h), (h, v)] {
        for &r in rows {
            ops.push(Op::Matmul { m: r, k, n });
        }
    }
    ops.push(Op::Matmul {
        m: square,
        k: square,
        n: square,
    });
    ops.extend([
        Op::Softmax { rows: 1, cols: v },
        Op::Softmax {
            rows: m.heads * long,
            cols: long,
        },
        Op::RmsNorm { rows: 1, dim: h },
        Op::RmsNorm { rows: long, dim: h },
        Op::Rope {
            tokens: long,
            heads: m.heads,
            head_dim: m.head_dim,
        },
    ]);
    for (tokens, past) in [(long, 0), (1, long)] {
        ops.push(Op::Attention {
            tokens,
            past,
            heads: m.heads,
            kv_heads: m.kv_heads,
            head_dim: m.head_dim,
        });
    }
    for (tokens, past) in [(long, 0), (1, long)] {
        ops.extend([
            Op::Embedding { tokens },
            Op::AttentionBlock { tokens, past },
            Op::MlpBlock { tokens },
            Op::Layer { tokens, past },
        ]);
    }
    dtypes
        .iter()
        .flat_map(|&dtype| {
            ops.iter().map(move |op| OpCase {
                id: case_id(op, dtype),
                op: op.clone(),
                dtype,
            })
        })
        .collect()
}

/// `matmul-512x576x1536-f32`, `attention_block-1+512-bf16`.
pub fn case_id(op: &Op, dtype: Dtype) -> String {
    let shape = match *op {
        Op::Matmul { m, k, n } => format!("{m}x{k}x{n}"),
        Op::Softmax { rows, cols } => format!("{rows}x{cols}"),
        Op::RmsNorm { rows, dim } => format!("{rows}x{dim}"),
        Op::Rope {
            tokens,
            heads,
            head_dim,
        } => format!("{tokens}x{heads}x{head_dim}"),
        Op::Attention { tokens, past, .. }
        | Op::AttentionBlock { tokens, past }
        | Op::Layer { tokens, past } => format!("{tokens}+{past}"),
        Op::Embedding { tokens } | Op::MlpBlock { tokens } => format!("{tokens}"),
    };
    format!("{}-{shape}-{}", op.name(), dtype.as_str())
}

/// Checksums of two frameworks agree when within this share of the summed magnitudes.
pub fn checksum_tolerance(dtype: Dtype) -> f64 {
    match dtype {
        Dtype::F32 => 1e-3,
        _ => 2e-2,
    }
}

/// One target's measurement of one case.
#[derive(Debug, Clone, PartialEq)]
pub struct OpCell {
    pub target: String,
    /// Host time per call, µs.
    pub host_us: Option<Summary>,
    /// Device time per call (CUDA events), µs.
    pub device_us: Option<Summary>,
    pub gflop_per_s: Option<f64>,
    pub gb_per_s: Option<f64>,
    /// `gb_per_s` ÷ the machine's measured read bandwidth.
    pub bandwidth_share: Option<f64>,
    /// This median ÷ the fastest target's median (1 for the fastest).
    pub vs_fastest: Option<f64>,
    pub checksum: Option<OpChecksum>,
    /// Whether the checksum agrees with every other target's that has one.
    pub agrees: Option<bool>,
    pub note: Option<String>,
    /// Unsupported or failed, in words.
    pub missing: Option<String>,
}

/// One case across the run's targets.
#[derive(Debug, Clone, PartialEq)]
pub struct OpRow {
    pub case: OpCase,
    pub flops: Option<f64>,
    pub bytes: f64,
    pub cells: Vec<OpCell>,
}

/// The micro table of a run: one row per case (in the plan's order), one cell per target that
/// ran the scenario (first run of each). Empty when no target ran it.
pub fn table(results: &[TargetResult]) -> Vec<OpRow> {
    let runs: Vec<(&TargetResult, &lab_protocol::ScenarioReport)> = results
        .iter()
        .filter(|r| r.run() == 1)
        .filter_map(|r| Some((r, r.report.scenarios.iter().find(|s| s.id == SCENARIO)?)))
        .collect();
    let Some(micro): Option<&Micro> = runs.iter().find_map(|(_, s)| s.micro.as_ref()) else {
        return Vec::new();
    };
    let mut rows: Vec<OpRow> = micro
        .cases
        .iter()
        .map(|case| {
            let element = match case.dtype {
                Dtype::F32 => 4,
                _ => 2,
            };
            let flops = case.op.flops(&micro.model);
            let bytes = case.op.bytes(&micro.model, element);
            let cells = runs
                .iter()
                .map(|(r, s)| cell(r, s, case, flops, bytes))
                .collect();
            OpRow {
                case: case.clone(),
                flops,
                bytes,
                cells,
            }
        })
        .collect();
    for row in &mut rows {
        let fastest = row
            .cells
            .iter()
            .filter_map(|c| c.host_us.as_ref().map(|s| s.median))
            .fold(f64::INFINITY, f64::min);
        let tol = checksum_tolerance(row.case.dtype);
        let sums: Vec<(usize, OpChecksum)> = row
            .cells
            .iter()
            .enumerate()
            .filter_map(|(i, c)| Some((i, c.checksum.clone()?)))
            .collect();
        for (i, c) in row.cells.iter_mut().enumerate() {
            c.vs_fastest = c.host_us.as_ref().map(|s| s.median / fastest);
            // Agreeing with at least half of the others: one framework's outlier does not mark
            // the ones that agree with each other (two that disagree are both marked).
            if let Some(mine) = &c.checksum {
                let others: Vec<_> = sums.iter().filter(|(j, _)| *j != i).collect();
                let agreeing = others.iter().filter(|(_, o)| mine.agrees(o, tol)).count();
                c.agrees = (!others.is_empty()).then_some(2 * agreeing >= others.len());
            }
        }
    }
    rows
}

fn cell(
    r: &TargetResult,
    s: &lab_protocol::ScenarioReport,
    case: &OpCase,
    flops: Option<f64>,
    bytes: f64,
) -> OpCell {
    let mut c = OpCell {
        target: r.target.clone(),
        host_us: None,
        device_us: None,
        gflop_per_s: None,
        gb_per_s: None,
        bandwidth_share: None,
        vs_fastest: None,
        checksum: None,
        agrees: None,
        note: None,
        missing: None,
    };
    let Some(o) = s.ops.iter().find(|o| o.id == case.id) else {
        c.missing = Some(
            s.unsupported
                .clone()
                .or_else(|| s.error.as_ref().map(|e| format!("failed: {e}")))
                .unwrap_or_else(|| "not run".into()),
        );
        return c;
    };
    c.note = o.note.clone();
    c.checksum = o.checksum.clone();
    // Only the first line: some frameworks append a backtrace to their message.
    let line = |s: &str| s.lines().next().unwrap_or_default().trim().to_string();
    if let Some(why) = &o.unsupported {
        c.missing = Some(format!("unsupported: {}", line(why)));
    }
    let us = |v: &[u64]| summarize(&v.iter().map(|&ns| ns as f64 / 1e3).collect::<Vec<_>>());
    c.host_us = us(&o.host_ns);
    c.device_us = us(&o.device_ns);
    if let Some(e) = &o.error {
        c.missing = Some(format!("failed: {}", line(e)));
    }
    if let Some(h) = &c.host_us {
        let secs = h.median / 1e6;
        c.gflop_per_s = flops.map(|f| f / secs / 1e9);
        c.gb_per_s = Some(bytes / secs / 1e9);
        c.bandwidth_share = r
            .provenance
            .read_bandwidth_gb_per_s
            .filter(|b| *b > 0.0)
            .map(|b| bytes / secs / 1e9 / b);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smollm() -> OpModel {
        OpModel {
            hidden: 576,
            intermediate: 1536,
            heads: 9,
            kv_heads: 3,
            head_dim: 64,
            vocab: 49152,
            rms_eps: 1e-5,
            rope_theta: 100000.0,
        }
    }

    #[test]
    fn the_cases_are_the_models_real_shapes_with_unique_ids() {
        let c = cases(&smollm(), &[Dtype::F32, Dtype::Bf16], false);
        assert_eq!(c.len(), 2 * 28);
        let ids: std::collections::BTreeSet<_> = c.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids.len(), c.len(), "ids are unique");
        for id in [
            "matmul-1x576x576-f32",
            "matmul-512x576x49152-bf16",
            "matmul-32x1536x576-f32",
            "matmul-1024x1024x1024-f32",
            "softmax-4608x512-f32",
            "attention-512+0-f32",
            "attention-1+512-f32",
            "layer-1+512-bf16",
            "embedding-512-f32",
        ] {
            assert!(ids.contains(id), "{id} missing from {ids:?}");
        }
        for case in &c {
            assert_eq!(case.op.invalid(&smollm()), None, "{}", case.id);
        }
    }

    #[test]
    fn the_flop_and_byte_definitions_count_what_they_say() {
        let m = smollm();
        let mm = Op::Matmul {
            m: 512,
            k: 576,
            n: 1536,
        };
        assert_eq!(mm.flops(&m), Some(2.0 * 512.0 * 576.0 * 1536.0));
        assert_eq!(
            mm.bytes(&m, 4),
            4.0 * (512.0 * 576.0 + 1536.0 * 576.0 + 512.0 * 1536.0)
        );
        // The layer is its two blocks (the residual stream counted once).
        let (a, f, l) = (
            Op::AttentionBlock {
                tokens: 1,
                past: 512,
            },
            Op::MlpBlock { tokens: 1 },
            Op::Layer {
                tokens: 1,
                past: 512,
            },
        );
        assert_eq!(
            l.flops(&m).unwrap(),
            a.flops(&m).unwrap() + f.flops(&m).unwrap()
        );
        // Decode: the weights dominate the bytes (q,k,v,o + gate,up,down = 3.54 M values).
        let weights = 576.0 * (2.0 * 576.0 + 2.0 * 192.0) + 3.0 * 576.0 * 1536.0;
        assert!(l.bytes(&m, 4) > 4.0 * weights && l.bytes(&m, 4) < 4.0 * weights * 1.2);
        assert_eq!(Op::Softmax { rows: 1, cols: 8 }.flops(&m), None);
    }

    /// A run of two targets: `a` and `b` time `matmul-4x8x16-f32` at 10 and 20 µs; `b`'s output
    /// disagrees when `wrong`; `b` cannot run the rope case.
    fn run(wrong: bool) -> Vec<TargetResult> {
        use lab_protocol::micro::OpReport;
        let (_, results) = crate::results::fixture::fixture_engines();
        let m = smollm();
        let mm = Op::Matmul { m: 4, k: 8, n: 16 };
        let rope = Op::Rope {
            tokens: 2,
            heads: 1,
            head_dim: 4,
        };
        let micro = Micro {
            model: m,
            cases: [mm, rope]
                .into_iter()
                .map(|op| OpCase {
                    id: case_id(&op, Dtype::F32),
                    op,
                    dtype: Dtype::F32,
                })
                .collect(),
            seed: 1,
        };
        let report = |us: u64, sum: f64, rope: bool| lab_protocol::ScenarioReport {
            id: SCENARIO.into(),
            kind: lab_protocol::ScenarioKind::Micro,
            prompts: vec![],
            error: None,
            batching: None,
            points: vec![],
            sampling: vec![],
            unsupported: None,
            micro: Some(micro.clone()),
            train: None,
            ops: vec![
                OpReport {
                    id: micro.cases[0].id.clone(),
                    host_ns: vec![us * 1000; 5],
                    device_ns: vec![],
                    checksum: Some(OpChecksum {
                        sum,
                        sum_abs: 100.0,
                        elements: 64,
                        sample: Vec::new(),
                    }),
                    note: None,
                    unsupported: None,
                    error: None,
                },
                OpReport {
                    id: micro.cases[1].id.clone(),
                    host_ns: if rope { vec![1000] } else { vec![] },
                    device_ns: vec![],
                    checksum: None,
                    note: None,
                    unsupported: (!rope).then(|| "no rope here".to_string()),
                    error: None,
                },
            ],
        };
        results
            .iter()
            .take(2)
            .zip([(10, 5.0, true), (20, if wrong { 9.0 } else { 5.05 }, false)])
            .map(|(r, (us, sum, rope))| {
                let mut r = r.clone();
                r.report.scenarios = vec![report(us, sum, rope)];
                r.provenance.read_bandwidth_gb_per_s = Some(10.0);
                r
            })
            .collect()
    }

    #[test]
    fn the_table_gives_rates_ratios_and_agreement_per_case() {
        let rows = table(&run(false));
        assert_eq!(rows.len(), 2);
        let mm = &rows[0];
        assert_eq!(mm.flops, Some(2.0 * 4.0 * 8.0 * 16.0));
        let (a, b) = (&mm.cells[0], &mm.cells[1]);
        assert_eq!(a.host_us.as_ref().unwrap().median, 10.0);
        assert_eq!(a.vs_fastest, Some(1.0));
        assert_eq!(b.vs_fastest, Some(2.0));
        // 1024 FLOPs in 10 µs; (32 + 128 + 64) · 4 bytes in 10 µs, of a 10 GB/s machine.
        assert!((a.gflop_per_s.unwrap() - 1024.0 / 10e-6 / 1e9).abs() < 1e-9);
        assert!((a.gb_per_s.unwrap() - 896.0 / 10e-6 / 1e9).abs() < 1e-9);
        assert!((a.bandwidth_share.unwrap() - a.gb_per_s.unwrap() / 10.0).abs() < 1e-12);
        assert_eq!(
            (a.agrees, b.agrees),
            (Some(true), Some(true)),
            "0.05 of 100 is within 0.1 %"
        );
        let rope = &rows[1];
        assert_eq!(rope.flops, None);
        assert_eq!(
            rope.cells[1].missing.as_deref(),
            Some("unsupported: no rope here")
        );
        assert_eq!(rope.cells[0].agrees, None, "nothing to compare with");

        let rows = table(&run(true));
        assert_eq!(
            (rows[0].cells[0].agrees, rows[0].cells[1].agrees),
            (Some(false), Some(false))
        );
        // A third framework that computes what the first does: only the outlier is marked.
        let mut three = run(true);
        let mut c = three[0].clone();
        c.target = "third:hf-f32".into();
        three.push(c);
        let agrees: Vec<_> = table(&three)[0].cells.iter().map(|c| c.agrees).collect();
        assert_eq!(agrees, [Some(true), Some(false), Some(true)]);
    }

    #[test]
    fn config_json_gives_the_op_model() {
        let dir = std::env::temp_dir().join(format!("lab-micro-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("config.json");
        std::fs::write(
            &p,
            r#"{"hidden_size":576,"intermediate_size":1536,"num_attention_heads":9,"num_key_value_heads":3,"vocab_size":49152,"rms_norm_eps":1e-5,"rope_theta":100000.0}"#,
        )
        .unwrap();
        assert_eq!(op_model(&p).unwrap(), smollm());
        std::fs::write(&p, r#"{"hidden_size":576}"#).unwrap();
        let e = op_model(&p).unwrap_err().to_string();
        assert!(
            e.contains("config.json") && e.contains("`num_attention_heads` is missing"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
