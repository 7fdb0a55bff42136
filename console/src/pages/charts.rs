//! Small bar charts drawn as SVG on the server: no chart library, no script,
//! and a screenshot or a page printed to PDF shows them as they are. Labels
//! are escaped here, since the markup is built outside a template.

use std::fmt::Write;

use crate::format::escape;

/// One bar: its label under the axis, its value, and the text shown on hover.
pub struct Bar {
    pub label: String,
    pub value: i64,
    pub title: String,
}

const WIDTH: i64 = 960;
const HEIGHT: i64 = 180;
const AXIS: i64 = 22;

/// Vertical bars, scaled to the largest, with a dashed line at that height
/// labelled with it (`scale` writes the value: yuan, a count, milliseconds),
/// so the chart reads without hovering; an empty series says so.
pub fn columns(bars: &[Bar], color: &str, scale: impl Fn(i64) -> String) -> String {
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg viewBox=\"0 0 {WIDTH} {}\" role=\"img\" xmlns=\"http://www.w3.org/2000/svg\">",
        HEIGHT + AXIS
    );
    if bars.is_empty() || bars.iter().all(|b| b.value == 0) {
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#5b6475\" font-size=\"14\">nothing in this period</text></svg>",
            WIDTH / 2,
            HEIGHT / 2
        );
        return svg;
    }
    let max = bars.iter().map(|b| b.value).max().unwrap_or(1).max(1);
    let top = HEIGHT - (HEIGHT - 16);
    let _ = write!(
        svg,
        "<line x1=\"0\" y1=\"{top}\" x2=\"{WIDTH}\" y2=\"{top}\" stroke=\"#c9ced8\" stroke-dasharray=\"4 4\"/>\
         <text x=\"2\" y=\"{}\" fill=\"#5b6475\" font-size=\"11\" class=\"scale\">{}</text>",
        top - 4,
        escape(&scale(max))
    );
    let n = i64::try_from(bars.len()).unwrap_or(1).max(1);
    let slot = WIDTH / n;
    let bar_w = (slot * 7 / 10).max(1);
    // Label every bar when they fit, else every few.
    let every = (n / 12).max(1);
    for (i, b) in bars.iter().enumerate() {
        let i = i64::try_from(i).unwrap_or(0);
        let h = if b.value <= 0 {
            0
        } else {
            (b.value * (HEIGHT - 16) / max).max(2)
        };
        let x = i * slot + (slot - bar_w) / 2;
        let y = HEIGHT - h;
        let _ = write!(
            svg,
            "<rect x=\"{x}\" y=\"{y}\" width=\"{bar_w}\" height=\"{h}\" fill=\"{color}\"><title>{}</title></rect>",
            escape(&b.title)
        );
        if i % every == 0 {
            let _ = write!(
                svg,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#5b6475\" font-size=\"11\">{}</text>",
                x + bar_w / 2,
                HEIGHT + 15,
                escape(&b.label)
            );
        }
    }
    let _ = write!(
        svg,
        "<line x1=\"0\" y1=\"{HEIGHT}\" x2=\"{WIDTH}\" y2=\"{HEIGHT}\" stroke=\"#c9ced8\"/></svg>"
    );
    svg
}

/// Horizontal bars with their label and value written beside them.
pub fn rows(bars: &[Bar], color_of: impl Fn(&Bar) -> &'static str) -> String {
    let row_h = 26;
    let n = i64::try_from(bars.len()).unwrap_or(0);
    let height = (n * row_h).max(40);
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg viewBox=\"0 0 {WIDTH} {height}\" role=\"img\" xmlns=\"http://www.w3.org/2000/svg\">"
    );
    if bars.is_empty() {
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"24\" text-anchor=\"middle\" fill=\"#5b6475\" font-size=\"14\">nothing in this period</text></svg>",
            WIDTH / 2
        );
        return svg;
    }
    let max = bars.iter().map(|b| b.value).max().unwrap_or(1).max(1);
    let label_w = 330;
    for (i, b) in bars.iter().enumerate() {
        let y = i64::try_from(i).unwrap_or(0) * row_h;
        let w = if b.value <= 0 {
            0
        } else {
            (b.value * (WIDTH - label_w - 90) / max).max(2)
        };
        let _ = write!(
            svg,
            "<text x=\"0\" y=\"{}\" fill=\"#1d2433\" font-size=\"13\">{}</text>\
             <rect x=\"{label_w}\" y=\"{}\" width=\"{w}\" height=\"16\" fill=\"{}\"><title>{}</title></rect>\
             <text x=\"{}\" y=\"{}\" fill=\"#5b6475\" font-size=\"12\">{}</text>",
            y + 17,
            escape(&b.label),
            y + 5,
            color_of(b),
            escape(&b.title),
            label_w + w + 8,
            y + 17,
            escape(&crate::format::count(b.value)),
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped_and_bars_scaled() {
        let bars = [
            Bar {
                label: "<b>".into(),
                value: 10,
                title: "ten".into(),
            },
            Bar {
                label: "x".into(),
                value: 5,
                title: "five".into(),
            },
        ];
        let svg = rows(&bars, |_| "#000");
        assert!(svg.contains("&lt;b&gt;"));
        assert!(!svg.contains("<b>"));
        let svg = columns(&bars, "#0a7b4f", |v| format!("{v} max"));
        assert_eq!(svg.matches("<rect").count(), 2);
        assert!(
            svg.contains(">10 max</text>"),
            "the scale names the largest value"
        );
        assert!(columns(&[], "#000", |v| v.to_string()).contains("nothing in this period"));
    }
}
