//! Cost and energy per generated token. The definitions are written here once:
//!
//! - **$ per 1M generated tokens** = hourly price of the machine ÷ (3600 × output tok/s) × 10⁶,
//!   where output tok/s is what the machine delivered in that scenario: S1 one request at a time
//!   (new tokens ÷ median end-to-end time, prefill included), S2 and S3 the level's output tok/s.
//!   The price is the user's (`--price-per-hour`, with its source); the lab has no price of its
//!   own and never shows a cost without the price and source it came from.
//! - **Requests per machine-hour at the SLO** (S3) = goodput (completed requests per second that
//!   met both SLOs, [`crate::results::load::SLO_TTFT_MS`] and
//!   [`crate::results::load::SLO_TPOT_MS`]) × 3600.
//! - **Joules per token** come from the GPU's energy counter over the measured windows
//!   ([`lab_gpu::analysis`]); there is none without GPU telemetry.

use crate::metric::Metric;
use crate::results::TargetResult;
use crate::ScenarioId;

pub use crate::settings::Price;

/// One row of the cost table: a target's throughput in one scenario (or level).
#[derive(Debug, Clone, PartialEq)]
pub struct CostRow {
    pub target: String,
    pub scenario: String,
    /// `p200`, `B=8`, `C=4`.
    pub at: String,
    pub output_tok_per_s: f64,
    pub usd_per_mtok: Option<f64>,
    pub joules_per_token: Option<f64>,
    /// S3: completed requests per hour that met both SLOs.
    pub slo_requests_per_hour: Option<f64>,
}

/// Every cost row of a run's first repetition.
pub fn rows(results: &[TargetResult], price: Option<&Price>) -> Vec<CostRow> {
    let mut out = Vec::new();
    for r in results.iter().filter(|r| r.run() == 1) {
        let joules = |scenario: &str, level: Option<u32>| {
            let t = r.telemetry.as_ref()?;
            t.scenarios
                .iter()
                .find(|s| s.scenario == scenario && s.level == level)?
                .joules_per_token
        };
        for sc in &r.stats {
            if sc.points.is_empty() {
                if sc.id != ScenarioId::S1 && sc.id != ScenarioId::S5 {
                    continue;
                }
                for p in &sc.prompts {
                    let Some(e2e) = p.get(Metric::E2eMs) else {
                        continue;
                    };
                    if e2e.median <= 0.0 {
                        continue;
                    }
                    let tps = f64::from(p.new_tokens) / (e2e.median / 1e3);
                    out.push(CostRow {
                        target: r.target.clone(),
                        scenario: sc.id.clone(),
                        at: p.prompt.clone(),
                        output_tok_per_s: tps,
                        usd_per_mtok: price.and_then(|pr| pr.usd_per_mtok(tps)),
                        joules_per_token: joules(&sc.id, None),
                        slo_requests_per_hour: None,
                    });
                }
            } else {
                for p in &sc.points {
                    let Some(tps) = p.value("output_tok_per_s") else {
                        continue;
                    };
                    let (at, slo) = if sc.id == ScenarioId::S3 {
                        (
                            format!("C={}", p.level),
                            p.value("goodput_requests_per_s").map(|g| g * 3600.0),
                        )
                    } else {
                        (format!("B={}", p.level), None)
                    };
                    out.push(CostRow {
                        target: r.target.clone(),
                        scenario: sc.id.clone(),
                        at,
                        output_tok_per_s: tps,
                        usd_per_mtok: price.and_then(|pr| pr.usd_per_mtok(tps)),
                        joules_per_token: joules(&sc.id, Some(p.level)),
                        slo_requests_per_hour: slo,
                    });
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_price_must_be_positive_and_have_a_source_when_one_is_given() {
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let e = Price::new(bad, None).unwrap_err().to_string();
            assert!(
                e.contains("--price-per-hour") && e.contains("positive"),
                "{e}"
            );
        }
        assert!(Price::new(1.0, Some("  ")).is_err());
        let p = Price::new(2.0, None).unwrap();
        assert!(p.source.contains("no source stated"));
        // $2/h at 100 tok/s: 360,000 tokens per hour → $5.56 per million.
        assert!((p.usd_per_mtok(100.0).unwrap() - 2.0 / 0.36).abs() < 1e-9);
        assert_eq!(p.usd_per_mtok(0.0), None);
    }

    #[test]
    fn every_scenario_and_level_gets_a_row() {
        let (_, results) = crate::results::fixture::fixture();
        let price = Price::new(3.6, Some("test")).unwrap();
        let rows = rows(&results, Some(&price));
        assert!(!rows.is_empty());
        for row in &rows {
            // $3.6/h = $0.001/s: $ per 1M tokens = 1000 / tok/s.
            let want = 1000.0 / row.output_tok_per_s;
            assert!(
                (row.usd_per_mtok.unwrap() - want).abs() < 1e-6 * want,
                "{row:?}"
            );
        }
        let none = super::rows(&results, None);
        assert_eq!(none.len(), rows.len());
        assert!(none.iter().all(|r| r.usd_per_mtok.is_none()));
    }
}
