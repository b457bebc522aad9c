//! The endpoint page's chart, drawn on the server as SVG: attempts per hour
//! over the last 24 hours (succeeded and failed, stacked) and the average
//! attempt duration per hour as a line. No script, nothing fetched.

use std::fmt::Write as _;

use serde_json::Value;

const W: f64 = 720.0;
const H: f64 = 200.0;
const LEFT: f64 = 44.0;
const RIGHT: f64 = 52.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;

#[derive(Default, Clone, Copy)]
struct Hour {
    ok: u32,
    failed: u32,
    duration_ms: u64,
}

/// The chart of the attempts of `deliveries` (as the API lists them) in the
/// 24 hours before `now`, and a text summary for screen readers.
pub fn deliveries_24h(deliveries: &[Value], now: jiff::Timestamp) -> String {
    let mut hours = [Hour::default(); 24];
    const DAY_MS: i64 = 24 * 3600 * 1000;
    let start = now.as_millisecond() - DAY_MS;
    for d in deliveries {
        for a in d["attempts"].as_array().into_iter().flatten() {
            let Some(at) = a["at"]
                .as_str()
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            else {
                continue;
            };
            // The window is the 24 hours up to now, now included.
            let offset = at.as_millisecond() - start;
            if !(1..=DAY_MS).contains(&offset) {
                continue;
            }
            let h = &mut hours[((offset - 1) / 3_600_000) as usize];
            let code = a["statusCode"].as_u64().unwrap_or(0);
            if (200..300).contains(&code) {
                h.ok += 1;
            } else {
                h.failed += 1;
            }
            h.duration_ms += a["durationMs"].as_u64().unwrap_or(0);
        }
    }
    let total_ok: u32 = hours.iter().map(|h| h.ok).sum();
    let total_failed: u32 = hours.iter().map(|h| h.failed).sum();
    let max_count = hours
        .iter()
        .map(|h| h.ok + h.failed)
        .max()
        .unwrap_or(0)
        .max(1);
    let avg = |h: &Hour| {
        let n = h.ok + h.failed;
        (n > 0).then(|| h.duration_ms as f64 / f64::from(n))
    };
    let max_ms = hours.iter().filter_map(avg).fold(0.0f64, f64::max).max(1.0);
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let bar_w = plot_w / 24.0;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-labelledby="chart-title" xmlns="http://www.w3.org/2000/svg"><title id="chart-title">Attempts in the last 24 hours: {total_ok} succeeded, {total_failed} failed</title>"#
    );
    // Axes and gridlines.
    for i in 0..=4 {
        let y = TOP + plot_h * f64::from(i) / 4.0;
        let count = f64::from(max_count) * f64::from(4 - i) / 4.0;
        let ms = max_ms * f64::from(4 - i) / 4.0;
        let _ = write!(
            svg,
            r#"<line class="grid" x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}"/><text class="axis ms" x="{:.1}" y="{:.1}">{ms:.0} ms</text>"#,
            W - RIGHT,
            W - RIGHT + 6.0,
            y + 4.0
        );
        // Counts at the top and the bottom only (whole numbers).
        if i == 0 || i == 4 {
            let _ = write!(
                svg,
                r#"<text class="axis" x="{:.1}" y="{:.1}" text-anchor="end">{count:.0}</text>"#,
                LEFT - 6.0,
                y + 4.0
            );
        }
    }
    for (i, h) in hours.iter().enumerate() {
        let x = LEFT + bar_w * i as f64 + 1.0;
        let ok_h = plot_h * f64::from(h.ok) / f64::from(max_count);
        let failed_h = plot_h * f64::from(h.failed) / f64::from(max_count);
        let base = TOP + plot_h;
        if h.ok > 0 {
            let _ = write!(
                svg,
                r#"<rect class="ok" x="{x:.1}" y="{:.1}" width="{:.1}" height="{ok_h:.1}"><title>{} succeeded</title></rect>"#,
                base - ok_h,
                bar_w - 2.0,
                h.ok
            );
        }
        if h.failed > 0 {
            let _ = write!(
                svg,
                r#"<rect class="failed" x="{x:.1}" y="{:.1}" width="{:.1}" height="{failed_h:.1}"><title>{} failed</title></rect>"#,
                base - ok_h - failed_h,
                bar_w - 2.0,
                h.failed
            );
        }
        if i % 6 == 0 {
            let _ = write!(
                svg,
                r#"<text class="axis" x="{x:.1}" y="{:.1}">-{}h</text>"#,
                H - 8.0,
                24 - i
            );
        }
    }
    let points: Vec<String> = hours
        .iter()
        .enumerate()
        .filter_map(|(i, h)| {
            let ms = avg(h)?;
            let x = LEFT + bar_w * (i as f64 + 0.5);
            let y = TOP + plot_h * (1.0 - ms / max_ms);
            Some(format!("{x:.1},{y:.1}"))
        })
        .collect();
    if !points.is_empty() {
        let _ = write!(
            svg,
            r#"<polyline class="latency" points="{}"/>"#,
            points.join(" ")
        );
        for p in &points {
            if let Some((x, y)) = p.split_once(',') {
                let _ = write!(
                    svg,
                    r#"<circle class="latency-dot" cx="{x}" cy="{y}" r="3"/>"#
                );
            }
        }
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn counts_attempts_of_the_last_24_hours_only() {
        let now: jiff::Timestamp = "2026-11-29T12:00:00Z".parse().unwrap();
        let d = json!([{"attempts": [
            {"at": "2026-11-29T12:00:00Z", "statusCode": 200, "durationMs": 12},
            {"at": "2026-11-29T11:40:00Z", "statusCode": 500, "durationMs": 30},
            {"at": "2026-11-27T11:40:00Z", "statusCode": 200, "durationMs": 30}
        ]}]);
        let svg = deliveries_24h(d.as_array().unwrap(), now);
        assert!(svg.contains("1 succeeded, 1 failed"), "{svg}");
        assert!(svg.contains(r#"class="latency""#));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
    }
}
