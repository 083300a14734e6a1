//! Metrics kept in-process for a Prometheus scrape: an SDK `ManualReader` shared between
//! the meter provider and the scrape handler, rendered in the Prometheus text format
//! (version 0.0.4). OTel names map as exporters usually map them: dots become
//! underscores, the unit becomes a suffix (`s` → `_seconds`, `By` → `_bytes`), monotonic
//! sums get `_total`.
use std::fmt::Write as _;
use std::sync::{Arc, Weak};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{InstrumentKind, ManualReader, Pipeline, Temporality};

/// The text format's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One `ManualReader`, registered with the meter provider and read by the scrape handler.
#[derive(Debug, Clone)]
pub struct SharedReader(pub(super) Arc<ManualReader>);

impl MetricReader for SharedReader {
    fn register_pipeline(&self, pipeline: Weak<Pipeline>) {
        self.0.register_pipeline(pipeline)
    }
    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(rm)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}

impl SharedReader {
    /// Collects now and renders every metric.
    pub fn render(&self) -> String {
        let mut rm = ResourceMetrics::default();
        if let Err(e) = self.0.collect(&mut rm) {
            tracing::debug!(error = %e, "metrics collection failed");
        }
        render(&rm)
    }
}

/// Renders collected metrics in the Prometheus text format.
pub fn render(rm: &ResourceMetrics) -> String {
    let mut out = String::new();
    for scope in rm.scope_metrics() {
        for metric in scope.metrics() {
            let base = prom_name(metric.name(), metric.unit());
            let help = metric.description();
            match metric.data() {
                AggregatedMetrics::F64(d) => write_data(&mut out, &base, help, d),
                AggregatedMetrics::U64(d) => write_data(&mut out, &base, help, d),
                AggregatedMetrics::I64(d) => write_data(&mut out, &base, help, d),
            }
        }
    }
    out
}

/// A value that can be written as a Prometheus sample.
trait Sample: Copy {
    fn as_f64(self) -> f64;
}
impl Sample for f64 {
    fn as_f64(self) -> f64 {
        self
    }
}
impl Sample for u64 {
    fn as_f64(self) -> f64 {
        self as f64
    }
}
impl Sample for i64 {
    fn as_f64(self) -> f64 {
        self as f64
    }
}

fn write_data<T: Sample>(out: &mut String, base: &str, help: &str, data: &MetricData<T>) {
    let header = |out: &mut String, name: &str, kind: &str| {
        if !help.is_empty() {
            let _ = writeln!(
                out,
                "# HELP {name} {}",
                help.replace('\\', "\\\\").replace('\n', "\\n")
            );
        }
        let _ = writeln!(out, "# TYPE {name} {kind}");
    };
    match data {
        MetricData::Gauge(g) => {
            header(out, base, "gauge");
            for p in g.data_points() {
                sample(out, base, p.attributes(), None, p.value().as_f64());
            }
        }
        MetricData::Sum(s) if s.is_monotonic() => {
            let name = format!("{base}_total");
            header(out, &name, "counter");
            for p in s.data_points() {
                sample(out, &name, p.attributes(), None, p.value().as_f64());
            }
        }
        MetricData::Sum(s) => {
            header(out, base, "gauge");
            for p in s.data_points() {
                sample(out, base, p.attributes(), None, p.value().as_f64());
            }
        }
        MetricData::Histogram(h) => {
            header(out, base, "histogram");
            let bucket = format!("{base}_bucket");
            for p in h.data_points() {
                let mut cumulative = 0u64;
                for (bound, count) in p.bounds().zip(p.bucket_counts()) {
                    cumulative += count;
                    sample(
                        out,
                        &bucket,
                        p.attributes(),
                        Some(&bound.to_string()),
                        cumulative as f64,
                    );
                }
                sample(out, &bucket, p.attributes(), Some("+Inf"), p.count() as f64);
                sample(
                    out,
                    &format!("{base}_sum"),
                    p.attributes(),
                    None,
                    p.sum().as_f64(),
                );
                sample(
                    out,
                    &format!("{base}_count"),
                    p.attributes(),
                    None,
                    p.count() as f64,
                );
            }
        }
        // Not used by agentfleet's instruments.
        MetricData::ExponentialHistogram(_) => {}
    }
}

fn sample<'a>(
    out: &mut String,
    name: &str,
    attributes: impl Iterator<Item = &'a KeyValue>,
    le: Option<&str>,
    value: f64,
) {
    let mut labels: Vec<String> = attributes
        .map(|kv| {
            format!(
                "{}=\"{}\"",
                sanitize(kv.key.as_str()),
                escape(&kv.value.to_string())
            )
        })
        .collect();
    labels.sort();
    if let Some(le) = le {
        labels.push(format!("le=\"{le}\""));
    }
    if labels.is_empty() {
        let _ = writeln!(out, "{name} {value}");
    } else {
        let _ = writeln!(out, "{name}{{{}}} {value}", labels.join(","));
    }
}

/// `agentfleet.sidecar.step.duration` with unit `s` → `agentfleet_sidecar_step_duration_seconds`.
pub fn prom_name(name: &str, unit: &str) -> String {
    let suffix = match unit {
        "s" => "_seconds",
        "ms" => "_milliseconds",
        "By" => "_bytes",
        _ => "",
    };
    let base = sanitize(name);
    if suffix.is_empty() || base.ends_with(suffix) {
        base
    } else {
        base + suffix
    }
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry_sdk::metrics::SdkMeterProvider;

    #[test]
    fn renders_counters_gauges_and_histograms() {
        let reader = SharedReader(Arc::new(ManualReader::builder().build()));
        let provider = SdkMeterProvider::builder()
            .with_reader(reader.clone())
            .build();
        let meter = provider.meter("test");
        let started = meter
            .u64_counter("agentfleet.test.started")
            .with_unit("{execution}")
            .build();
        started.add(2, &[KeyValue::new("sidecar", "s\"1")]);
        let running = meter.i64_up_down_counter("agentfleet.test.running").build();
        running.add(1, &[]);
        let duration = meter
            .f64_histogram("agentfleet.test.duration")
            .with_unit("s")
            .with_boundaries(vec![1.0, 10.0])
            .build();
        duration.record(0.5, &[KeyValue::new("outcome", "succeeded")]);
        duration.record(5.0, &[KeyValue::new("outcome", "succeeded")]);

        let text = reader.render();
        assert!(
            text.contains("# TYPE agentfleet_test_started_total counter"),
            "{text}"
        );
        assert!(
            text.contains("agentfleet_test_started_total{sidecar=\"s\\\"1\"} 2"),
            "{text}"
        );
        assert!(text.contains("agentfleet_test_running 1"), "{text}");
        assert!(
            text.contains(
                "agentfleet_test_duration_seconds_bucket{outcome=\"succeeded\",le=\"1\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "agentfleet_test_duration_seconds_bucket{outcome=\"succeeded\",le=\"+Inf\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains("agentfleet_test_duration_seconds_count{outcome=\"succeeded\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("agentfleet_test_duration_seconds_sum{outcome=\"succeeded\"} 5.5"),
            "{text}"
        );
    }
}
