//! The Markdown section of GPU telemetry: per target, scenario and load level, what the sampler
//! saw during the measured windows (see `lab_results::telemetry` for the windows and
//! `lab_gpu::analysis` for the definitions).

use lab_results::ScenarioId;
use std::fmt::Write;

use lab_results::results::TargetResult;

fn num(v: Option<f64>, digits: usize) -> String {
    v.map(|v| format!("{v:.digits$}"))
        .unwrap_or_else(|| "-".into())
}

/// Empty when no result has telemetry.
pub fn telemetry_section(results: &[TargetResult]) -> String {
    let with: Vec<&TargetResult> = results
        .iter()
        .filter(|r| r.run() == 1 && r.telemetry.is_some())
        .collect();
    let Some(first) = with.first().and_then(|r| r.telemetry.as_ref()) else {
        return String::new();
    };
    let mut s = String::new();
    let _ = writeln!(s, "\n## GPU telemetry\n");
    let _ = writeln!(
        s,
        "Sampled from outside the engine every {} ms ({}); over each scenario's measured windows (S1/S5: iterations, S2: batches, S3: the whole level). GPU util is NVML's own average over its last 1/6–1 s. Energy from the counter's deltas (* where a reset was bridged with power readings). Throttled: windows with a power-cap, thermal, HW-slowdown or power-brake reason active. Engine GPU MiB: processes that appeared on the device during the target's run.\n",
        first.raw.period_ms, first.raw.source
    );
    let _ = writeln!(s, "| target | scenario | GPU | windows | throttled | GPU util % | SM MHz mean (min) | mem MHz | power W | energy J | J/token | peak used MiB | engine GPU MiB | DRAM BW util % | max °C |");
    let _ = writeln!(
        s,
        "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in &with {
        let t = r.telemetry.as_ref().expect("filtered");
        for d in t.raw.devices.iter().filter(|d| d.error.is_some()) {
            let _ = writeln!(
                s,
                "| {} | - | {} | not sampled: {} |||||||||||",
                r.target,
                d.index,
                d.error.as_deref().unwrap_or_default()
            );
        }
        for st in &t.scenarios {
            let scenario = match st.level {
                Some(l) if st.scenario == ScenarioId::S2 => format!("{} b{l}", st.scenario),
                Some(l) => format!("{} c{l}", st.scenario),
                None => st.scenario.clone(),
            };
            let throttled = if st.throttled_windows == 0 {
                "0".to_string()
            } else {
                format!("**{}** ({})", st.throttled_windows, st.slowdowns.join(", "))
            };
            let mib = |b: Option<u64>| b.map_or("-".to_string(), |b| (b >> 20).to_string());
            let _ = writeln!(
                s,
                "| {} | {scenario} | {} | {} | {throttled} | {} | {} ({}) | {} | {} | {}{} | {} | {} | {} | {} | {} |",
                r.target,
                st.device,
                st.windows,
                num(st.gpu_util_mean_pct, 0),
                num(st.sm_mhz_mean, 0),
                st.sm_mhz_min.map_or("-".into(), |v| v.to_string()),
                num(st.mem_mhz_mean, 0),
                num(st.mean_power_w, 1),
                num(st.energy_j, 1),
                if st.energy_estimated { "*" } else { "" },
                num(st.joules_per_token, 4),
                mib(st.peak_used_bytes),
                mib(st.peak_engine_bytes),
                num(st.dram_bw_util_mean_pct, 1),
                st.temperature_max_c.map_or("-".into(), |v| v.to_string()),
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use lab_results::results::fixture::fixture;

    #[test]
    fn telemetry_rows_say_what_was_sampled_and_flag_throttling() {
        let (manifest, mut results) = fixture();
        assert_eq!(telemetry_section(&results), "", "no telemetry, no section");
        // The fixture's S1 iterations, placed on a timeline sampled every 100 ms at 300 W with
        // a power cap throughout.
        let r = &mut results[0];
        lab_results::results::fixture::with_telemetry(r);
        let n = r.report.scenarios[0]
            .prompts
            .iter()
            .map(|p| p.samples.len())
            .sum::<usize>();
        let s = telemetry_section(&results);
        assert!(s.contains("every 100 ms (fake device (test))"), "{s}");
        let row = s
            .lines()
            .find(|l| l.starts_with("| mock:hf-f32 | s1 | 0 |"))
            .unwrap_or_else(|| panic!("no s1 row in\n{s}"));
        assert!(
            row.contains(&format!(
                "| {n} | **{n}** (sw_power_cap) | 97 | 1980 (1980) |"
            )),
            "{row}"
        );
        assert!(row.contains("| 300.0 |"), "{row}");
        assert!(row.contains("| 700 |"), "{row}");
        assert!(s.contains("| mock:hf-f32 | - | 1 | not sampled: no GPU with index 1"));
        // And the whole report carries it.
        assert!(crate::render_markdown(&manifest, &results).contains("## GPU telemetry"));
    }
}
