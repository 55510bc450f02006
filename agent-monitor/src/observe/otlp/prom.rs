//! The daemon's Prometheus exposition (`GET /metrics`) as OTLP metrics: counters become
//! cumulative monotonic sums (named without `_total`), gauges gauges, histograms
//! explicit-bucket histograms. Reading the text keeps one definition of every metric (the
//! registry and the scrape-time values) for both outputs.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::{
    common::v1::KeyValue,
    metrics::v1::{
        AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, Sum,
        metric::Data, number_data_point::Value as Number,
    },
};

use super::logs::attribute;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Type {
    Counter,
    Gauge,
    Histogram,
}

type Labels = Vec<(String, String)>;

/// One histogram series: (upper bound, cumulative count) per bucket, sum, count.
type Series = (Vec<(f64, f64)>, f64, f64);

/// `name{k="v",...} value`: the name, the labels and the value.
fn sample(line: &str) -> Option<(&str, Labels, f64)> {
    let Some(open) = line.find('{') else {
        let (name, rest) = line.split_once(' ')?;
        return Some((name, Vec::new(), parse_value(rest)?));
    };
    let name = &line[..open];
    let mut labels = Vec::new();
    let mut rest = &line[open + 1..];
    loop {
        rest = rest.trim_start_matches(',');
        if let Some(after) = rest.strip_prefix('}') {
            return Some((name, labels, parse_value(after)?));
        }
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                '"' => break i + 1,
                c => value.push(c),
            }
        };
        labels.push((key.to_owned(), value));
        rest = &after[end..];
    }
}

fn parse_value(text: &str) -> Option<f64> {
    match text.split_whitespace().next()? {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        v => v.parse().ok(),
    }
}

fn attributes(labels: &[(String, String)]) -> Vec<KeyValue> {
    labels
        .iter()
        .map(|(k, v)| attribute(k, v.as_str()))
        .collect()
}

#[derive(Default)]
struct Family {
    help: String,
    points: Vec<NumberDataPoint>,
    /// Histogram series by their labels (without `le`).
    histograms: BTreeMap<Labels, Series>,
}

fn family_mut<'a>(families: &'a mut Vec<(String, Family)>, name: &str) -> &'a mut Family {
    let i = families
        .iter()
        .position(|(n, _)| n == name)
        .unwrap_or_else(|| {
            families.push((name.to_owned(), Family::default()));
            families.len() - 1
        });
    &mut families[i].1
}

/// The exposition `text` as OTLP metrics, stamped `now` (cumulative since `start`).
pub(crate) fn metrics(text: &str, start: u64, now: u64) -> Vec<Metric> {
    let mut types: BTreeMap<String, Type> = BTreeMap::new();
    let mut families: Vec<(String, Family)> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            if let (Some(name), Some(t)) = (parts.next(), parts.next()) {
                let t = match t {
                    "counter" => Type::Counter,
                    "histogram" => Type::Histogram,
                    _ => Type::Gauge,
                };
                types.insert(name.to_owned(), t);
                family_mut(&mut families, name);
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            if let Some((name, help)) = rest.split_once(' ') {
                help.clone_into(&mut family_mut(&mut families, name).help);
            }
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let Some((name, mut labels, value)) = sample(line) else {
            continue;
        };
        // The family a sample belongs to: its name, or its name without a suffix.
        let family = ["", "_total", "_bucket", "_sum", "_count", "_created"]
            .iter()
            .find_map(|suffix| {
                let base = name.strip_suffix(suffix)?;
                types.contains_key(base).then_some((base, *suffix))
            });
        let Some((base, suffix)) = family else {
            continue;
        };
        let f = family_mut(&mut families, base);
        if suffix == "_created" {
            continue;
        }
        if types.get(base) == Some(&Type::Histogram) {
            let le = labels
                .iter()
                .position(|(k, _)| k == "le")
                .map(|i| labels.remove(i).1);
            let entry = f.histograms.entry(labels).or_default();
            match (suffix, le) {
                ("_bucket", Some(le)) => entry
                    .0
                    .push((parse_value(&le).unwrap_or(f64::INFINITY), value)),
                ("_sum", _) => entry.1 = value,
                ("_count", _) => entry.2 = value,
                _ => {}
            }
            continue;
        }
        f.points.push(NumberDataPoint {
            attributes: attributes(&labels),
            start_time_unix_nano: start,
            time_unix_nano: now,
            value: Some(Number::AsDouble(value)),
            ..Default::default()
        });
    }
    families
        .into_iter()
        .filter_map(|(name, f)| {
            let data = match types.get(&name)? {
                Type::Counter => Data::Sum(Sum {
                    data_points: f.points,
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    is_monotonic: true,
                }),
                Type::Gauge => Data::Gauge(Gauge {
                    data_points: f.points,
                }),
                Type::Histogram => Data::Histogram(Histogram {
                    data_points: f
                        .histograms
                        .into_iter()
                        .map(|(labels, (buckets, sum, count))| {
                            histogram_point(&labels, &buckets, sum, count, start, now)
                        })
                        .collect(),
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                }),
            };
            // OpenTelemetry names a counter without Prometheus's `_total`.
            let name = match name.strip_suffix("_total") {
                Some(base) if matches!(data, Data::Sum(_)) => base.to_owned(),
                _ => name,
            };
            Some(Metric {
                name,
                description: f.help,
                data: Some(data),
                ..Default::default()
            })
        })
        .collect()
}

/// Prometheus buckets are cumulative (`le`); OTLP's counts are per bucket, the last one
/// above the last explicit bound.
#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "counts in the exposition are whole non-negative numbers"
)]
fn histogram_point(
    labels: &[(String, String)],
    buckets: &[(f64, f64)],
    sum: f64,
    count: f64,
    start: u64,
    now: u64,
) -> HistogramDataPoint {
    let mut buckets = buckets.to_vec();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut explicit_bounds = Vec::new();
    let mut bucket_counts = Vec::new();
    let mut below = 0.0;
    for (bound, cumulative) in &buckets {
        bucket_counts.push((cumulative - below).max(0.0) as u64);
        below = *cumulative;
        if bound.is_finite() {
            explicit_bounds.push(*bound);
        }
    }
    if buckets.last().is_none_or(|(b, _)| b.is_finite()) {
        bucket_counts.push((count - below).max(0.0) as u64);
    }
    HistogramDataPoint {
        attributes: attributes(labels),
        start_time_unix_nano: start,
        time_unix_nano: now,
        count: count as u64,
        sum: Some(sum),
        bucket_counts,
        explicit_bounds,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP agent_monitor_records Records written.
# TYPE agent_monitor_records counter
agent_monitor_records_total{kind="file",verdict="allowed"} 3
agent_monitor_records_total{kind="exec",verdict="violation"} 1
# HELP agent_monitor_killed_total Killed.
# TYPE agent_monitor_killed_total counter
agent_monitor_killed_total 4
# HELP agent_monitor_tasks Tasks.
# TYPE agent_monitor_tasks gauge
agent_monitor_tasks 2
# HELP agent_monitor_eval Eval.
# TYPE agent_monitor_eval histogram
agent_monitor_eval_sum 0.5
agent_monitor_eval_count 3
agent_monitor_eval_bucket{le="0.1"} 1
agent_monitor_eval_bucket{le="1.0"} 3
agent_monitor_eval_bucket{le="+Inf"} 3
"#;

    #[test]
    fn counters_gauges_and_histograms_convert() {
        let m = metrics(TEXT, 1, 2);
        assert_eq!(m.len(), 4);
        assert_eq!(m[0].name, "agent_monitor_records");
        let Some(Data::Sum(sum)) = &m[0].data else {
            panic!("sum")
        };
        assert!(sum.is_monotonic);
        assert_eq!(sum.data_points.len(), 2);
        assert_eq!(sum.data_points[0].value, Some(Number::AsDouble(3.0)));
        assert_eq!(
            sum.data_points[1].attributes[1],
            attribute("verdict", "violation")
        );
        assert_eq!(m[1].name, "agent_monitor_killed");
        let Some(Data::Gauge(g)) = &m[2].data else {
            panic!("gauge")
        };
        assert_eq!(g.data_points[0].value, Some(Number::AsDouble(2.0)));
        let Some(Data::Histogram(h)) = &m[3].data else {
            panic!("histogram")
        };
        let p = &h.data_points[0];
        assert_eq!(p.count, 3);
        assert_eq!(p.explicit_bounds, [0.1, 1.0]);
        assert_eq!(p.bucket_counts, [1, 2, 0]);
    }

    #[test]
    fn label_values_unescape() {
        let (name, labels, v) = sample(r#"m{a="x\"y",b="z"} 1.5"#).expect("sample");
        assert_eq!(name, "m");
        assert_eq!(
            labels,
            [("a".into(), "x\"y".into()), ("b".into(), "z".into())]
        );
        assert!((v - 1.5).abs() < f64::EPSILON);
    }
}
