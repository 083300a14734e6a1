//! Shared helpers: an in-process stand-in, tiberius clients and bounded waits.
#![allow(dead_code)] // each test binary uses a different subset

use std::future::Future;
use std::time::Duration;

use sqlagent_standin::{JobsFile, Standin, StandinConfig, TlsSetup};
use tiberius::{AuthMethod, Client, Config, EncryptionLevel};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

pub type Conn = Client<Compat<TcpStream>>;

pub const USER: &str = "sidecar";
pub const PASSWORD: &str = "Secret-1";

pub const JOBS: &str = r#"
[[login]]
user = "sidecar"
password = "Secret-1"

[[login]]
user = "reader"
password = "pw"
role = "reader"

[agent]
utc_offset = "+02:00"
server_name = "sql1"
request_latency = "10ms"
stop_latency = "20ms"

[[job]]
name = "Quick"
description = "one fast step"
start_latency = "40ms"
[[job.step]]
name = "only"
duration = "60ms"
message = "hello"

[[job]]
name = "Retrying"
start_latency = "20ms"
[[job.step]]
name = "flaky"
duration = "20ms"
retries = 2
retry_interval = "30ms"
outcomes = ["fail", "succeed"]
on_success = "next"
message = "boom"
sql_message_id = 50000
sql_severity = 16
[[job.step]]
name = "after"
duration = "20ms"

[[job]]
name = "Queued"
start_latency = "10ms"
queue_delay = "400ms"
[[job.step]]
name = "late"
duration = "10ms"

[[job]]
name = "Forever"
start_latency = "10ms"
[[job.step]]
name = "wait"
duration = "until_stopped"
"#;

pub fn install_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

pub async fn standin_with(jobs: &str, tls: TlsSetup) -> Standin {
    install_provider();
    Standin::start(StandinConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        jobs: JobsFile::parse(jobs).expect("jobs file"),
        tls,
    })
    .await
    .expect("stand-in starts")
}

pub async fn standin() -> Standin {
    standin_with(JOBS, TlsSetup::SelfSigned).await
}

pub fn config(s: &Standin, user: &str, password: &str, enc: EncryptionLevel) -> Config {
    let mut c = Config::new();
    c.host("127.0.0.1");
    c.port(s.addr().port());
    c.authentication(AuthMethod::sql_server(user, password));
    c.encryption(enc);
    c.database("msdb");
    c
}

pub async fn connect_with(c: Config) -> tiberius::Result<Conn> {
    let tcp = TcpStream::connect(c.get_addr()).await?;
    tcp.set_nodelay(true)?;
    Client::connect(c, tcp.compat_write()).await
}

/// A plaintext connection as the default test login.
pub async fn connect(s: &Standin) -> Conn {
    connect_with(config(s, USER, PASSWORD, EncryptionLevel::NotSupported))
        .await
        .expect("connect")
}

/// Polls `f` until it returns `Some` or the deadline passes.
pub async fn wait_for<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Like [`wait_for`] for bodies that borrow mutably: `wait_until!("what", async { … }.await)`
/// where the body yields `Option<T>`.
#[macro_export]
macro_rules! wait_until {
    ($what:expr, $body:expr) => {{
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if let Some(v) = $body {
                break v;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {}",
                $what
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }};
}

pub mod ssis;
