//! The HTML report's charts section: every chart's SVG inline, linked to its file, and the
//! charts the run could not draw.

use std::fmt::Write as _;

use super::esc;
use crate::charts::Charts;

/// Every chart inline, then the list of charts not drawn.
pub(super) fn charts(c: &Charts) -> String {
    let mut s = String::from("<h2 id=\"charts\">Charts</h2>\n");
    let _ = writeln!(
        s,
        "<p class=\"note\">Error bars: 95 % interval of the median (S2: spread of the throughput windows). Also as files under <a href=\"{d}/\">{d}/</a>.</p>",
        d = crate::charts::DIR
    );
    s.push_str("<div class=\"charts\">\n");
    for ch in &c.charts {
        // The SVG's own XML declaration is not allowed inside HTML.
        let svg = ch
            .svg
            .trim_start()
            .strip_prefix("<?xml version=\"1.0\" encoding=\"UTF-8\"?>")
            .unwrap_or(&ch.svg);
        let _ = writeln!(
            s,
            "<figure id=\"chart-{id}\" class=\"chart\">{svg}<figcaption>{} — <a href=\"{d}/{id}.svg\">{id}.svg</a></figcaption></figure>",
            esc(&ch.title),
            id = esc(&ch.id),
            d = crate::charts::DIR
        );
    }
    s.push_str("</div>\n");
    if !c.missing.is_empty() {
        s.push_str("<p class=\"note\">Not drawn:</p><ul class=\"note\" id=\"charts-missing\">");
        for line in &c.missing {
            let _ = write!(s, "<li>{}</li>", esc(line));
        }
        s.push_str("</ul>\n");
    }
    s
}
