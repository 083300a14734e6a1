//! The run report: one self-contained HTML page (inline CSS, JS and drawing; no network)
//! with the timeline's data embedded as JSON. The page itself lives in `report.html`; this
//! only puts the data in. The lanes are drawn on one canvas and hit-tested by lane and
//! time, so a run of thousands of executions stays as fast as a small one.
use super::Timeline;

const TEMPLATE: &str = include_str!("report.html");
/// Where the data goes in the template (inside a `<script type="application/json">`).
const DATA_MARKER: &str = "\"__AGENTFLEET_TIMELINE__\"";

/// The id of the `<script>` element holding the data, for tests reading a page back.
pub const DATA_ELEMENT_ID: &str = "timeline-data";

/// The whole page for `timeline`.
pub fn render(timeline: &Timeline) -> String {
    let json = serde_json::to_string(timeline).unwrap_or_else(|_| "null".to_owned());
    TEMPLATE.replacen(DATA_MARKER, &script_safe(&json), 1)
}

/// JSON that cannot end its `<script>` element or open a comment there: `<`, `>` and `&`
/// as JSON escapes (job output is not trusted). The JSON still parses to the same value.
fn script_safe(json: &str) -> String {
    let mut out = String::with_capacity(json.len() + json.len() / 50);
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// The timeline embedded in a page `render` made (for tests and tools reading a report).
pub fn embedded_json(page: &str) -> Option<serde_json::Value> {
    let open = format!("<script type=\"application/json\" id=\"{DATA_ELEMENT_ID}\">");
    let start = page.find(&open)? + open.len();
    let end = start + page[start..].find("</script>")?;
    serde_json::from_str(&page[start..end]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_has_one_data_marker_in_its_data_element() {
        assert_eq!(TEMPLATE.matches(DATA_MARKER).count(), 1);
        let open = format!("<script type=\"application/json\" id=\"{DATA_ELEMENT_ID}\">");
        assert!(TEMPLATE.contains(&format!("{open}{DATA_MARKER}</script>")));
    }

    #[test]
    fn the_page_needs_no_network() {
        for remote in ["http://", "https://", "//cdn", "src=\"", "@import"] {
            assert!(
                !TEMPLATE.contains(remote),
                "the template refers to {remote}"
            );
        }
    }

    #[test]
    fn job_output_cannot_close_the_script() {
        let json = r#"{"line":"</script><script>alert(1)</script> & <!--"}"#;
        let safe = script_safe(json);
        assert!(!safe.contains('<') && !safe.contains('>'));
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(back["line"], "</script><script>alert(1)</script> & <!--");
    }
}
