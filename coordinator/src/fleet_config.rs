//! The fleet as configured: the sidecars a coordinator may use and how to reach them. It is
//! written as `[fleet]`, either inside a plan or in a file of its own (`--fleet FILE`, whose
//! top-level table is `[fleet]` too, so one file can serve many plans). A `--fleet` file
//! overrides the plan's `[fleet]`; see [`crate::plan::load_with_fleet`].
//!
//! Security stance: mTLS unless `insecure = true`, and insecure only to sidecars on a Unix
//! socket of this machine (`unix:/path`), which check that the caller runs as their user.
//! Plaintext gRPC over TCP, even on loopback, would let anyone on the path (or any local
//! process) start jobs on a database server or read their logs.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::plan::raw::{self, key_subject};
use crate::plan::{Diagnostic, PlanError, Source};

const FLEET_KEYS: &[&str] = &["tls", "insecure", "sidecars"];
const TLS_KEYS: &[&str] = &["ca", "cert", "key"];
const SIDECAR_KEYS: &[&str] = &["endpoint", "tls_name"];

const NO_SIDECARS: &str = "the fleet has no sidecars: add one, e.g.
  [fleet.sidecars.sql1]
  endpoint = \"https://sql1.example.com:7443\"";
const NO_TLS: &str = "no [fleet.tls]: the coordinator talks to sidecars over mTLS and needs ca, \
    cert and key (create them with `coordinator pki init DIR` and `coordinator pki issue DIR \
    coordinator --coordinator`); for sidecars on a Unix socket of this machine only \
    (endpoint = \"unix:/path\"), insecure = true turns TLS off";
const HTTPS_NEEDS_TLS: &str = "an https:// endpoint needs [fleet.tls] (ca, cert and key); \
    insecure = true serves only sidecars on a Unix socket (endpoint = \"unix:/path\")";
const HTTP_IS_REFUSED: &str = "http:// is plaintext over TCP, which would let anyone who can \
    reach the port start and stop jobs: use https:// with [fleet.tls], or for a sidecar on this \
    machine a Unix socket (endpoint = \"unix:/path\") with insecure = true";
const UNIX_NEEDS_INSECURE: &str = "a unix: endpoint is plaintext to a local sidecar: set \
    insecure = true to say so (the sidecar admits only processes of its own user)";
const EMPTY_TLS_NAME: &str = "tls_name is empty: give the name in the sidecar's certificate, or \
    leave the key out to use the endpoint's host";

/// The fleet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetConfig {
    /// mTLS material; required unless `insecure`.
    pub tls: Option<FleetTls>,
    /// Plaintext to sidecars on Unix sockets of this machine (tests, local setups).
    pub insecure: bool,
    pub sidecars: BTreeMap<String, SidecarEntry>,
    /// Where the fleet was written, for messages; `None` for a fleet built in code.
    pub source: Option<FleetSource>,
}

/// `[fleet.tls]`; relative paths already resolved against the file's directory.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `[fleet.sidecars.NAME]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SidecarEntry {
    /// `https://host:port`, or `unix:/path` (with `insecure`) for a local sidecar.
    pub endpoint: String,
    /// The name to verify in the sidecar's certificate; default: the endpoint's host.
    pub tls_name: Option<String>,
}

/// Where a fleet was read from: the file and the line of each key, as dotted paths relative
/// to `[fleet]` (`"tls"`, `"insecure"`, `"sidecars.sql1"`, `"sidecars.sql1.endpoint"`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetSource {
    pub path: PathBuf,
    /// The line of `[fleet]` itself (or the first fleet key).
    pub line: usize,
    pub lines: BTreeMap<String, usize>,
}

/// A parsed endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `https`.
    pub tls: bool,
    /// As written, IPv6 in brackets.
    pub host: String,
    pub port: u16,
}

/// The socket path of a `unix:/path` endpoint (a local sidecar in insecure mode).
pub fn unix_endpoint(text: &str) -> Option<PathBuf> {
    text.strip_prefix("unix:").map(PathBuf::from)
}

/// Parses `http(s)://host:port` (a trailing `/` is allowed, nothing else after the port).
pub fn parse_endpoint(text: &str) -> Result<Endpoint, String> {
    let expected = "write it as https://HOST:PORT, e.g. https://sql1.example.com:7443";
    let (tls, rest) = if let Some(rest) = text.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = text.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err(format!("`{text}` is not an endpoint: {expected}"));
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && !port.is_empty() => (host, port),
        _ => return Err(format!("`{text}` has no host and port: {expected}")),
    };
    let bracketed = host.starts_with('[') && host.ends_with(']');
    if host.contains(['/', '@', '?', '#']) || (host.contains(':') && !bracketed) {
        return Err(format!(
            "`{text}` is not an endpoint: {expected} (IPv6 in brackets: https://[::1]:7443)"
        ));
    }
    match port.parse::<u16>() {
        Ok(port) if port > 0 => Ok(Endpoint {
            tls,
            host: host.to_owned(),
            port,
        }),
        _ => Err(format!(
            "`{text}`: `{port}` is not a port (1-65535): {expected}"
        )),
    }
}

impl SidecarEntry {
    /// The name checked in the sidecar's certificate: `tls_name`, else the endpoint's host
    /// (without IPv6 brackets).
    pub fn server_name(&self) -> Option<String> {
        if let Some(name) = &self.tls_name {
            return Some(name.clone());
        }
        let endpoint = parse_endpoint(&self.endpoint).ok()?;
        Some(
            endpoint
                .host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
        )
    }
}

impl FleetConfig {
    /// Checks the rules that make a fleet usable and safe (see the module comment).
    pub fn validate(&self) -> Result<(), PlanError> {
        let problems = self.problems();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(PlanError::invalid(problems))
        }
    }

    /// What [`FleetConfig::validate`] reports, as a list.
    pub(crate) fn problems(&self) -> Vec<Diagnostic> {
        let mut out = Vec::new();
        let mut problem = |key: &str, message: String| out.push(self.diagnostic(key, message));
        if self.sidecars.is_empty() {
            problem("sidecars", NO_SIDECARS.into());
        }
        if self.tls.is_none() && !self.insecure {
            problem("tls", NO_TLS.into());
        }
        for (name, entry) in &self.sidecars {
            let key = format!("sidecars.{name}.endpoint");
            if let Some(path) = unix_endpoint(&entry.endpoint) {
                if !cfg!(unix) {
                    problem(
                        &key,
                        "unix: endpoints exist on Unix only; use https://".into(),
                    );
                } else if !path.is_absolute() {
                    problem(
                        &key,
                        format!(
                            "`{}`: write an absolute socket path, e.g. unix:/run/agentfleet/sidecar.sock",
                            entry.endpoint
                        ),
                    );
                } else if !self.insecure {
                    problem(&key, UNIX_NEEDS_INSECURE.into());
                }
                continue;
            }
            let endpoint = match parse_endpoint(&entry.endpoint) {
                Ok(e) => e,
                Err(message) => {
                    problem(&key, message);
                    continue;
                }
            };
            if !endpoint.tls {
                problem(&key, HTTP_IS_REFUSED.into());
            } else if self.tls.is_none() && self.insecure {
                // Without insecure, a missing [fleet.tls] is reported once above.
                problem(&key, HTTPS_NEEDS_TLS.into());
            }
            if entry
                .tls_name
                .as_deref()
                .is_some_and(|n| n.trim().is_empty())
            {
                problem(&format!("sidecars.{name}.tls_name"), EMPTY_TLS_NAME.into());
            }
        }
        out
    }

    /// A message located at a fleet key (dotted path below `[fleet]`).
    fn diagnostic(&self, key: &str, message: String) -> Diagnostic {
        let (path, line) = match &self.source {
            Some(s) => {
                // The key itself, else its nearest written parent, else [fleet].
                let mut k = key;
                let line = loop {
                    if let Some(&l) = s.lines.get(k) {
                        break l;
                    }
                    match k.rsplit_once('.') {
                        Some((parent, _)) => k = parent,
                        None => break s.line,
                    }
                };
                (Some(s.path.clone()), Some(line))
            }
            None => (None, None),
        };
        let subject = match key.rsplit_once('.') {
            Some((table, leaf)) => format!("[fleet.{table}] key `{leaf}`"),
            None => format!("[fleet] key `{key}`"),
        };
        Diagnostic {
            path,
            line,
            subject: Some(subject),
            message,
        }
    }
}

/// Reads a fleet file (top-level `[fleet]`) and validates it.
pub fn load_fleet(path: &Path) -> Result<FleetConfig, PlanError> {
    let text = crate::plan::read_text(path, "fleet file")?;
    parse_fleet(&text, path)
}

/// Validates fleet-file text; `path` is for messages and to resolve relative TLS paths.
pub fn parse_fleet(text: &str, path: &Path) -> Result<FleetConfig, PlanError> {
    let src = Source { path, text };
    let root = DeTable::parse(text).map_err(|e| {
        let line = match e.span() {
            Some(span) => Some(src.span_line(&span)),
            None => src.line_of_unplaced(&e),
        };
        let message = format!("not valid TOML: {}", e.message().trim_end());
        PlanError::invalid(vec![Diagnostic {
            path: Some(path.to_owned()),
            line,
            subject: None,
            message,
        }])
    })?;
    let root = root.into_inner();
    let mut out = Vec::new();
    raw::check_keys(src, &root, &["fleet"], "", &mut out);
    let base = path.parent().unwrap_or(Path::new(""));
    let fleet = match root.get("fleet") {
        Some(value) => from_value(src, value, base, &mut out),
        None => {
            out.push(Diagnostic {
                path: Some(path.to_owned()),
                line: None,
                subject: None,
                message: "no [fleet] table: a fleet file holds [fleet.tls] and [fleet.sidecars.NAME] tables, the same as a plan's [fleet]".into(),
            });
            None
        }
    };
    if let Some(fleet) = &fleet {
        out.extend(fleet.problems());
    }
    match fleet {
        Some(fleet) if out.is_empty() => Ok(fleet),
        _ => Err(PlanError::invalid(out)),
    }
}

/// Decodes a `[fleet]` value without the usability checks of [`FleetConfig::validate`]:
/// unknown keys, types, and relative paths resolved against `base`.
pub(crate) fn from_value(
    src: Source<'_>,
    value: &Spanned<DeValue<'_>>,
    base: &Path,
    out: &mut Vec<Diagnostic>,
) -> Option<FleetConfig> {
    let Some(table) = value.get_ref().as_table() else {
        out.push(src.diag(
            &value.span(),
            "key `fleet`".to_owned(),
            "expected a table: write [fleet.tls] and [fleet.sidecars.NAME] sections",
        ));
        return None;
    };
    let before = out.len();
    let mut source = FleetSource {
        path: src.path.to_owned(),
        line: src.span_line(&value.span()),
        lines: BTreeMap::new(),
    };
    record_lines(src, table, "", &mut source.lines);
    raw::check_keys(src, table, FLEET_KEYS, "[fleet]", out);
    let insecure = match table.get("insecure") {
        None => false,
        Some(v) => raw::decode::<bool>(src, v.clone(), &key_subject("[fleet]", "insecure"))
            .map_err(|d| out.push(d))
            .unwrap_or(false),
    };
    let tls = table.get("tls").and_then(|v| {
        if let Some(t) = v.get_ref().as_table() {
            raw::check_keys(src, t, TLS_KEYS, "[fleet.tls]", out).then_some(())?;
        }
        let tls: FleetTls = raw::decode(src, v.clone(), "[fleet.tls]")
            .map_err(|d| out.push(d))
            .ok()?;
        Some(FleetTls {
            ca: base.join(tls.ca),
            cert: base.join(tls.cert),
            key: base.join(tls.key),
        })
    });
    let mut sidecars = BTreeMap::new();
    if let Some(v) = table.get("sidecars") {
        match v.get_ref().as_table() {
            None => out.push(src.diag(
                &v.span(),
                key_subject("[fleet]", "sidecars"),
                "expected a table: write each sidecar as [fleet.sidecars.NAME] with an endpoint",
            )),
            Some(list) => {
                for (name, entry) in list {
                    let subject = format!("[fleet.sidecars.{}]", name.get_ref());
                    if let Some(t) = entry.get_ref().as_table()
                        && !raw::check_keys(src, t, SIDECAR_KEYS, &subject, out)
                    {
                        continue;
                    }
                    match raw::decode::<SidecarEntry>(src, entry.clone(), &subject) {
                        Ok(e) => {
                            sidecars.insert(name.get_ref().to_string(), e);
                        }
                        Err(d) => out.push(d),
                    }
                }
            }
        }
    }
    (out.len() == before).then_some(FleetConfig {
        tls,
        insecure,
        sidecars,
        source: Some(source),
    })
}

/// Records the line of every key below `[fleet]` as a dotted path.
fn record_lines(
    src: Source<'_>,
    table: &DeTable<'_>,
    prefix: &str,
    lines: &mut BTreeMap<String, usize>,
) {
    for (key, value) in table {
        let path = format!("{prefix}{}", key.get_ref());
        lines.insert(path.clone(), src.span_line(&key.span()));
        if let Some(t) = value.get_ref().as_table() {
            record_lines(src, t, &format!("{path}."), lines);
        }
    }
}

#[cfg(test)]
mod tests;
