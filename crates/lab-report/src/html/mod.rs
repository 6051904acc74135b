//! `index.html`: the whole run in one self-contained page — no network, no CDN, inline CSS,
//! inline SVG charts and a few lines of inline script (sortable tables); it works from a
//! `file://` URL. Links point at the run's raw files beside it.
//!
//! This module holds the page's frame (style, script, navigation) and the shared table helper;
//! each section is rendered in its own file, and [`compare_page`] is the comparison's page.

mod analyses;
mod charts;
mod compare;
mod cost;
mod provenance;
mod scenarios;
mod summary;
mod verdicts;

use std::fmt::Write as _;

use crate::fmt::fmt_num;
use crate::input::Input;
use crate::model::Model;
use lab_results::results::TargetResult;

pub use compare::compare_page;

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

const STYLE: &str = r#"
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1180px;padding:1rem 1.5rem;color:#1d1d1f;line-height:1.45}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{margin-top:2.2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
nav a{margin-right:.8rem}table{border-collapse:collapse;margin:.6rem 0;font-size:.86rem}
th,td{border:1px solid #d6d6d6;padding:.22rem .5rem;vertical-align:top}th{background:#f3f4f6;text-align:left}
th.sortable{cursor:pointer}th.sortable:after{content:" \2195";color:#999}td.num{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#146c2e;font-weight:600}.bad{color:#b3261e;font-weight:600}.meh{color:#8a5a00;font-weight:600}
.note{color:#555;font-size:.88rem}figure{margin:1rem 0}.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(540px,1fr));gap:.5rem 1rem}
figure svg{max-width:100%;height:auto}figcaption{font-size:.85rem;color:#444}
.verdict{background:#f6f8fa;border-left:4px solid #4e79a7;padding:.6rem 1rem}code{background:#f3f4f6;padding:0 .2rem}
"#;

/// Click a header to sort its table (numbers numerically, text alphabetically).
const SCRIPT: &str = r#"
document.querySelectorAll("table.sortable").forEach(function(t){
  t.querySelectorAll("th").forEach(function(th,i){
    th.classList.add("sortable");
    th.addEventListener("click",function(){
      var body=t.tBodies[0],rows=Array.prototype.slice.call(body.rows);
      var asc=th.getAttribute("data-asc")!=="1";th.setAttribute("data-asc",asc?"1":"0");
      function key(r){var s=r.cells[i]?r.cells[i].textContent:"";var n=parseFloat(s.replace(/[^0-9.eE+-]/g,""));return isNaN(n)?s:n;}
      rows.sort(function(a,b){var x=key(a),y=key(b);if(typeof x==="number"&&typeof y==="number")return asc?x-y:y-x;return asc?String(x).localeCompare(String(y)):String(y).localeCompare(String(x));});
      rows.forEach(function(r){body.appendChild(r);});
    });
  });
});
"#;

/// A table whose cells are already HTML; `num` marks right-aligned numeric columns.
fn table(id: &str, head: &[&str], num: &[bool], rows: &[Vec<String>]) -> String {
    let mut s = format!("<table class=\"sortable\" id=\"{}\"><thead><tr>", esc(id));
    for h in head {
        let _ = write!(s, "<th>{}</th>", esc(h));
    }
    s.push_str("</tr></thead><tbody>\n");
    for r in rows {
        s.push_str("<tr>");
        for (i, c) in r.iter().enumerate() {
            if num.get(i).copied().unwrap_or(false) {
                let _ = write!(s, "<td class=\"num\">{c}</td>");
            } else {
                let _ = write!(s, "<td>{c}</td>");
            }
        }
        s.push_str("</tr>\n");
    }
    s.push_str("</tbody></table>\n");
    s
}

fn opt(v: Option<f64>) -> String {
    v.map(fmt_num).unwrap_or_else(|| "-".into())
}

fn first(results: &[TargetResult]) -> Vec<&TargetResult> {
    results.iter().filter(|r| r.run() == 1).collect()
}

/// The page.
pub fn render(input: &Input) -> String {
    page(input, &Model::of(input.results))
}

/// The page, from the computed report model.
pub fn page(input: &Input, model: &Model) -> String {
    let m = input.manifest;
    let st = &m.settings;
    let mut body = String::new();
    let synthetic = if st.model.synthetic {
        " (SYNTHETIC random weights: speed only)"
    } else {
        ""
    };
    let _ = write!(
        body,
        "<h1>Run {}</h1>\n<p class=\"note\">{} on {} — {} threads, runtime {}, hardware profile <code>{}</code>, status {:?}{}</p>\n",
        esc(&m.run_id),
        esc(&st.model.name),
        esc(&st.device.to_string()),
        st.threads,
        esc(&st.runtime.to_string()),
        esc(&m.profile),
        m.status,
        esc(synthetic)
    );
    let sections = [
        ("summary", "Summary"),
        ("scenarios", "Scenarios"),
        ("charts", "Charts"),
        ("analyses", "Analyses"),
        ("cost", "Cost and energy"),
        ("claims", "Published claims"),
        ("correctness", "Correctness"),
        ("check", "Check"),
        ("provenance", "Provenance"),
        ("files", "Raw files"),
    ];
    body.push_str("<nav>");
    for (id, name) in sections {
        let _ = write!(body, "<a href=\"#{id}\">{name}</a>");
    }
    body.push_str("</nav>\n");
    body.push_str(&summary::summary(input, model));
    body.push_str(&scenarios::scenarios(input));
    body.push_str(&charts::charts(&model.charts));
    body.push_str(&analyses::analyses(input));
    body.push_str(&cost::cost(input));
    body.push_str(&verdicts::claims(input));
    body.push_str(&verdicts::correctness(input));
    body.push_str(&verdicts::check(input));
    body.push_str(&provenance::provenance(input));
    body.push_str(&provenance::files(input));
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>Run {}</title><style>{STYLE}</style></head>\n<body>\n{body}<script>{SCRIPT}</script>\n</body></html>\n",
        esc(&m.run_id)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use lab_results::claims::Claims;
    use lab_results::cost::Price;
    use lab_results::results::fixture::fixture_engines;

    #[test]
    fn the_page_holds_every_target_chart_claim_and_section_and_nothing_external() {
        let (m, r) = fixture_engines();
        let claims = Claims::builtin();
        let price = Price::new(1.5, Some("a test price")).unwrap();
        let input = Input {
            manifest: &m,
            results: &r,
            price: Some(&price),
            claims: &claims,
            check: None,
        };
        let page = render(&input);
        assert_eq!(page, render(&input), "deterministic");
        for t in &r {
            assert!(
                page.contains(&format!("<tr><td>{}</td>", esc(&t.target))),
                "{}",
                t.target
            );
        }
        for c in crate::charts::render(&m, &r).charts {
            assert!(
                page.contains(&format!("<figure id=\"chart-{}\"", c.id)),
                "{}",
                c.id
            );
        }
        for c in &claims.claims {
            assert!(page.contains(&esc(&c.claim)), "{}", c.id);
        }
        for id in [
            "summary",
            "scenarios",
            "charts",
            "cost",
            "claims",
            "correctness",
            "check",
            "provenance",
            "files",
        ] {
            assert!(page.contains(&format!("<h2 id=\"{id}\">")), "{id}");
        }
        assert!(page.contains("$1.50/h (a test price)"));
        assert!(
            page.contains("mock:hf-f16 (Failed: mock:hf-f16: timed out"),
            "the failed target is in the summary"
        );
        // Self-contained: no URL but relative links to the run's own files.
        for bad in ["http://", "https://", "src=\"", "@import", "<link"] {
            let outside: Vec<&str> = page
                .match_indices(bad)
                .map(|(i, _)| &page[i..(i + 60).min(page.len())])
                .filter(|s| !s.starts_with("http://www.w3.org/2000/svg"))
                .collect();
            assert!(outside.is_empty(), "{bad}: {outside:?}");
        }
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
