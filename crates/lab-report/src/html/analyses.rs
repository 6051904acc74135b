//! The HTML report's analyses section: the tables of the `kv` and `sampling` scenarios
//! ([`crate::analyses`]).

use std::fmt::Write as _;

use super::{esc, table};
use crate::input::Input;

/// The analysis tables, or a line saying the run has none.
pub(super) fn analyses(input: &Input) -> String {
    let mut s = String::from("<h2 id=\"analyses\">Analyses</h2>\n");
    let tables = crate::analyses::tables(input.results);
    if tables.is_empty() {
        s.push_str("<p class=\"note\">Not in this run (scenarios <code>kv</code> and <code>sampling</code>).</p>\n");
    }
    for t in tables {
        let _ = writeln!(
            s,
            "<h3>{}</h3>\n<p class=\"note\">{}</p>",
            esc(t.title),
            esc(&t.note)
        );
        let rows: Vec<Vec<String>> = t
            .rows
            .iter()
            .map(|r| r.iter().map(|c| esc(c)).collect())
            .collect();
        s.push_str(&table(t.id, &t.head, &t.numeric, &rows));
    }
    s
}
