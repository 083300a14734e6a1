//! The binary: prints one JSON line when listening, serves TDS and the admin socket.

mod common;

use std::process::Stdio;

use common::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

#[tokio::test]
async fn binary_listens_prints_json_and_obeys_admin() {
    install_provider();
    let dir = tempfile::tempdir().unwrap();
    let jobs = dir.path().join("jobs.toml");
    std::fs::write(&jobs, JOBS).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sqlagent-standin"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--jobs",
        ])
        .arg(&jobs)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines.next_line().await.unwrap().expect("a listening line");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["event"], "listening");
    let addr: std::net::SocketAddr = v["addr"].as_str().unwrap().parse().unwrap();
    let admin = v["admin"].as_str().unwrap().to_string();

    let mut cfg = tiberius::Config::new();
    cfg.host("127.0.0.1");
    cfg.port(addr.port());
    cfg.authentication(tiberius::AuthMethod::sql_server(USER, PASSWORD));
    cfg.encryption(tiberius::EncryptionLevel::Required);
    cfg.trust_cert();
    let mut c = connect_with(cfg).await.unwrap();
    let row = c
        .query("-- agentfleet:server_info", &[])
        .await
        .unwrap()
        .into_row()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.get::<i32, _>("agent_session_id"), Some(1));

    let sock = tokio::net::TcpStream::connect(admin).await.unwrap();
    let (rd, mut wr) = sock.into_split();
    let mut answers = BufReader::new(rd).lines();
    for (cmd, expected) in [
        ("agent restart", "ok"),
        ("agent status", "ok running session=2"),
        ("fail 1", "ok"),
        ("bogus", "error unknown command \"bogus\""),
    ] {
        wr.write_all(format!("{cmd}\n").as_bytes()).await.unwrap();
        assert_eq!(
            answers.next_line().await.unwrap().unwrap(),
            expected,
            "{cmd}"
        );
    }
    let e = c
        .query("-- agentfleet:server_info", &[])
        .await
        .err()
        .unwrap();
    assert_eq!(e.code(), Some(1222));
    child.kill().await.unwrap();
}
