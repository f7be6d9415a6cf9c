//! Figures on disk: the CSV table `launch --csv` appends its result lines to, and the raw series
//! (`launch --samples DIR`) the members write for the curve plots, with the readers the `plot`
//! program draws from.
//!
//! Files:
//!
//! * The result table: a header line of [`RESULT_COLUMNS`], then one row per run; a figure the
//!   run did not produce is an empty field.
//! * `latency-<transport>-n<nodes>-p<payload>.csv` (written by `latency_test`'s node 0): its
//!   send-to-delivery latencies in µs, sorted, one number per line.
//! * `deliveries-n<id>.csv` (written by `stream_test`): a header `event,ms,count`, then rows
//!   `delivery,<ms>` (one delivery at that time) or `delivery,<ms>,<n>` (n deliveries in the
//!   bucket starting then, see [`bucket_deliveries`]), and `view<vid>,<ms>` when a view was
//!   installed. Times are milliseconds since [`SAMPLES_EPOCH_ENV`] (the moment `launch` started
//!   the members) or, without it, since the member started.
//!
//! Readers return a message naming the line and the problem instead of panicking on malformed
//! input.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

/// Environment variable naming the folder where members write their raw series (set by
/// `launch --samples DIR`). Unset, they write nothing.
pub const SAMPLES_DIR_ENV: &str = "DERECHO_BENCH_SAMPLES";

/// Environment variable with the common time origin of the series, Unix nanoseconds (set by
/// `launch --samples` to when it started the members).
pub const SAMPLES_EPOCH_ENV: &str = "DERECHO_BENCH_EPOCH_NS";

/// The columns of the result table, in order. `bench`, `transport` and `window` come from the
/// launcher's options; the others are the summary line's `key=value` figures of the same name.
pub const RESULT_COLUMNS: &[&str] = &[
    "unix_s",
    "bench",
    "nodes",
    "transport",
    "payload",
    "window",
    "senders",
    "msgs",
    "mode",
    "gbps",
    "msgs_per_s",
    "lat_p50_us",
    "lat_p99_us",
    "cpu_s",
    "kill_to_view_ms",
    "members_at_end",
    "stall_ms",
    "rate_before",
    "rate_after",
    "durable",
    "restored_min",
    "started_ms_max",
    "durable_gbps",
    "durable_msgs_per_s",
    "disk_sync_4k_us",
    "disk_seq_synced_gbps",
];

/// The header line of the result table (without the newline).
pub fn result_header() -> String {
    RESULT_COLUMNS.join(",")
}

/// The result-table row of one run: `line` is the launcher's summary line
/// (`<bench> key=value ...`), `transport` and `window` its options, `unix_s` when it ran.
/// Fields are in [`RESULT_COLUMNS`] order; figures the line lacks are empty.
pub fn result_row(
    line: &str,
    transport: &str,
    window: u32,
    unix_s: u64,
) -> Result<Vec<String>, String> {
    let mut words = line.split_whitespace();
    let bench = words.next().ok_or("empty result line")?;
    let figures: HashMap<&str, &str> = words.filter_map(|w| w.split_once('=')).collect();
    let row: Vec<String> = RESULT_COLUMNS
        .iter()
        .map(|&c| match c {
            "unix_s" => unix_s.to_string(),
            "bench" => bench.to_string(),
            "transport" => transport.to_string(),
            "window" => window.to_string(),
            other => figures
                .get(other)
                .map_or_else(String::new, |v| v.to_string()),
        })
        .collect();
    if let Some(bad) = row.iter().find(|f| f.contains([',', '"', '\n', '\r'])) {
        return Err(format!("a field cannot go into CSV as it is: {bad:?}"));
    }
    Ok(row)
}

/// Appends `row` to the result table at `path`, writing the header first if the file is new
/// or empty. A file whose first line is another header is left alone (an error).
pub fn append_row(path: &Path, row: &[String]) -> Result<(), String> {
    let what = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let header = result_header();
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(what(&e)),
    };
    if let Some(first) = existing.lines().next() {
        if first != header {
            return Err(what(&format!(
                "its header is not this version's ({header}); append to a new file"
            )));
        }
    }
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| what(&e))?;
    let mut text = String::new();
    if existing.trim().is_empty() {
        text.push_str(&header);
        text.push('\n');
    } else if !existing.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&row.join(","));
    text.push('\n');
    out.write_all(text.as_bytes()).map_err(|e| what(&e))
}

/// The non-blank lines of `text`, with their 0-based line numbers (for error messages).
fn content_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
}

/// A CSV table without quoting: a header and rows of as many fields.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    /// Column names.
    pub header: Vec<String>,
    /// The rows, each as long as the header.
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// Parses `text`: the first non-empty line is the header; blank lines are skipped.
    pub fn parse(text: &str) -> Result<Table, String> {
        let mut lines = content_lines(text);
        let (_, first) = lines.next().ok_or("empty file: no header line")?;
        let header: Vec<String> = first.split(',').map(|f| f.trim().to_string()).collect();
        let mut rows = Vec::new();
        for (i, line) in lines {
            let row: Vec<String> = line.split(',').map(|f| f.trim().to_string()).collect();
            if row.len() != header.len() {
                return Err(format!(
                    "line {}: {} fields, the header has {}",
                    i + 1,
                    row.len(),
                    header.len()
                ));
            }
            rows.push(row);
        }
        Ok(Table { header, rows })
    }

    /// The index of column `name`.
    pub fn column(&self, name: &str) -> Result<usize, String> {
        self.header
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| format!("no column {name:?} in the header"))
    }
}

/// One bandwidth measurement.
#[derive(Clone, Debug, PartialEq)]
pub struct BandwidthPoint {
    /// The fabric backend.
    pub transport: String,
    /// Group size.
    pub nodes: u32,
    /// Message size, bytes.
    pub payload: u64,
    /// Mean delivered bandwidth per member, GB/s.
    pub gbps: f64,
}

/// The `bandwidth_test` rows of a result table.
pub fn bandwidth_points(table: &Table) -> Result<Vec<BandwidthPoint>, String> {
    let [bench, transport, nodes, payload, gbps] =
        ["bench", "transport", "nodes", "payload", "gbps"].map(|c| table.column(c));
    let (bench, transport, nodes, payload, gbps) = (bench?, transport?, nodes?, payload?, gbps?);
    let mut points = Vec::new();
    // Data rows start on line 2.
    for (i, row) in table.rows.iter().enumerate() {
        if row[bench] != "bandwidth_test" {
            continue;
        }
        let at = |col: usize| format!("row {} ({}={:?})", i + 2, table.header[col], row[col]);
        let point = BandwidthPoint {
            transport: row[transport].clone(),
            nodes: row[nodes]
                .parse()
                .map_err(|e| format!("{}: {e}", at(nodes)))?,
            payload: row[payload]
                .parse()
                .map_err(|e| format!("{}: {e}", at(payload)))?,
            gbps: finite(&row[gbps]).map_err(|e| format!("{}: {e}", at(gbps)))?,
        };
        if point.payload == 0 {
            return Err(format!(
                "{}: a payload of 0 has no place on a log axis",
                at(payload)
            ));
        }
        points.push(point);
    }
    if points.is_empty() {
        return Err("no bandwidth_test rows".into());
    }
    Ok(points)
}

fn finite(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(v) => Err(format!("{v} is not a finite number")),
        Err(e) => Err(e.to_string()),
    }
}

/// Parses a latency file: one non-negative number (µs) per line, blank lines skipped. Returns
/// the values sorted; an empty file is an error.
pub fn parse_latencies(text: &str) -> Result<Vec<f64>, String> {
    let mut v = Vec::new();
    for (i, line) in content_lines(text) {
        let line = line.trim();
        match finite(line) {
            Ok(x) if x >= 0.0 => v.push(x),
            Ok(x) => return Err(format!("line {}: negative latency {x}", i + 1)),
            Err(e) => return Err(format!("line {}: {line:?}: {e}", i + 1)),
        }
    }
    if v.is_empty() {
        return Err("no latencies in the file".into());
    }
    v.sort_by(f64::total_cmp);
    Ok(v)
}

/// Writes sorted latencies (µs), one per line.
pub fn write_latencies(path: &Path, sorted_us: &[f64]) -> Result<(), String> {
    let mut text = String::with_capacity(sorted_us.len() * 8);
    for v in sorted_us {
        text.push_str(&format!("{v:.1}\n"));
    }
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The header line of a deliveries file.
pub const DELIVERIES_HEADER: &str = "event,ms,count";

/// One member's deliveries and view installs over time.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Deliveries {
    /// `(ms, count)`: `count` deliveries at (or in the bucket starting at) `ms`.
    pub deliveries: Vec<(f64, u64)>,
    /// `(vid, ms)`: view `vid` installed at `ms`.
    pub views: Vec<(u64, f64)>,
}

impl Deliveries {
    /// Parses a deliveries file (see the module documentation).
    pub fn parse(text: &str) -> Result<Deliveries, String> {
        let mut lines = content_lines(text);
        match lines.next() {
            Some((_, h)) if h.trim() == DELIVERIES_HEADER => {}
            Some((_, h)) => {
                return Err(format!(
                    "line 1: expected the header {DELIVERIES_HEADER:?}, found {h:?}"
                ))
            }
            None => return Err("empty file: no header line".into()),
        }
        let mut d = Deliveries::default();
        for (i, line) in lines {
            let bad = |e: &dyn std::fmt::Display| format!("line {}: {line:?}: {e}", i + 1);
            let f: Vec<&str> = line.split(',').map(str::trim).collect();
            if f.len() < 2 || f.len() > 3 {
                return Err(bad(&"expected event,ms[,count]"));
            }
            let ms = finite(f[1]).map_err(|e| bad(&e))?;
            if f[0] == "delivery" {
                let count = match f.get(2) {
                    None | Some(&"") => 1,
                    Some(c) => c.parse().map_err(|e| bad(&e))?,
                };
                d.deliveries.push((ms, count));
            } else if let Some(vid) = f[0].strip_prefix("view") {
                let vid = vid.parse().map_err(|e| bad(&format!("view number: {e}")))?;
                d.views.push((vid, ms));
            } else {
                return Err(bad(&"the event is neither `delivery` nor `view<N>`"));
            }
        }
        if d.deliveries.is_empty() {
            return Err("no deliveries in the file".into());
        }
        Ok(d)
    }

    /// The file's text (see the module documentation).
    pub fn to_csv(&self) -> String {
        let mut text = String::with_capacity(16 * (self.deliveries.len() + self.views.len() + 1));
        text.push_str(DELIVERIES_HEADER);
        text.push('\n');
        for (vid, ms) in &self.views {
            text.push_str(&format!("view{vid},{ms:.3}\n"));
        }
        for (ms, count) in &self.deliveries {
            if *count == 1 {
                text.push_str(&format!("delivery,{ms:.3}\n"));
            } else {
                text.push_str(&format!("delivery,{ms:.3},{count}\n"));
            }
        }
        text
    }

    /// Deliveries per `width_ms` bucket, buckets aligned on multiples of `width_ms`, from the
    /// first delivery's bucket to the last's (empty buckets included): `(start ms, count)`.
    pub fn per_bucket(&self, width_ms: f64) -> Vec<(f64, u64)> {
        let index = |ms: f64| (ms / width_ms).floor() as i64;
        let (Some(lo), Some(hi)) = (
            self.deliveries.iter().map(|d| index(d.0)).min(),
            self.deliveries.iter().map(|d| index(d.0)).max(),
        ) else {
            return Vec::new();
        };
        let mut counts = vec![0u64; (hi - lo + 1) as usize];
        for (ms, n) in &self.deliveries {
            counts[(index(*ms) - lo) as usize] += n;
        }
        counts
            .into_iter()
            .enumerate()
            .map(|(k, n)| ((lo + k as i64) as f64 * width_ms, n))
            .collect()
    }
}

/// The same deliveries counted per `width_ms` bucket (empty buckets left out), views kept: a
/// small file that plots the same per-bucket curve.
pub fn bucket_deliveries(d: &Deliveries, width_ms: f64) -> Deliveries {
    Deliveries {
        deliveries: d
            .per_bucket(width_ms)
            .into_iter()
            .filter(|b| b.1 > 0)
            .collect(),
        views: d.views.clone(),
    }
}

/// Milliseconds from `epoch_ns` to `t_ns` (both Unix nanoseconds; negative if before).
pub fn rel_ms(t_ns: u64, epoch_ns: u64) -> f64 {
    (t_ns as i128 - epoch_ns as i128) as f64 / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = "bandwidth_test nodes=2 senders=all payload=1024 msgs=1000 mode=ordered gbps=0.2400 msgs_per_s=234583 lat_p50_us=0.0 lat_p99_us=0.0 cpu_s=1.48";

    #[test]
    fn result_rows_append_under_one_header_and_read_back() -> Result<(), String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let path = dir.path().join("r.csv");
        let row = result_row(LINE, "shm", 64, 7)?;
        append_row(&path, &row)?;
        append_row(&path, &row)?;
        let text = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
        assert_eq!(text.lines().count(), 3);
        let table = Table::parse(&text)?;
        assert_eq!(table.header.len(), RESULT_COLUMNS.len());
        assert_eq!(table.rows[1][table.column("stall_ms")?], "");
        assert_eq!(table.rows[1][table.column("window")?], "64");
        let points = bandwidth_points(&table)?;
        assert_eq!(
            points[0],
            BandwidthPoint {
                transport: "shm".into(),
                nodes: 2,
                payload: 1024,
                gbps: 0.24
            }
        );
        // Another table's file is not appended to.
        std::fs::write(&path, "a,b\n1,2\n").map_err(|e| e.to_string())?;
        assert!(append_row(&path, &row).is_err_and(|e| e.contains("header")));
        Ok(())
    }

    #[test]
    fn malformed_tables_are_errors() {
        assert!(Table::parse("").is_err());
        assert!(Table::parse("a,b\n1\n").is_err_and(|e| e.starts_with("line 2")));
        let header = result_header();
        let no_rows = Table::parse(&header).map(|t| bandwidth_points(&t));
        assert!(matches!(no_rows, Ok(Err(_))));
        let mut row = result_row(LINE, "tcp", 64, 0).unwrap_or_default();
        row[4] = "lots".into();
        let bad = Table::parse(&format!("{header}\n{}\n", row.join(",")));
        assert!(matches!(bad.map(|t| bandwidth_points(&t)), Ok(Err(e)) if e.contains("payload")));
        assert!(result_row("x gbps=1,2", "tcp", 1, 0).is_err());
        assert!(result_row("", "tcp", 1, 0).is_err());
    }

    #[test]
    fn latency_files_parse_sorted_and_reject_junk() {
        assert_eq!(parse_latencies("3\n\n1.5\n2\n"), Ok(vec![1.5, 2.0, 3.0]));
        assert!(parse_latencies("").is_err());
        assert!(parse_latencies("\n \n").is_err());
        assert!(parse_latencies("1\nabc\n").is_err_and(|e| e.starts_with("line 2")));
        assert!(parse_latencies("-1\n").is_err());
        assert!(parse_latencies("NaN\n").is_err());
    }

    #[test]
    fn deliveries_round_trip_and_bucket() -> Result<(), String> {
        let d = Deliveries::parse(
            "event,ms,count\nview0,1.0\ndelivery,2.5\ndelivery,9.9\ndelivery,31.0\nview1,30.0\n",
        )?;
        assert_eq!(d.views, vec![(0, 1.0), (1, 30.0)]);
        assert_eq!(
            d.per_bucket(10.0),
            vec![(0.0, 2), (10.0, 0), (20.0, 0), (30.0, 1)]
        );
        let b = bucket_deliveries(&d, 10.0);
        assert_eq!(b.deliveries, vec![(0.0, 2), (30.0, 1)]);
        let again = Deliveries::parse(&b.to_csv())?;
        assert_eq!(again.per_bucket(10.0), d.per_bucket(10.0));
        assert_eq!(again.views, d.views);
        Ok(())
    }

    #[test]
    fn malformed_deliveries_are_errors() {
        for text in [
            "",
            "ms\n1\n",
            "event,ms,count\n",
            "event,ms,count\nview0,1\n",
            "event,ms,count\ndelivery\n",
            "event,ms,count\ndelivery,x\n",
            "event,ms,count\ndelivery,1,-2\n",
            "event,ms,count\nsent,1\n",
            "event,ms,count\nviewX,1\n",
        ] {
            assert!(Deliveries::parse(text).is_err(), "{text:?}");
        }
    }
}
