//! Where telemetry goes: resolved once from the binary's own setting (the coordinator's
//! `--otlp-endpoint`, the sidecar's `[telemetry] otlp_endpoint`) and the standard
//! OpenTelemetry environment variables. The environment is passed in as a function, so
//! tests never touch the process's.
//!
//! Precedence, per signal: `OTEL_EXPORTER_OTLP_{TRACES,METRICS,LOGS}_ENDPOINT` (the most
//! specific setting) → the binary's own setting → `OTEL_EXPORTER_OTLP_ENDPOINT`.
//! `OTEL_SDK_DISABLED=true` turns OTLP export off whatever else is set.

pub const OTEL_SDK_DISABLED: &str = "OTEL_SDK_DISABLED";
pub const OTEL_EXPORTER_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
pub const OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
pub const OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT";
pub const OTEL_EXPORTER_OTLP_LOGS_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT";
pub const OTEL_SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
pub const OTEL_RESOURCE_ATTRIBUTES: &str = "OTEL_RESOURCE_ATTRIBUTES";

/// The resolved export settings of one process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportSettings {
    /// `service.name` of every span and metric this process exports.
    pub service_name: String,
    /// OTLP/gRPC endpoint for spans; None: spans are not exported.
    pub traces_endpoint: Option<String>,
    /// OTLP/gRPC endpoint for metrics; None: metrics are not pushed.
    pub metrics_endpoint: Option<String>,
    /// OTLP/gRPC endpoint for job log lines as log records; None: not exported.
    pub logs_endpoint: Option<String>,
    /// Extra resource attributes (`OTEL_RESOURCE_ATTRIBUTES`), in order.
    pub resource: Vec<(String, String)>,
    /// Keep metrics in-process for a Prometheus scrape (the sidecar's admin `/metrics`).
    pub prometheus: bool,
}

impl ExportSettings {
    /// Resolves the settings; `own_endpoint` is the binary's own setting (flag or file),
    /// `default_service` the `service.name` when `OTEL_SERVICE_NAME` is unset.
    pub fn resolve(
        default_service: &str,
        own_endpoint: Option<&str>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Self {
        let get = |key: &str| {
            env(key)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let disabled = get(OTEL_SDK_DISABLED).is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let own = own_endpoint
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned);
        let general = get(OTEL_EXPORTER_OTLP_ENDPOINT);
        let pick = |specific: &str| {
            if disabled {
                return None;
            }
            get(specific)
                .or_else(|| own.clone())
                .or_else(|| general.clone())
                .map(|e| with_scheme(&e))
        };
        Self {
            service_name: get(OTEL_SERVICE_NAME).unwrap_or_else(|| default_service.to_owned()),
            traces_endpoint: pick(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT),
            metrics_endpoint: pick(OTEL_EXPORTER_OTLP_METRICS_ENDPOINT),
            logs_endpoint: pick(OTEL_EXPORTER_OTLP_LOGS_ENDPOINT),
            resource: get(OTEL_RESOURCE_ATTRIBUTES)
                .map(|v| parse_resource_attributes(&v))
                .unwrap_or_default(),
            prometheus: false,
        }
    }

    /// Anything to export or keep at all.
    pub fn any(&self) -> bool {
        self.traces_endpoint.is_some()
            || self.metrics_endpoint.is_some()
            || self.logs_endpoint.is_some()
            || self.prometheus
    }
}

/// `collector:4317` means `http://collector:4317` (OTLP/gRPC's usual plaintext form).
fn with_scheme(endpoint: &str) -> String {
    if endpoint.contains("://") {
        endpoint.to_owned()
    } else {
        format!("http://{endpoint}")
    }
}

/// `key1=value1,key2=value2`, values percent-decoded (W3C Baggage octets); malformed
/// entries are skipped, as the specification asks.
pub fn parse_resource_attributes(text: &str) -> Vec<(String, String)> {
    text.split(',')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            let (k, v) = (k.trim(), v.trim());
            (!k.is_empty()).then(|| (k.to_owned(), percent_decode(v)))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        let escaped = (bytes[i] == b'%' && i + 2 < bytes.len())
            .then(|| Some((hex(bytes[i + 1])?, hex(bytes[i + 2])?)))
            .flatten();
        if let Some((h, l)) = escaped {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolve(own: Option<&str>, vars: &[(&str, &str)]) -> ExportSettings {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ExportSettings::resolve("agentfleet-test", own, &|k| map.get(k).cloned())
    }

    #[test]
    fn off_unless_configured() {
        let s = resolve(None, &[]);
        assert!(!s.any());
        assert_eq!(s.service_name, "agentfleet-test");
    }

    #[test]
    fn precedence_per_signal() {
        let s = resolve(
            Some("own:4317"),
            &[
                (OTEL_EXPORTER_OTLP_ENDPOINT, "http://general:4317"),
                (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, "http://traces:4317"),
            ],
        );
        assert_eq!(s.traces_endpoint.as_deref(), Some("http://traces:4317"));
        assert_eq!(s.metrics_endpoint.as_deref(), Some("http://own:4317"));
        assert_eq!(s.logs_endpoint.as_deref(), Some("http://own:4317"));
        let s = resolve(
            None,
            &[(OTEL_EXPORTER_OTLP_ENDPOINT, "http://general:4317")],
        );
        assert_eq!(s.metrics_endpoint.as_deref(), Some("http://general:4317"));
    }

    #[test]
    fn disabled_wins() {
        let s = resolve(Some("http://own:4317"), &[(OTEL_SDK_DISABLED, "TRUE")]);
        assert_eq!(s.traces_endpoint, None);
        assert_eq!(s.metrics_endpoint, None);
    }

    #[test]
    fn service_name_and_resource_attributes() {
        let s = resolve(
            None,
            &[
                (OTEL_SERVICE_NAME, "etl-coordinator"),
                (
                    OTEL_RESOURCE_ATTRIBUTES,
                    "deployment.environment=prod, team=data%20eng,bad",
                ),
            ],
        );
        assert_eq!(s.service_name, "etl-coordinator");
        assert_eq!(
            s.resource,
            vec![
                ("deployment.environment".into(), "prod".into()),
                ("team".into(), "data eng".into())
            ]
        );
    }
}
