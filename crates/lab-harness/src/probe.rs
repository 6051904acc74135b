//! The machine's read bandwidth (`native-membw`, built with engine-native): measured once before
//! the engines (provenance) and around every engine (the gate's drift control).

use std::path::Path;

use crate::Result;

/// The machine's read bandwidth with `threads` threads (`bin` = `native-membw`, built with
/// engine-native), for the achieved-bandwidth figures; `None` (said on stderr) when it cannot run.
pub fn read_bandwidth(bin: &Path, threads: usize) -> Option<f64> {
    match measure_bandwidth(bin, threads) {
        Ok((gbs, text)) => {
            eprintln!("{text}");
            gbs
        }
        Err(e) => {
            eprintln!("read bandwidth not measured: {}: {e}", bin.display());
            None
        }
    }
}

/// [`read_bandwidth`] without a word on stderr: the probes around every engine.
pub fn probe_bandwidth(bin: &Path, threads: usize) -> Option<f64> {
    measure_bandwidth(bin, threads)
        .ok()
        .and_then(|(gbs, _)| gbs)
}

fn measure_bandwidth(bin: &Path, threads: usize) -> Result<(Option<f64>, String)> {
    let threads = threads.to_string();
    let text = xshell::Shell::new()
        .and_then(|sh| {
            xshell::cmd!(sh, "{bin} {threads} 512")
                .quiet()
                .ignore_stderr()
                .read()
        })
        .map_err(|e| crate::Error::msg(e.to_string()))?;
    let gbs = text
        .strip_prefix("read bandwidth: ")
        .and_then(|t| t.split_whitespace().next())
        .and_then(|v| v.parse().ok());
    Ok((gbs, text.trim().to_string()))
}
