//! `plot`: draws SVG charts from the benchmark programs' figures (see `benches::figures` for
//! the files).
//!
//! ```text
//! plot bandwidth <results.csv> <out.svg>           GB/s against message size (log axis), one
//!                                                  line per (transport, nodes), through the
//!                                                  median of the runs; every run is a dot
//! plot cdf <latency-*.csv>... <out.svg>            latency CDF (log axis), one line per file
//! plot dip <deliveries-*.csv>... <out.svg>         deliveries per 10 ms over time, one line per
//!                                                  file, a vertical line at each view install
//! plot buckets <deliveries.csv> <out.csv>          the same deliveries counted per 10 ms: a
//!                                                  small file `plot dip` draws the same from
//! ```
//!
//! The results table comes from `launch --csv`, the series from `launch --samples`; malformed
//! input is reported with the file and line, and nothing is drawn.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use benches::figures::{
    bandwidth_points, bucket_deliveries, parse_latencies, BandwidthPoint, Deliveries, Table,
};
use plotters::prelude::*;

/// Width of a bucket of the dip chart, ms.
const BUCKET_MS: f64 = 10.0;

/// Most points drawn per curve of the CDF (a thinner curve looks the same, in a smaller file).
const MAX_CDF_POINTS: usize = 1000;

/// Chart size, pixels.
const SIZE: (u32, u32) = (900, 540);

/// Half the width of the dip chart's close-up around the first view change, ms.
const ZOOM_MS: f64 = 250.0;

/// Line colours that stay apart on white (the first eight of the usual "tab10" set).
const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(23, 190, 207),
    RGBColor(140, 86, 75),
    RGBColor(127, 127, 127),
];

fn color(i: usize) -> RGBAColor {
    COLORS[i % COLORS.len()].to_rgba()
}

const USAGE: &str = "usage: plot bandwidth <results.csv> <out.svg> | plot cdf <latency files...> <out.svg> | plot dip <deliveries files...> <out.svg> | plot buckets <deliveries file> <out.csv>";

fn read(path: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))
}

/// `path`'s file name without its extension.
fn stem(path: &str) -> String {
    Path::new(path)
        .file_stem()
        .map_or_else(|| path.to_string(), |s| s.to_string_lossy().into_owned())
}

fn draw_err<E: std::error::Error + Send + Sync>(
    out: &str,
) -> impl Fn(DrawingAreaErrorKind<E>) -> String + '_ {
    move |e| format!("drawing {out}: {e}")
}

/// The legend's sample of a line drawn in `color`.
fn legend_mark(color: RGBAColor) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
}

/// Draws a chart's legend at `position`, on a light box.
fn legend_box<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
}

/// A size in bytes as people say it: 1 KiB, 100 KiB, 1 MiB, 100 B.
fn bytes(x: f64) -> String {
    const K: f64 = 1024.0;
    if x >= K * K && (x / (K * K)).fract() == 0.0 {
        format!("{} MiB", x / (K * K))
    } else if x >= K && (x / K).fract() == 0.0 {
        format!("{} KiB", x / K)
    } else {
        format!("{x:.0} B")
    }
}

/// Microseconds to two or three significant digits: 3.2, 26, 118.
fn us(x: f64) -> String {
    if x < 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.0}")
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn bandwidth(input: &str, out: &str) -> Result<(), String> {
    let table = Table::parse(&read(input)?).map_err(|e| format!("{input}: {e}"))?;
    let points = bandwidth_points(&table).map_err(|e| format!("{input}: {e}"))?;
    draw_bandwidth(&points, out)
}

fn draw_bandwidth(points: &[BandwidthPoint], out: &str) -> Result<(), String> {
    // (transport, nodes) -> payload -> GB/s of each run.
    let mut series: BTreeMap<(String, u32), BTreeMap<u64, Vec<f64>>> = BTreeMap::new();
    for p in points {
        series
            .entry((p.transport.clone(), p.nodes))
            .or_default()
            .entry(p.payload)
            .or_default()
            .push(p.gbps);
    }
    let mut payloads: Vec<f64> = points.iter().map(|p| p.payload as f64).collect();
    payloads.sort_by(f64::total_cmp);
    payloads.dedup();
    let (lo, hi) = match (payloads.first(), payloads.last()) {
        (Some(&lo), Some(&hi)) => (lo / 1.5, hi * 1.5),
        _ => return Err("no points".into()),
    };
    let top = points.iter().map(|p| p.gbps).fold(0.0, f64::max).max(1e-3) * 1.15;
    let err = draw_err(out);
    let root = SVGBackend::new(out, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(&err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "bandwidth_test: delivered GB/s per member, all members sending",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d((lo..hi).log_scale().with_key_points(payloads), 0.0..top)
        .map_err(&err)?;
    chart
        .configure_mesh()
        .x_desc("message size")
        .y_desc("GB/s")
        .x_label_formatter(&|x| bytes(*x))
        .draw()
        .map_err(&err)?;
    for (i, ((transport, nodes), runs)) in series.into_iter().enumerate() {
        let color = color(i);
        let line: Vec<(f64, f64)> = runs
            .iter()
            .map(|(&p, g)| (p as f64, median(&mut g.clone())))
            .collect();
        chart
            .draw_series(LineSeries::new(line, color.stroke_width(2)))
            .map_err(&err)?
            .label(format!("{transport}, {nodes} nodes"))
            .legend(legend_mark(color));
        chart
            .draw_series(runs.iter().flat_map(|(&p, g)| {
                g.iter()
                    .map(move |&v| Circle::new((p as f64, v), 3, color.filled()))
            }))
            .map_err(&err)?;
    }
    legend_box(&mut chart, SeriesLabelPosition::UpperLeft).map_err(&err)?;
    root.present().map_err(&err)
}

/// A legend label for a latency file: `latency-tcp-n2-p100` reads `tcp, 2 nodes, 100 B`.
fn latency_label(stem: &str) -> String {
    let parts: Vec<&str> = stem.split('-').collect();
    match parts.as_slice() {
        ["latency", transport, n, p] => {
            match (
                n.strip_prefix('n'),
                p.strip_prefix('p').and_then(|p| p.parse::<f64>().ok()),
            ) {
                (Some(n), Some(p)) => format!("{transport}, {n} nodes, {}", bytes(p)),
                _ => stem.to_string(),
            }
        }
        _ => stem.to_string(),
    }
}

fn cdf(inputs: &[String], out: &str) -> Result<(), String> {
    let mut curves = Vec::new();
    for path in inputs {
        let v = parse_latencies(&read(path)?).map_err(|e| format!("{path}: {e}"))?;
        curves.push((latency_label(&stem(path)), v));
    }
    draw_cdf(&curves, out)
}

fn draw_cdf(curves: &[(String, Vec<f64>)], out: &str) -> Result<(), String> {
    let all = || curves.iter().flat_map(|c| c.1.iter().copied());
    // A log axis starts above zero.
    let lo = all().filter(|&x| x > 0.0).fold(f64::INFINITY, f64::min);
    let hi = all().fold(0.0, f64::max);
    if !lo.is_finite() {
        return Err("every latency is 0: nothing to draw on a log axis".into());
    }
    let (lo, hi) = (lo / 1.2, hi.max(lo) * 1.2);
    let err = draw_err(out);
    let root = SVGBackend::new(out, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(&err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "latency_test: send-to-delivery latency at node 0",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d((lo..hi).log_scale(), 0.0..1.0)
        .map_err(&err)?;
    chart
        .configure_mesh()
        .x_desc("latency (µs)")
        .y_desc("fraction of messages")
        .x_label_formatter(&|x| {
            if *x >= 10.0 {
                format!("{x:.0}")
            } else {
                format!("{x:.1}")
            }
        })
        .draw()
        .map_err(&err)?;
    for (i, (label, v)) in curves.iter().enumerate() {
        let color = color(i);
        let n = v.len();
        let step = n.div_ceil(MAX_CDF_POINTS).max(1);
        let points = v
            .iter()
            .enumerate()
            .filter(|(k, _)| k % step == step - 1 || *k == 0 || *k == n - 1)
            .map(|(k, &x)| (x.max(lo), (k + 1) as f64 / n as f64));
        let q = |p: f64| v[((p * (n - 1) as f64).round() as usize).min(n - 1)];
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(&err)?
            .label(format!(
                "{label}: p50 {} µs, p99 {} µs, {n} messages",
                us(q(0.5)),
                us(q(0.99))
            ))
            .legend(legend_mark(color));
    }
    legend_box(&mut chart, SeriesLabelPosition::LowerRight).map_err(&err)?;
    root.present().map_err(&err)
}

/// A legend label for a deliveries file: `deliveries-n0` reads `member 0`.
fn member_label(stem: &str) -> String {
    stem.strip_prefix("deliveries-n")
        .map_or_else(|| stem.to_string(), |id| format!("member {id}"))
}

fn dip(inputs: &[String], out: &str) -> Result<(), String> {
    let mut members = Vec::new();
    for path in inputs {
        let d = Deliveries::parse(&read(path)?).map_err(|e| format!("{path}: {e}"))?;
        members.push((member_label(&stem(path)), d));
    }
    draw_dip(&members, out)
}

fn draw_dip(members: &[(String, Deliveries)], out: &str) -> Result<(), String> {
    let buckets: Vec<Vec<(f64, u64)>> = members.iter().map(|m| m.1.per_bucket(BUCKET_MS)).collect();
    let times = || {
        buckets
            .iter()
            .flatten()
            .map(|b| b.0)
            .chain(members.iter().flat_map(|m| m.1.views.iter().map(|v| v.1)))
    };
    let lo = times().fold(f64::INFINITY, f64::min).min(0.0);
    let hi = times().fold(f64::NEG_INFINITY, f64::max) + BUCKET_MS;
    if !(lo.is_finite() && hi.is_finite()) {
        return Err("no deliveries".into());
    }
    // Each view is labelled once, where the first member installed it.
    let mut first_install: BTreeMap<u64, f64> = BTreeMap::new();
    for &(vid, t) in members.iter().flat_map(|m| &m.1.views) {
        let at = first_install.entry(vid).or_insert(t);
        *at = at.min(t);
    }
    let err = draw_err(out);
    let root = SVGBackend::new(out, (SIZE.0, SIZE.1 * 2)).into_drawing_area();
    root.fill(&WHITE).map_err(&err)?;
    let root = root
        .titled(
            &format!(
                "stream_test: deliveries per {BUCKET_MS} ms on each member; vertical lines: view installs"
            ),
            ("sans-serif", 20),
        )
        .map_err(&err)?;
    // The whole run above; below, a close-up of the first change after the initial view.
    let change = first_install.iter().find(|v| *v.0 > 0).map(|v| *v.1);
    let (whole, close) = match change {
        Some(_) => {
            let (a, b) = root.split_vertically(SIZE.1 - 20);
            (a, Some(b))
        }
        None => (root.clone(), None),
    };
    let panel = |area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
                 (from, to): (f64, f64),
                 what: String|
     -> Result<(), String> {
        let inside = |t: f64| t >= from && t <= to;
        let top = buckets
            .iter()
            .flatten()
            .filter(|b| inside(b.0))
            .map(|b| b.1)
            .max()
            .unwrap_or(0)
            .max(1) as f64
            * 1.15;
        let mut chart = ChartBuilder::on(area)
            .caption(what, ("sans-serif", 16))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(from..to, 0.0..top)
            .map_err(&err)?;
        chart
            .configure_mesh()
            .x_desc("time since the members were started (ms)")
            .y_desc(format!("deliveries per {BUCKET_MS} ms"))
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()
            .map_err(&err)?;
        for (i, ((label, d), b)) in members.iter().zip(&buckets).enumerate() {
            let color = color(i);
            chart
                .draw_series(LineSeries::new(
                    b.iter()
                        .filter(|p| inside(p.0))
                        .map(|&(t, n)| (t, n as f64)),
                    color.stroke_width(1),
                ))
                .map_err(&err)?
                .label(label.as_str())
                .legend(legend_mark(color));
            for &(_, t) in d.views.iter().filter(|v| inside(v.1)) {
                chart
                    .draw_series(LineSeries::new(
                        [(t, 0.0), (t, top)],
                        color.mix(0.6).stroke_width(1),
                    ))
                    .map_err(&err)?;
            }
        }
        chart
            .draw_series(
                first_install
                    .iter()
                    .filter(|v| inside(*v.1))
                    .map(|(vid, &t)| {
                        Text::new(format!(" view {vid}"), (t, top * 0.98), ("sans-serif", 13))
                    }),
            )
            .map_err(&err)?;
        legend_box(&mut chart, SeriesLabelPosition::LowerRight).map_err(&err)
    };
    panel(&whole, (lo, hi), "the whole run".into())?;
    if let (Some(area), Some(t)) = (&close, change) {
        let (from, to) = ((t - ZOOM_MS).max(lo), (t + ZOOM_MS).min(hi));
        panel(
            area,
            (from, to),
            format!("close-up: {ZOOM_MS} ms either side of the first view change"),
        )?;
    }
    root.present().map_err(&err)
}

fn buckets(input: &str, out: &str) -> Result<(), String> {
    let d = Deliveries::parse(&read(input)?).map_err(|e| format!("{input}: {e}"))?;
    std::fs::write(out, bucket_deliveries(&d, BUCKET_MS).to_csv())
        .map_err(|e| format!("{out}: {e}"))
}

fn run(args: &[String]) -> Result<(), String> {
    let (cmd, rest) = args.split_first().ok_or(USAGE)?;
    let (out, inputs) = match rest.split_last() {
        Some((out, inputs)) if !inputs.is_empty() => (out.as_str(), inputs),
        _ => return Err(USAGE.into()),
    };
    // The output is named last; a forgotten one would overwrite an input.
    let want = if cmd == "buckets" { ".csv" } else { ".svg" };
    if !out.ends_with(want) {
        return Err(format!("the output {out:?} should end in {want}\n{USAGE}"));
    }
    if inputs.iter().any(|i| i == out) {
        return Err(format!("{out} is both an input and the output"));
    }
    match (cmd.as_str(), inputs) {
        ("bandwidth", [input]) => bandwidth(input, out),
        ("cdf", _) => cdf(inputs, out),
        ("dip", _) => dip(inputs, out),
        ("buckets", [input]) => buckets(input, out),
        _ => Err(USAGE.into()),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("plot: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn bad_input_is_an_error_and_draws_nothing() -> Result<(), String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
        let (empty, junk, svg) = (path("empty.csv"), path("junk.csv"), path("out.svg"));
        std::fs::write(&empty, "").map_err(|e| e.to_string())?;
        std::fs::write(&junk, "event,ms,count\ndelivery,soon\n").map_err(|e| e.to_string())?;
        for cmd in ["bandwidth", "cdf", "dip"] {
            let e = run(&args(&[cmd, &empty, &svg]));
            assert!(
                e.as_ref().is_err_and(|e| e.contains("empty.csv")),
                "{cmd}: {e:?}"
            );
        }
        let e = run(&args(&["dip", &junk, &svg]));
        assert!(e.is_err_and(|e| e.contains("junk.csv: line 2")));
        assert!(run(&args(&["cdf", &path("missing.csv"), &svg])).is_err());
        assert!(run(&args(&["cdf", &junk])).is_err());
        assert!(run(&args(&["bandwidth", &junk, &junk])).is_err());
        assert!(run(&args(&["pie", &junk, &svg])).is_err());
        assert!(!dir.path().join("out.svg").exists());
        Ok(())
    }

    #[test]
    fn good_input_draws_svg() -> Result<(), String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
        let lat = path("latency-tcp-n2-p100.csv");
        std::fs::write(&lat, "100\n120\n300\n").map_err(|e| e.to_string())?;
        let dl = path("deliveries-n0.csv");
        std::fs::write(
            &dl,
            "event,ms,count\nview0,5\ndelivery,12\ndelivery,13\ndelivery,40,7\n",
        )
        .map_err(|e| e.to_string())?;
        run(&args(&["cdf", &lat, &path("cdf.svg")]))?;
        run(&args(&["dip", &dl, &path("dip.svg")]))?;
        run(&args(&["buckets", &dl, &path("b.csv")]))?;
        let svg = std::fs::read_to_string(path("cdf.svg")).map_err(|e| e.to_string())?;
        assert!(svg.starts_with("<svg") && svg.contains("tcp, 2 nodes, 100 B"));
        assert_eq!(latency_label("latency-shm-n3-p1024"), "shm, 3 nodes, 1 KiB");
        assert_eq!(bytes(1048576.0), "1 MiB");
        Ok(())
    }
}
