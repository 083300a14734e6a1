//! Shared SSIS helpers: a stand-in with Windows logins and packages, NTLM connections and
//! the sidecar's SSIS query texts (read from its source: the contract).

use sqlagent_standin::Standin;
use tiberius::{AuthMethod, Config, EncryptionLevel, Row};

use super::*;

pub const SSIS_JOBS: &str = r#"
[[login]]
user = "sidecar"
password = "Secret-1"

[[login]]
user = 'CONTOSO\etl'
password = "Etl-pw-1"
windows = true
role = "user"

[[login]]
user = 'CONTOSO\other'
password = "Other-pw-1"
windows = true
role = "user"

[[login]]
user = 'CONTOSO\auditor'
password = "Audit-pw-1"
windows = true
role = "user"
ssis_roles = ["ssis_logreader"]

[[login]]
user = 'CONTOSO\admin'
password = "Admin-pw-1"
windows = true
role = "user"
ssis_roles = ["ssis_admin"]

[agent]
utc_offset = "+02:00"

[ssis]
pending_delay = "30ms"
stop_latency = "150ms"
agent_account = 'CONTOSO\sqlagent'

[[ssis.package]]
folder = "ETL"
project = "Warehouse"
name = "Load.dtsx"
[[ssis.package.parameter]]
name = "BatchSize"
type = "Int32"
default = "100"
[[ssis.package.parameter]]
name = "Region"
type = "String"
scope = "project"
[[ssis.package.task]]
name = "Extract"
duration = "20ms"
messages = [{ type = 70, text = "Extracted 1200 rows." }]
rows = [{ path_name = "OLE DB Source Output", source = "Orders", destination = "Staging", rows = 1200 }]
[[ssis.package.task]]
name = "Load"
duration = "20ms"
messages = [{ type = 110, text = "Truncation may occur." }]

[[ssis.package]]
folder = "ETL"
project = "Warehouse"
name = "Broken.dtsx"
[[ssis.package.task]]
name = "Extract"
duration = "10ms"
[[ssis.package.task]]
name = "Merge"
duration = "10ms"
result = "failure"
messages = [{ type = 120, text = "Violation of PRIMARY KEY constraint." }]

[[ssis.package]]
folder = "ETL"
project = "Warehouse"
name = "Forever.dtsx"
[[ssis.package.task]]
name = "Wait"
duration = "until_stopped"

[[ssis.package]]
folder = "ETL"
project = "Warehouse"
name = "Queued.dtsx"
pending_delay = "1h"
[[ssis.package.task]]
name = "Never"

[[ssis.package]]
folder = "ETL"
project = "Warehouse"
name = "Required.dtsx"
[[ssis.package.parameter]]
name = "Target"
type = "String"
required = true
[[ssis.package.task]]
name = "Use"

[[job]]
name = "SSIS Load"
start_latency = "10ms"
[[job.step]]
name = "Run Load"
subsystem = "SSIS"
command = '/ISSERVER "\"\SSISDB\ETL\Warehouse\Load.dtsx\"" /SERVER "\"SQL1\"" /Par "\"$ServerOption::LOGGING_LEVEL(Int16)\"";1 /Par "\"$ServerOption::SYNCHRONIZED(Boolean)\"";True /CALLERINFO SQLAGENT /REPORTING E'

[[job]]
name = "SSIS Broken"
start_latency = "10ms"
[[job.step]]
name = "Run Broken"
subsystem = "SSIS"
command = '/ISSERVER "\"\SSISDB\ETL\Warehouse\Broken.dtsx\"" /SERVER "\"SQL1\"" /Par "\"$ServerOption::SYNCHRONIZED(Boolean)\"";True /CALLERINFO SQLAGENT /REPORTING E'

[[job]]
name = "SSIS Forever"
start_latency = "10ms"
[[job.step]]
name = "Run Forever"
subsystem = "SSIS"
command = '/ISSERVER "\"\SSISDB\ETL\Warehouse\Forever.dtsx\"" /SERVER "\"SQL1\"" /Par "\"$ServerOption::SYNCHRONIZED(Boolean)\"";True /CALLERINFO SQLAGENT /REPORTING E'
"#;

/// The sidecar's SSIS query texts, by marker (read from its source: the contract).
pub fn q(marker: &str) -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../sidecar/src/backend/ssis/queries.rs"
    );
    let source = std::fs::read_to_string(path).expect("the sidecar's SSIS queries");
    let head = format!("= \"-- agentfleet:{marker}\n");
    let at = source.find(&head).unwrap_or_else(|| panic!("no {marker}")) + 3;
    let len = source[at..].find("\";").expect("end of text");
    source[at..at + len].to_string()
}

pub async fn ssis_standin() -> Standin {
    standin_with(SSIS_JOBS, sqlagent_standin::TlsSetup::SelfSigned).await
}

/// A plaintext connection as a Windows principal (NTLM) to database SSISDB.
pub async fn windows(s: &Standin, user: &str, password: &str) -> tiberius::Result<Conn> {
    let mut c = Config::new();
    c.host("127.0.0.1");
    c.port(s.addr().port());
    c.authentication(AuthMethod::windows(user, password));
    c.encryption(EncryptionLevel::NotSupported);
    c.database("SSISDB");
    connect_with(c).await
}

pub async fn etl(s: &Standin) -> Conn {
    windows(s, r"CONTOSO\etl", "Etl-pw-1")
        .await
        .expect("NTLM login")
}

pub async fn rows(c: &mut Conn, sql: &str, params: &[&dyn tiberius::ToSql]) -> Vec<Vec<Row>> {
    c.query(sql, params)
        .await
        .unwrap()
        .into_results()
        .await
        .unwrap()
}

pub async fn start(c: &mut Conn, package: &str, level: i32, token: &str, params: &str) -> Row {
    let none: Option<i64> = None;
    let r = rows(
        c,
        &q("ssis_start"),
        &[
            &"ETL",
            &"Warehouse",
            &package,
            &none,
            &false,
            &level,
            &token,
            &params,
        ],
    )
    .await;
    r.into_iter().next().unwrap().remove(0)
}

pub fn started(r: &Row) -> i64 {
    assert_eq!(
        r.get::<&str, _>("stage"),
        Some("started"),
        "{:?}",
        r.get::<&str, _>("error_message")
    );
    r.get::<i64, _>("execution_id").unwrap()
}

pub fn err(r: &Row) -> (Option<&str>, Option<i32>) {
    (r.get::<&str, _>("stage"), r.get::<i32, _>("error_number"))
}

/// One poll of (id, msg, stat, data) watermarks; its four result sets.
pub async fn poll(c: &mut Conn, tracked: &[(i64, i64, i64, i64)], tail: i64) -> Vec<Vec<Row>> {
    let json: Vec<String> = tracked
        .iter()
        .map(|(id, m, s, d)| format!(r#"{{"id":{id},"msg":{m},"stat":{s},"data":{d}}}"#))
        .collect();
    let json = format!("[{}]", json.join(","));
    rows(
        c,
        &q("ssis_poll"),
        &[&json.as_str(), &100i32, &100i32, &tail, &100i32],
    )
    .await
}

pub fn status_of(p: &[Vec<Row>], id: i64) -> Option<i32> {
    p[0].iter()
        .find(|r| r.get::<i64, _>("execution_id") == Some(id))
        .and_then(|r| r.get::<i32, _>("status"))
}

pub async fn wait_status(c: &mut Conn, id: i64, want: i32) -> Vec<Vec<Row>> {
    wait_until!(
        format!("execution {id} status {want}"),
        async {
            let p = poll(c, &[(id, 0, 0, 0)], 0).await;
            (status_of(&p, id) == Some(want)).then_some(p)
        }
        .await
    )
}

pub fn ids(rs: &[Row], col: &str) -> Vec<i64> {
    rs.iter().map(|r| r.get::<i64, _>(col).unwrap()).collect()
}
