//! Writers for the files the binaries read: the fleet file and TOML fragments.
use std::fmt::Write as _;
use std::path::Path;

use crate::pki::CertPair;
use crate::sidecar::Sidecar;

/// `s` as a TOML basic string, quotes included. JSON string escapes are a subset of TOML's
/// (serde_json never emits `\/`), so any path or script survives the round trip.
pub fn toml_str(s: impl AsRef<str>) -> String {
    serde_json::to_string(s.as_ref()).expect("a string always serializes")
}

/// `p` as a TOML string (paths in tests are UTF-8: they live in a tempdir).
pub fn toml_path(p: &Path) -> String {
    toml_str(p.to_str().expect("test paths are UTF-8"))
}

/// A list of strings as a TOML array: `["a", "b"]`.
pub fn toml_list<S: AsRef<str>>(items: &[S]) -> String {
    let items: Vec<String> = items.iter().map(toml_str).collect();
    format!("[{}]", items.join(", "))
}

/// A fleet file's text: `[fleet.tls]` with the CA and a client certificate, then one
/// `[fleet.sidecars.NAME]` per sidecar at `https://127.0.0.1:PORT`.
pub fn fleet_toml(ca: &Path, client: &CertPair, sidecars: &[&Sidecar]) -> String {
    let mut text = format!(
        "[fleet.tls]\nca = {}\ncert = {}\nkey = {}\n",
        toml_path(ca),
        toml_path(&client.cert),
        toml_path(&client.key)
    );
    for sidecar in sidecars {
        let _ = write!(
            text,
            "\n[fleet.sidecars.{}]\nendpoint = {}\n",
            sidecar.name(),
            toml_str(sidecar.endpoint())
        );
    }
    text
}
