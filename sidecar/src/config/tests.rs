use std::collections::HashMap;
use std::path::Path;

use super::*;

const GOOD: &str = r#"
name = "sql1"
listen = "0.0.0.0:7443"
state_dir = "state"

[tls]
cert = "pki/sql1.pem"
key = "pki/sql1.key"
client_ca = "/etc/pki/ca.pem"
allow_clients = ["coordinator"]

[[job]]
name = "ETL - Stage"
params = ["BUSINESS_DATE"]
[[job.step]]
name = "extract"
run = ["scripts/extract.sh", "--fast"]
on_success = "goto:load"
[[job.step]]
name = "load"
run = ["dtexec", "/F", "x.dtsx"]
"#;

fn no_env(_: &str) -> Option<String> {
    None
}

fn parse(text: &str) -> Result<SidecarConfig, ConfigError> {
    from_text(
        text,
        Path::new("/etc/agentfleet/sidecar.toml"),
        &Flags::default(),
        &no_env,
    )
}

fn error(text: &str) -> String {
    parse(text)
        .expect_err("config should be refused")
        .to_string()
}

#[test]
fn defaults_and_relative_paths() {
    let c = parse(GOOD).unwrap();
    assert_eq!(c.name, "sql1");
    assert_eq!(c.slots, 4);
    assert_eq!(c.stop_grace, Duration::from_secs(10));
    assert!(!c.insecure);
    assert_eq!(c.state_dir, Path::new("/etc/agentfleet/state"));
    let tls = c.tls.unwrap();
    assert_eq!(tls.cert, Path::new("/etc/agentfleet/pki/sql1.pem"));
    assert_eq!(tls.client_ca, Path::new("/etc/pki/ca.pem"));
    // A relative program path is relative to the config file; a bare name stays for PATH.
    assert_eq!(
        c.jobs[0].steps[0].run[0],
        "/etc/agentfleet/scripts/extract.sh"
    );
    assert_eq!(c.jobs[0].steps[1].run[0], "dtexec");
}

#[test]
fn env_overrides_file_and_flags_override_env() {
    let env: HashMap<&str, &str> = HashMap::from([
        (ENV_LISTEN, "127.0.0.1:9000"),
        (ENV_STATE_DIR, "/srv/env-state"),
        (ENV_LOG_FORMAT, "json"),
    ]);
    let lookup = |k: &str| env.get(k).map(|v| (*v).to_owned());
    let path = Path::new("/etc/agentfleet/sidecar.toml");
    let c = from_text(GOOD, path, &Flags::default(), &lookup).unwrap();
    assert_eq!(c.listen, "127.0.0.1:9000");
    assert_eq!(c.state_dir, Path::new("/srv/env-state"));
    assert_eq!(c.log_format, LogFormat::Json);

    let flags = Flags {
        listen: Some("127.0.0.1:9001".into()),
        state_dir: Some("/srv/flag-state".into()),
        log_format: Some(LogFormat::Plain),
        config: None,
    };
    let c = from_text(GOOD, path, &flags, &lookup).unwrap();
    assert_eq!(c.listen, "127.0.0.1:9001");
    assert_eq!(c.state_dir, Path::new("/srv/flag-state"));
    assert_eq!(c.log_format, LogFormat::Plain);
}

#[test]
fn config_path_from_env_when_no_flag() {
    let lookup = |k: &str| (k == ENV_CONFIG).then(|| "/x/sidecar.toml".to_owned());
    assert_eq!(
        config_path(&Flags::default(), &lookup).unwrap(),
        Path::new("/x/sidecar.toml")
    );
    let err = config_path(&Flags::default(), &no_env)
        .unwrap_err()
        .to_string();
    assert!(err.contains("--config"), "{err}");
}

#[test]
fn unknown_key_names_file_line_and_key() {
    let text = GOOD
        .replace("slots_x = 1\n", "")
        .replace("[tls]\n", "[tls]\nkeyy = \"a\"\n");
    let err = error(&text);
    assert!(err.starts_with("/etc/agentfleet/sidecar.toml:7:"), "{err}");
    assert!(err.contains("unknown field `keyy`"), "{err}");
}

#[test]
fn bad_duration_names_line() {
    let text = format!("stop_grace = \"soon\"\n{GOOD}");
    let err = error(&text);
    assert!(err.starts_with("/etc/agentfleet/sidecar.toml:1:"), "{err}");
    assert!(err.contains("not a duration"), "{err}");
    assert!(err.contains("stop_grace"), "{err}");
}

#[test]
fn zero_slots_refused_with_line() {
    let err = error(&format!("slots = 0\n{GOOD}"));
    assert!(
        err.contains("sidecar.toml:1: `slots`: slots must be at least 1"),
        "{err}"
    );
}

#[test]
fn tls_required_unless_insecure() {
    let text = GOOD.replace("[tls]", "[tls_gone]");
    // Renaming the header makes its keys unknown at the top level: parse error.
    assert!(error(&text).contains("unknown field"));
    let text = "name = \"a\"\nlisten = \"0.0.0.0:1\"\nstate_dir = \"s\"\n";
    let err = error(text);
    assert!(err.contains("`tls`: add a [tls] section"), "{err}");
}

#[test]
fn insecure_only_on_a_unix_socket() {
    // Not on TCP at all: on loopback, any local process could start and stop jobs.
    for listen in ["0.0.0.0:7443", "127.0.0.1:7443", "[::1]:7443"] {
        let text =
            format!("name = \"a\"\nlisten = \"{listen}\"\nstate_dir = \"s\"\ninsecure = true\n");
        let err = error(&text);
        assert!(err.contains("sidecar.toml:4: `insecure`"), "{err}");
        assert!(err.contains("let any process start and stop jobs"), "{err}");
    }
    let text =
        "name = \"a\"\nlisten = \"unix:/run/af/s.sock\"\nstate_dir = \"s\"\ninsecure = true\n";
    if cfg!(unix) {
        let c = parse(text).unwrap();
        assert!(c.insecure);
        // A Unix socket needs insecure = true said out loud, and an absolute path.
        let err = error(&text.replace("insecure = true", "insecure = false"));
        assert!(err.contains("set insecure = true to say so"), "{err}");
        let err = error(&text.replace("/run/af/s.sock", "s.sock"));
        assert!(err.contains("absolute socket path"), "{err}");
    } else {
        assert!(error(text).contains("Unix sockets exist on Unix only"));
    }
}

#[test]
fn listen_from_flag_is_blamed_on_the_flag() {
    let flags = Flags {
        listen: Some("nonsense".into()),
        ..Flags::default()
    };
    let err = from_text(GOOD, Path::new("s.toml"), &flags, &no_env)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("--listen: `listen`: `nonsense` is not an address"),
        "{err}"
    );
}

#[test]
fn duplicate_job_and_step_names_and_bad_goto() {
    let text = format!(
        "{GOOD}\n[[job]]\nname = \"ETL - Stage\"\n[[job.step]]\nname = \"a\"\nrun = [\"x\"]\non_failure = \"goto:nowhere\"\n[[job.step]]\nname = \"a\"\nrun = []\n"
    );
    let err = error(&text);
    assert!(err.contains("4 problems"), "{err}");
    assert!(
        err.contains(
            "sidecar.toml:24: `job \"ETL - Stage\" name`: another [[job]] has the same name"
        ),
        "{err}"
    );
    assert!(err.contains("sidecar.toml:28: `job \"ETL - Stage\" step \"a\" on_failure`: goto target `nowhere` is not a step"), "{err}");
    assert!(
        err.contains("sidecar.toml:30: `job \"ETL - Stage\" step \"a\" name`: another step"),
        "{err}"
    );
    assert!(
        err.contains("sidecar.toml:31: `job \"ETL - Stage\" step \"a\" run`"),
        "{err}"
    );
}

#[test]
fn job_without_steps_refused() {
    let text = format!("{GOOD}\n[[job]]\nname = \"empty\"\n");
    let err = error(&text);
    assert!(
        err.contains("`job \"empty\" step`: the job has no steps"),
        "{err}"
    );
}

#[test]
fn bad_action_and_param_names() {
    let text = GOOD
        .replace("goto:load", "maybe")
        .replace("BUSINESS_DATE", "BUSINESS-DATE");
    let err = error(&text);
    assert!(err.contains("`maybe` is not a step action"), "{err}");
    assert!(
        err.contains("`BUSINESS-DATE` is not an environment variable name"),
        "{err}"
    );
}

#[test]
fn empty_allow_clients_refused() {
    let err = error(&GOOD.replace("[\"coordinator\"]", "[]"));
    assert!(
        err.contains("sidecar.toml:10: `tls.allow_clients`"),
        "{err}"
    );
}

#[test]
fn log_format_parses() {
    assert_eq!(parse_log_format("JSON").unwrap(), LogFormat::Json);
    assert!(parse_log_format("xml").unwrap_err().contains("plain"));
}

#[test]
fn revocation_settings_resolve_and_empty_entries_are_refused() {
    let text = GOOD.replace(
        "allow_clients = [\"coordinator\"]",
        "allow_clients = [\"coordinator\"]\ncrl = \"pki/crl.pem\"\nrevoked = [\"old-coordinator\", \"4a:0b\"]",
    );
    let tls = parse(&text).unwrap().tls.unwrap();
    assert_eq!(
        tls.crl.as_deref(),
        Some(Path::new("/etc/agentfleet/pki/crl.pem"))
    );
    assert_eq!(tls.revoked, ["old-coordinator", "4a:0b"]);
    assert!(parse(GOOD).unwrap().tls.unwrap().crl.is_none());

    let err = error(&GOOD.replace(
        "allow_clients = [\"coordinator\"]",
        "allow_clients = [\"coordinator\"]\nrevoked = [\"\"]",
    ));
    assert!(err.contains("sidecar.toml:11: `tls.revoked`"), "{err}");
}

#[test]
fn a_catalog_job_over_a_sql_login_is_refused_at_load_with_what_to_do() {
    let text = format!(
        "{GOOD}\n[sqlagent]\nserver = \"tcp:sql1,1433\"\nauth = \"sql\"\nuser = \"agentfleet\"\npassword_env = \"PW\"\n\n[[catalog_job]]\nname = \"SSIS - Load\"\nfolder = \"ETL\"\nproject = \"Warehouse\"\npackage = \"Load.dtsx\"\n"
    );
    let e = parse(&text).unwrap_err().to_string();
    let auth_line = text.lines().position(|l| l.starts_with("auth = ")).unwrap() + 1;
    assert!(
        e.contains(&format!("sidecar.toml:{auth_line}"))
            && e.contains("27123")
            && e.contains("[ssis]"),
        "{e}"
    );
    // An [ssis] section with Windows authentication makes it valid; [sqlagent] keeps its login.
    let ok = format!(
        "{text}\n[ssis]\nserver = \"tcp:sql1,1433\"\nauth = \"windows\"\nuser = 'CONTOSO\\etl'\npassword_env = \"PW\"\n"
    );
    let c = parse(&ok).unwrap();
    assert_eq!(c.catalog_jobs.len(), 1);
    assert_eq!(c.ssis.unwrap().auth, "windows");
}
