use super::*;

fn fleet(text: &str) -> Result<FleetConfig, Vec<String>> {
    parse_fleet(text, Path::new("conf/fleet.toml"))
        .map_err(|e| e.diagnostics().iter().map(ToString::to_string).collect())
}

const MTLS: &str = r#"
[fleet.tls]
ca = "pki/ca.pem"
cert = "pki/coordinator.pem"
key = "/etc/agentfleet/coordinator.key"

[fleet.sidecars.sql1]
endpoint = "https://sql1.example.com:7443"
[fleet.sidecars.sql2]
endpoint = "https://10.1.2.3:7443"
tls_name = "sql2.example.com"
"#;

#[test]
fn parses_an_mtls_fleet_and_resolves_paths() {
    let f = fleet(MTLS).unwrap();
    let tls = f.tls.as_ref().unwrap();
    assert_eq!(tls.ca, Path::new("conf/pki/ca.pem"));
    assert_eq!(tls.key, Path::new("/etc/agentfleet/coordinator.key"));
    assert!(!f.insecure);
    assert_eq!(
        f.sidecars["sql1"].server_name().as_deref(),
        Some("sql1.example.com")
    );
    assert_eq!(
        f.sidecars["sql2"].server_name().as_deref(),
        Some("sql2.example.com")
    );
    let source = f.source.as_ref().unwrap();
    assert_eq!(source.lines["sidecars.sql2.tls_name"], 11);
}

#[test]
fn endpoints() {
    let e = parse_endpoint("https://[::1]:7443/").unwrap();
    assert_eq!((e.tls, e.host.as_str(), e.port), (true, "[::1]", 7443));
    assert!(!parse_endpoint("http://localhost:1").unwrap().tls);
    for bad in [
        "sql1:7443",
        "https://sql1",
        "https://sql1:0",
        "https://sql1:99999",
        "https://:7443",
        "https://a/b:1",
        "https://::1:7443",
    ] {
        assert!(parse_endpoint(bad).is_err(), "{bad}");
    }
    let entry = SidecarEntry {
        endpoint: "https://[::1]:7443".into(),
        tls_name: None,
    };
    assert_eq!(entry.server_name().as_deref(), Some("::1"));
}

#[test]
fn tls_is_required_unless_insecure() {
    let e = fleet("[fleet.sidecars.a]\nendpoint = \"https://a.example.com:1\"\n").unwrap_err();
    assert_eq!(e.len(), 1, "one problem, said once: {e:#?}");
    assert!(
        e[0].starts_with("conf/fleet.toml:1: [fleet] key `tls`: no [fleet.tls]"),
        "{}",
        e[0]
    );
    let text = "[fleet]\ninsecure = true\n[fleet.sidecars.a]\nendpoint = \"https://127.0.0.1:1\"\n";
    let e = fleet(text).unwrap_err();
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(
        e[0].starts_with("conf/fleet.toml:4: [fleet.sidecars.a] key `endpoint`: an https:// endpoint needs [fleet.tls]"),
        "{}",
        e[0]
    );
}

#[test]
fn insecure_only_to_unix_sockets() {
    let ok = "[fleet]\ninsecure = true\n[fleet.sidecars.a]\nendpoint = \"unix:/run/af/a.sock\"\n";
    if cfg!(unix) {
        assert!(fleet(ok).unwrap().insecure);
        let e = fleet(&ok.replace("insecure = true", "insecure = false")).unwrap_err();
        assert!(
            e.iter()
                .any(|m| m.contains("a unix: endpoint is plaintext")),
            "{e:#?}"
        );
        let e = fleet(&ok.replace("/run/af/a.sock", "a.sock")).unwrap_err();
        assert!(e[0].contains("absolute socket path"), "{}", e[0]);
    }
    // Plaintext over TCP is refused even on loopback: any local process could use it.
    for endpoint in [
        "http://127.0.0.1:7443",
        "http://[::1]:7444",
        "http://sql2.corp:7443",
    ] {
        let text =
            format!("[fleet]\ninsecure = true\n[fleet.sidecars.b]\nendpoint = \"{endpoint}\"\n");
        let e = fleet(&text).unwrap_err();
        assert_eq!(e.len(), 1, "{e:#?}");
        assert!(
            e[0].starts_with("conf/fleet.toml:4: [fleet.sidecars.b] key `endpoint`: http:// is plaintext over TCP"),
            "{}",
            e[0]
        );
    }
}

#[test]
fn http_is_refused() {
    let text = MTLS.replace("https://sql1.example.com:7443", "http://127.0.0.1:7443");
    let e = fleet(&text).unwrap_err();
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(
        e[0].contains("key `endpoint`: http:// is plaintext"),
        "{}",
        e[0]
    );
}

#[test]
fn unknown_keys_and_empty_fleets() {
    let e = fleet("[fleet]\ninsecur = true\n[fleet.tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\nkye = \"d\"\n[fleet.sidecars.a]\nendpont = \"x\"\n").unwrap_err();
    assert_eq!(e.len(), 3, "{e:#?}");
    assert!(e[0].starts_with("conf/fleet.toml:2: [fleet] key `insecur`: unknown key (did you mean `insecure`?); allowed keys: tls, insecure, sidecars"), "{}", e[0]);
    assert!(
        e[1].starts_with(
            "conf/fleet.toml:7: [fleet.tls] key `kye`: unknown key (did you mean `key`?)"
        ),
        "{}",
        e[1]
    );
    assert!(
        e[2].starts_with("conf/fleet.toml:9: [fleet.sidecars.a] key `endpont`"),
        "{}",
        e[2]
    );

    let e = fleet("[fleet]\ninsecure = true\n").unwrap_err();
    assert!(e[0].contains("the fleet has no sidecars"), "{}", e[0]);
    let e = fleet("[plan]\nname = \"x\"\n").unwrap_err();
    assert!(e.iter().any(|m| m.contains("no [fleet] table")), "{e:#?}");
}

#[test]
fn missing_endpoint_and_wrong_types() {
    let e =
        fleet("[fleet]\ninsecure = \"yes\"\n[fleet.sidecars.a]\ntls_name = \"a\"\n").unwrap_err();
    assert_eq!(e.len(), 2, "{e:#?}");
    assert!(
        e[0].starts_with("conf/fleet.toml:2: [fleet] key `insecure`: invalid type"),
        "{}",
        e[0]
    );
    assert!(
        e[1].contains("[fleet.sidecars.a]: missing field `endpoint`"),
        "{}",
        e[1]
    );
}

#[test]
fn validate_without_a_file() {
    let f = FleetConfig::default();
    let e = f.validate().unwrap_err().to_string();
    assert!(
        e.starts_with("[fleet] key `sidecars`: the fleet has no sidecars"),
        "{e}"
    );
}
