//! What a run reports: a progress line per second, the JSON summary
//! (latency, bytes as decoded and as read from the wire, permessage-deflate,
//! storm, the edge's and the clients' cost from /proc) and the SVG latency
//! plot.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

use super::{
    plan::Plan,
    wire::{StormReport, TickRange, Totals},
    Config, Scenario,
};

/// The measured window, as the summary needs it.
pub(super) struct Window {
    /// Counts when it started.
    pub(super) base: Totals,
    /// Counts when it ended.
    pub(super) end: Totals,
    /// Its latency (µs).
    pub(super) latency: Histogram<u64>,
    /// What the storm did by its end.
    pub(super) storm: Option<StormReport>,
    /// How long it took.
    pub(super) secs: f64,
    /// CPU seconds the clients used in it (every process's client threads).
    pub(super) clients_cpu: Option<f64>,
    /// second, p50, p99, max (µs)
    pub(super) series: Vec<(u64, u64, u64, u64)>,
}

/// The edge's CPU seconds and RSS ([`proc_sample`](super::cpu::proc_sample))
/// before the clients connected, and when the window started and ended.
pub(super) struct EdgeSamples {
    pub(super) before: Option<(f64, u64)>,
    pub(super) start: Option<(f64, u64)>,
    pub(super) end: Option<(f64, u64)>,
}

/// The progress line of `second`: what arrived since `last` (MB/s as
/// decoded, then as read from the wire), and the second's latency.
pub(super) fn progress(second: usize, last: &Totals, now: &Totals, p50: u64, p99: u64) -> String {
    format!(
        "loadgen: {:>4}s deliveries/s {:>9} frames/s {:>8} MB/s {:>6.2} wire {:>6.2} gaps {:>6} latency p50 {:>7.2} ms p99 {:>7.2} ms",
        second,
        now.ticks - last.ticks,
        now.frames - last.frames,
        (now.bytes - last.bytes) as f64 / 1e6,
        (now.wire_bytes - last.wire_bytes) as f64 / 1e6,
        now.gaps - last.gaps,
        p50 as f64 / 1000.0,
        p99 as f64 / 1000.0,
    )
}

/// Appends the storm's progress since `last` to a progress line.
pub(super) fn storm_progress(
    line: &mut String,
    s: &StormReport,
    last: &StormReport,
    clients: usize,
) {
    let _ = write!(
        line,
        " storm: back {:>6}/{} admitted/s {:>6} rejected/s {:>6}",
        s.back,
        clients,
        s.admitted_total() - last.admitted_total(),
        s.rejected_total() - last.rejected_total(),
    );
}

fn ms(v: u64) -> f64 {
    v as f64 / 1000.0
}

/// The JSON summary of a run.
pub(super) fn summary(
    c: &Config,
    plan: &Plan,
    w: &Window,
    per_client: TickRange,
    producer: serde_json::Value,
    edge: EdgeSamples,
) -> serde_json::Value {
    let (h, base, end, secs) = (&w.latency, w.base, w.end, w.secs);
    let delivered = end.ticks - base.ticks;
    let (bytes, wire) = (end.bytes - base.bytes, end.wire_bytes - base.wire_bytes);
    serde_json::json!({
        "scenario": c.scenario, "clients": c.clients, "processes": c.processes,
        "symbols": plan.symbols.len(),
        "slow_clients": plan.slow_clients, "seconds": secs,
        "deliveries_per_sec": delivered as f64 / secs,
        "frames_per_sec": (end.frames - base.frames) as f64 / secs,
        "bytes": bytes,
        "bytes_per_sec": bytes as f64 / secs,
        "bytes_per_delivery": per_delivery(bytes as f64, delivered),
        "wire_bytes": wire,
        "wire_bytes_per_sec": wire as f64 / secs,
        "wire_bytes_per_delivery": per_delivery(wire as f64, delivered),
        "deflate": deflate_summary(c.deflate, &end),
        "gap_frames": end.gaps - base.gaps,
        "conflated_ticks": end.conflated - base.conflated,
        "latency_ms": {
            "p50": ms(h.value_at_quantile(0.5)), "p90": ms(h.value_at_quantile(0.9)),
            "p99": ms(h.value_at_quantile(0.99)), "p99_9": ms(h.value_at_quantile(0.999)),
            "max": ms(h.max()), "samples": h.len(),
        },
        "per_client_ticks": { "min": per_client.min, "max": per_client.max },
        "storm": storm_summary(c, w.storm.as_ref()),
        "producer": producer,
        "edge": edge_cost(edge, delivered, c.clients),
        "clients_cpu": clients_cost(w.clients_cpu, delivered),
    })
}

/// `total` per delivered tick; 0 without deliveries.
fn per_delivery(total: f64, delivered: u64) -> f64 {
    if delivered > 0 {
        total / delivered as f64
    } else {
        0.0
    }
}

/// Whether the connections offered permessage-deflate (`--deflate`), on
/// how many of those made in the whole run (storm reconnects included) the
/// edge accepted it and on how many not, and a warning unless it did on
/// every one.
fn deflate_summary(offered: bool, t: &Totals) -> serde_json::Value {
    serde_json::json!({
        "offered": offered,
        "negotiated_connections": t.deflate_connections,
        "not_negotiated_connections": t.plain_connections,
        "warning": deflate_warning(offered, t),
    })
}

/// With `--deflate`: what to say when some connection (or every one) did
/// not negotiate permessage-deflate, so its bytes were measured
/// uncompressed. `None` without `--deflate`, or when all did.
pub(super) fn deflate_warning(offered: bool, t: &Totals) -> Option<String> {
    let (yes, no) = (t.deflate_connections, t.plain_connections);
    if !offered || no == 0 {
        return None;
    }
    let what = if yes == 0 {
        "nothing was measured compressed"
    } else {
        "those connections' bytes were measured uncompressed"
    };
    Some(format!(
        "--deflate: the edge did not negotiate permessage-deflate on {no} of {} connections \
         (is it started with --permessage-deflate?); {what}",
        yes + no
    ))
}

/// The clients' CPU (receiving and parsing) in the window, and per delivered
/// tick; `null` when /proc could not tell.
fn clients_cost(cpu_seconds: Option<f64>, delivered: u64) -> serde_json::Value {
    match cpu_seconds {
        Some(s) => serde_json::json!({
            "cpu_seconds": s,
            "cpu_us_per_delivery": per_delivery(s * 1e6, delivered),
        }),
        None => serde_json::Value::Null,
    }
}

/// The edge's CPU per delivered tick and RSS per connection; `null` without
/// all three samples.
fn edge_cost(edge: EdgeSamples, delivered: u64, clients: usize) -> serde_json::Value {
    match (edge.before, edge.start, edge.end) {
        (Some(b), Some(s), Some(e)) => serde_json::json!({
            "cpu_seconds": e.0 - s.0,
            "cpu_us_per_delivery": if delivered > 0 { (e.0 - s.0) * 1e6 / delivered as f64 } else { 0.0 },
            "rss_kib_before_clients": b.1, "rss_kib": e.1,
            "rss_kib_per_connection": (e.1 as f64 - b.1 as f64) / clients as f64,
        }),
        _ => serde_json::Value::Null,
    }
}

/// What the storm did; `null` in other scenarios.
fn storm_summary(c: &Config, storm: Option<&StormReport>) -> serde_json::Value {
    match storm {
        Some(s) if c.scenario == Scenario::Storm => {
            let t = &s.times.0;
            serde_json::json!({
                "reconnected": s.reconnected, "back": s.back,
                "rejections": s.rejected, "connect_errors": s.errors,
                "admitted_per_second": s.admitted,
                "max_admitted_per_second": s.admitted.iter().max().copied().unwrap_or(0),
                "all_back_seconds": (s.back as usize >= c.clients).then(|| t.max() as f64 / 1e6),
                "reconnect_ms": {
                    "p50": ms(t.value_at_quantile(0.5)), "p99": ms(t.value_at_quantile(0.99)),
                    "max": ms(t.max()),
                },
            })
        }
        _ => serde_json::Value::Null,
    }
}

/// Writes the summary to `--json` and the plot to `--plot`, when given.
pub(super) fn write_files(
    c: &Config,
    summary: &serde_json::Value,
    series: &[(u64, u64, u64, u64)],
) -> anyhow::Result<()> {
    if let Some(p) = &c.json {
        std::fs::write(p, serde_json::to_vec_pretty(summary)?)?;
    }
    if let Some(p) = &c.plot {
        std::fs::write(
            p,
            svg(series, &format!("{:?}, {} clients", c.scenario, c.clients)),
        )?;
    }
    Ok(())
}

/// A small line chart of per-second p50/p99/max latency. Hand-written: the
/// plotting crates pull in font rendering and image codecs for 40 lines of SVG.
fn svg(series: &[(u64, u64, u64, u64)], title: &str) -> String {
    let (w, h, pad) = (800.0, 400.0, 50.0);
    let max_x = series.len().max(1) as f64;
    let max_y = series.iter().map(|s| s.3).max().unwrap_or(1).max(1) as f64 / 1000.0;
    let line = |pick: fn(&(u64, u64, u64, u64)) -> u64, color: &str| {
        let pts: Vec<String> = series
            .iter()
            .map(|s| {
                let x = pad + (s.0 as f64 / max_x) * (w - 2.0 * pad);
                let y = h - pad - (pick(s) as f64 / 1000.0 / max_y) * (h - 2.0 * pad);
                format!("{x:.1},{y:.1}")
            })
            .collect();
        format!(
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            pts.join(" ")
        )
    };
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="monospace" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{pad}" y="20">tickfan loadgen: end-to-end latency per second ({title})</text>
<line x1="{pad}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="black"/><line x1="{pad}" y1="{pad}" x2="{pad}" y2="{y0}" stroke="black"/>
<text x="5" y="{pad}">{max_y:.1} ms</text><text x="5" y="{y0}">0</text><text x="{x1}" y="{yl}" text-anchor="end">{n} s</text>
{p50}{p99}{mx}
<text x="{lx}" y="40" fill="#2a7">p50</text><text x="{lx2}" y="40" fill="#d80">p99</text><text x="{lx3}" y="40" fill="#c22">max</text>
</svg>
"##,
        y0 = h - pad,
        x1 = w - pad,
        yl = h - pad + 20.0,
        n = series.len(),
        p50 = line(|s| s.1, "#2a7"),
        p99 = line(|s| s.2, "#d80"),
        mx = line(|s| s.3, "#c22"),
        lx = w - 200.0,
        lx2 = w - 150.0,
        lx3 = w - 100.0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(bytes: u64, wire_bytes: u64, ticks: u64, deflate: u64, plain: u64) -> Totals {
        Totals {
            ticks,
            bytes,
            wire_bytes,
            deflate_connections: deflate,
            plain_connections: plain,
            ..Totals::default()
        }
    }

    #[test]
    fn the_summary_has_wire_and_decoded_bytes_per_delivery_and_deflate() {
        let mut c: Config = crate::config::defaults();
        c.deflate = true;
        let plan = Plan::new(&c).unwrap();
        let window = Window {
            base: totals(1_000, 500, 10, 3, 0),
            end: totals(41_000, 10_500, 110, 4, 0),
            latency: super::super::shared::histogram(),
            storm: None,
            secs: 2.0,
            clients_cpu: Some(0.5),
            series: Vec::new(),
        };
        let edge = EdgeSamples {
            before: None,
            start: None,
            end: None,
        };
        let s = summary(
            &c,
            &plan,
            &window,
            TickRange::default(),
            serde_json::Value::Null,
            edge,
        );
        // 100 deliveries in the window: 40,000 bytes decoded, 10,000 read.
        assert_eq!(s["bytes"], 40_000);
        assert_eq!(s["bytes_per_sec"], 20_000.0);
        assert_eq!(s["bytes_per_delivery"], 400.0);
        assert_eq!(s["wire_bytes"], 10_000);
        assert_eq!(s["wire_bytes_per_sec"], 5_000.0);
        assert_eq!(s["wire_bytes_per_delivery"], 100.0);
        assert_eq!(s["clients_cpu"]["cpu_us_per_delivery"], 5_000.0);
        // Connections over the whole run, not the window.
        assert_eq!(
            s["deflate"],
            serde_json::json!({
                "offered": true, "negotiated_connections": 4,
                "not_negotiated_connections": 0, "warning": null,
            })
        );
    }

    #[test]
    fn deflate_not_negotiated_is_flagged_only_when_offered() {
        let none = totals(0, 0, 0, 0, 20);
        let w = deflate_warning(true, &none).unwrap();
        assert!(
            w.contains("on 20 of 20 connections") && w.contains("nothing was"),
            "{w}"
        );
        let some = totals(0, 0, 0, 15, 5);
        let w = deflate_warning(true, &some).unwrap();
        assert!(
            w.contains("on 5 of 20 connections") && !w.contains("nothing was"),
            "{w}"
        );
        assert_eq!(deflate_warning(true, &totals(0, 0, 0, 20, 0)), None);
        // Not offered: plain is what was asked for.
        assert_eq!(deflate_warning(false, &none), None);
        let s = deflate_summary(false, &none);
        assert_eq!(s["offered"], false);
        assert_eq!(s["not_negotiated_connections"], 20);
        assert!(s["warning"].is_null());
        assert_eq!(
            deflate_summary(true, &none)["warning"],
            deflate_warning(true, &none).unwrap()
        );
    }

    #[test]
    fn no_deliveries_is_zero_per_delivery_not_nan() {
        assert_eq!(per_delivery(123.0, 0), 0.0);
        assert_eq!(per_delivery(123.0, 3), 41.0);
    }

    #[test]
    fn the_progress_line_shows_decoded_and_wire_megabytes() {
        let last = totals(1_000_000, 500_000, 0, 0, 0);
        let now = totals(3_500_000, 1_250_000, 0, 0, 0);
        let line = progress(7, &last, &now, 1_000, 2_000);
        assert!(line.contains("MB/s   2.50 wire   0.75 "), "{line}");
    }
}
