//! `cargo xtask report <run>`: re-renders a run's reports (`report.md`, `charts/*.svg`,
//! `index.html`) from its saved files — also a run recorded before a format existed — with an
//! optional price and claims file.

use std::path::PathBuf;

use anyhow::{Context, Result};
use lab_harness::cost::Price;
use lab_harness::report::{self, claims::Claims, Input};
use lab_harness::results;

/// `--price-per-hour` and `--price-source`, shared by `bench` and `report`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct PriceFlags {
    /// What an hour of this machine costs in US dollars, for the reports' $ per 1M generated
    /// tokens (the lab has no prices of its own).
    #[arg(long, value_name = "USD")]
    pub price_per_hour: Option<f64>,
    /// Where that price comes from (provider, price list, date); recorded with it.
    #[arg(long, requires = "price_per_hour", value_name = "TEXT")]
    pub price_source: Option<String>,
}

impl PriceFlags {
    pub fn price(&self) -> Result<Option<Price>> {
        self.price_per_hour
            .map(|p| Price::new(p, self.price_source.as_deref()))
            .transpose()
            .map_err(Into::into)
    }
}

#[derive(clap::Args)]
pub struct Flags {
    /// The run directory (`results/<run-id>`).
    pub run: PathBuf,
    #[command(flatten)]
    pub price: PriceFlags,
    /// A claims file instead of the committed `claims/claims.json`.
    #[arg(long)]
    pub claims: Option<PathBuf>,
}

pub fn run(flags: Flags) -> Result<()> {
    // Everything that can be refused is refused before anything is written.
    let price = flags.price.price()?;
    let claims = match &flags.claims {
        Some(p) => Claims::load(p)?,
        None => Claims::builtin(),
    };
    let (manifest, results) = results::load_run(&flags.run)?;
    let check = report::read_check(&flags.run)?;
    let price = price.or_else(|| manifest.plan.as_ref().and_then(|p| p.price.clone()));
    let input = Input {
        manifest: &manifest,
        results: &results,
        price: price.as_ref(),
        claims: &claims,
        check: check.as_ref(),
    };
    report::write_all(&flags.run, &input)
        .with_context(|| format!("writing the reports of {}", flags.run.display()))?;
    let charts = report::charts::render(&manifest, &results);
    for m in &charts.missing {
        eprintln!("not drawn: {m}");
    }
    eprintln!(
        "{} charts, report.md and the HTML report: {}",
        charts.charts.len(),
        flags.run.join(report::HTML_FILE).display()
    );
    Ok(())
}
