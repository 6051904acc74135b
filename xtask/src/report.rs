//! `cargo xtask report <run>`: re-renders a run's reports (`report.md`, `charts/*.svg`,
//! `index.html`) from its saved files — also a run recorded before a format existed — with an
//! optional price and claims file.

use std::path::PathBuf;

use anyhow::{Context, Result};
use lab_report::{self as report, Input};
use lab_results::claims::Claims;
use lab_results::cost::Price;
use lab_results::results;

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
    let check = lab_results::check::read_check(&flags.run)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use xshell::{cmd, Shell};

    fn copy_run(name: &str, tag: &str) -> PathBuf {
        let from = crate::paths::root().join("results").join(name);
        let to = std::env::temp_dir().join(format!("xtask-report-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&to);
        std::fs::create_dir_all(&to).unwrap();
        for e in std::fs::read_dir(&from).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_file() {
                std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
            }
        }
        to
    }

    fn flags(run: &Path, price: Option<f64>, claims: Option<PathBuf>) -> Flags {
        Flags {
            run: run.to_path_buf(),
            price: PriceFlags {
                price_per_hour: price,
                price_source: price.map(|_| "a test price".to_string()),
            },
            claims,
        }
    }

    /// A real browser: `$LAB_BROWSER`, else Chromium on PATH. None (the test says SKIPPED)
    /// unless `LAB_REQUIRE_BROWSER=1` (CI installs Debian's chromium and sets it).
    fn browser() -> Option<String> {
        let found = std::env::var("LAB_BROWSER").ok().or_else(|| {
            ["chromium", "chromium-browser", "google-chrome"]
                .into_iter()
                .find(|b| {
                    std::env::var_os("PATH")
                        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(b).is_file()))
                })
                .map(String::from)
        });
        if found.is_none() {
            assert!(
                std::env::var("LAB_REQUIRE_BROWSER").as_deref() != Ok("1"),
                "LAB_REQUIRE_BROWSER=1 but no chromium on PATH (and no LAB_BROWSER)"
            );
            eprintln!("browser test: SKIPPED (no chromium on PATH; apt install chromium)");
        }
        found
    }

    #[test]
    fn an_old_run_re_renders_and_chromium_shows_every_engine_chart_and_claim() {
        // A run recorded before the HTML report existed (report.md only).
        let run = copy_run("cpu-load-all-quick-20261129", "browser");
        assert!(!run.join("index.html").exists());
        super::run(flags(&run, Some(0.05), None)).unwrap();
        let (manifest, results) = results::load_run(&run).unwrap();
        let charts = report::charts::render(&manifest, &results);
        assert!(charts.charts.len() >= 10, "{:?}", charts.missing);
        for c in &charts.charts {
            let svg =
                std::fs::read_to_string(run.join("charts").join(format!("{}.svg", c.id))).unwrap();
            assert_eq!(svg, c.svg);
        }
        let Some(browser) = browser() else {
            return;
        };
        let sh = Shell::new().unwrap();
        let profile = run.join("browser-profile");
        let url = format!("file://{}", run.join("index.html").display());
        let args = &[
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--no-first-run".into(),
            format!("--user-data-dir={}", profile.display()),
            "--window-size=1280,2400".into(),
        ];
        let dom = cmd!(sh, "{browser} {args...} --dump-dom {url}")
            .ignore_stderr()
            .read()
            .unwrap();
        // Every target that ran has its row in the S1 table, as the browser parsed it.
        let s1 = &dom[dom.find("id=\"table-s1\"").expect("an S1 table")..];
        let s1 = &s1[..s1.find("</table>").unwrap()];
        for t in manifest.targets.iter().filter(|t| t.file.is_some()) {
            assert!(
                s1.contains(&format!("<td>{}</td>", t.target)),
                "{} missing from the S1 table",
                t.target
            );
        }
        // Every chart is an inline SVG in its figure.
        for c in &charts.charts {
            let at = dom
                .find(&format!("<figure id=\"chart-{}\"", c.id))
                .unwrap_or_else(|| panic!("no figure for {}", c.id));
            assert!(
                dom[at..]
                    .trim_start_matches(|ch| ch != '>')
                    .get(1..60)
                    .unwrap_or("")
                    .contains("<svg"),
                "{} has no svg",
                c.id
            );
        }
        // Every claim is judged, the price is shown, and the page's script ran (sortable headers).
        let claims = Claims::builtin();
        let table = &dom[dom.find("id=\"table-claims\"").unwrap()..];
        let table = &table[..table.find("</table>").unwrap()];
        assert_eq!(table.matches("<tr>").count(), claims.claims.len() + 1);
        assert!(dom.contains("$0.05/h (a test price)"));
        assert!(
            dom.contains("<th class=\"sortable\""),
            "the inline script did not run"
        );
        // And it renders: a screenshot of the page.
        let shot = run.join("screenshot.png");
        let screenshot = format!("--screenshot={}", shot.display());
        cmd!(sh, "{browser} {args...} {screenshot} {url}")
            .ignore_stderr()
            .ignore_stdout()
            .run()
            .unwrap();
        let png = std::fs::read(&shot).unwrap();
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 50_000,
            "{} bytes",
            png.len()
        );
        let _ = std::fs::remove_dir_all(&run);
    }

    #[test]
    fn bad_input_is_refused_before_anything_is_written() {
        let run = copy_run("cpu-load-native-llamacpp-20261129", "bad");
        for price in [0.0, -2.0] {
            let e = super::run(flags(&run, Some(price), None))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("--price-per-hour") && e.contains("positive"),
                "{e}"
            );
        }
        let claims = run.join("claims.json");
        std::fs::write(
            &claims,
            r#"{"claims":[{"id":"x","claim":"c","source":"s","condition":"k","check":{"kind":"range","metric":"tokens_per_second","device":"cpu","engines":["native"],"min":1,"max":2}}]}"#,
        )
        .unwrap();
        let e = super::run(flags(&run, None, Some(claims.clone())))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("claims.json: claim `x`: unknown metric `tokens_per_second`"),
            "{e}"
        );
        assert!(!run.join("index.html").exists() && !run.join("charts").exists());
        let _ = std::fs::remove_dir_all(&run);
    }

    #[test]
    fn every_committed_run_renders() {
        let claims = Claims::builtin();
        let root = crate::paths::root().join("results");
        let mut n = 0;
        for e in std::fs::read_dir(&root).unwrap() {
            let dir = e.unwrap().path();
            if !dir.join("run.json").exists() {
                continue;
            }
            let (manifest, results) = results::load_run(&dir).unwrap();
            let input = Input {
                manifest: &manifest,
                results: &results,
                price: None,
                claims: &claims,
                check: None,
            };
            let files: Vec<(String, String)> = report::exporters()
                .iter()
                .flat_map(|x| x.render(&input))
                .collect();
            let html = &files.iter().find(|(n, _)| n == "index.html").unwrap().1;
            for r in &results {
                assert!(html.contains(&r.target), "{}: {}", dir.display(), r.target);
            }
            n += 1;
        }
        assert!(n >= 10, "{n} runs");
    }
}
