//! Number formats every report shares.

/// Three significant figures' worth: no decimals from 100, one from 10, else two.
pub fn fmt_num(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// MiB with one decimal, or `-`.
pub fn mib(b: Option<u64>) -> String {
    b.map_or("-".into(), |b| format!("{:.1}", b as f64 / 1048576.0))
}

/// How a target ran, as text (`native` for results older than containers).
pub fn ran_under(r: &lab_results::results::TargetResult) -> String {
    r.runtime
        .as_ref()
        .map_or_else(|| "native".to_string(), |x| x.to_string())
}
