//! Whether a report is what its request asked for. An engine that exits 0 with a valid report
//! can still lie: drop a scenario, answer another, generate fewer tokens than asked, or time
//! fewer tokens than it generated. Such a report is kept (as evidence) but its target is
//! failed, with the first problem as the cause; nothing of it reaches a baseline as a success.

use lab_protocol::{Report, Request, ScenarioKind};

/// Every way `report` departs from `request`, one line each (empty: consistent). A report with
/// a fatal `error` is not checked further (the error is its cause); a scenario with an error
/// or that is unsupported only needs to be present.
pub fn problems(request: &Request, report: &Report) -> Vec<String> {
    let mut out = Vec::new();
    if report.error.is_some() {
        return out;
    }
    for asked in &request.scenarios {
        let Some(got) = report.scenarios.iter().find(|s| s.id == asked.id) else {
            out.push(format!("scenario {} is missing from the report", asked.id));
            continue;
        };
        if got.kind != asked.kind {
            out.push(format!(
                "scenario {}: reported as {:?}, asked as {:?}",
                asked.id, got.kind, asked.kind
            ));
            continue;
        }
        if got.error.is_some() || got.unsupported.is_some() {
            continue;
        }
        if !matches!(
            asked.kind,
            ScenarioKind::SingleRequestLatency | ScenarioKind::TeacherForced
        ) {
            continue;
        }
        if got.prompts.len() != asked.prompts.len() {
            out.push(format!(
                "scenario {}: {} prompts reported, {} asked",
                asked.id,
                got.prompts.len(),
                asked.prompts.len()
            ));
        }
        let g = &asked.generation;
        for p in &got.prompts {
            let generated = p.generated_token_ids.len();
            // (Teacher forcing generates as many tokens as it is fed, whatever the setting.)
            let fixed_length = asked.kind == ScenarioKind::SingleRequestLatency && !g.stop_at_eos;
            if fixed_length && generated != g.max_new_tokens as usize {
                out.push(format!(
                    "scenario {} prompt {}: {generated} tokens generated, {} asked",
                    asked.id, p.prompt, g.max_new_tokens
                ));
            }
            for (i, s) in p.samples.iter().enumerate() {
                let gaps_ok =
                    s.new_tokens == 0 || s.inter_token_ns.len() + 1 == s.new_tokens as usize;
                if s.new_tokens as usize != generated || !gaps_ok || s.ttft_ns > s.e2e_ns {
                    out.push(format!(
                        "scenario {} prompt {} iteration {}: {} tokens timed with {} gaps (TTFT {} ns, end-to-end {} ns) for {generated} generated",
                        asked.id, p.prompt, i + 1, s.new_tokens, s.inter_token_ns.len(), s.ttft_ns, s.e2e_ns
                    ));
                    break;
                }
            }
        }
    }
    for got in &report.scenarios {
        if !request.scenarios.iter().any(|a| a.id == got.id) {
            out.push(format!("scenario {} was not asked for", got.id));
        }
    }
    out
}
