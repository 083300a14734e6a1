//! The stand-in's own protocol tests, driven by tiberius (test plan of the TDS notes, §6.2).

mod common;

use std::time::Duration;

use chrono::{DateTime, FixedOffset, NaiveDateTime};
use common::*;
use sqlagent_standin::{FailMode, TlsSetup};
use tiberius::error::Error;
use tiberius::{ColumnType, Command, EncryptionLevel, Uuid};

#[tokio::test]
async fn plaintext_connect_and_empty_batch() {
    let s = standin().await;
    let mut c = connect(&s).await;
    let r = c
        .simple_query("-- standin:empty")
        .await
        .unwrap()
        .into_results()
        .await
        .unwrap();
    assert!(r.is_empty());
    let v = c
        .simple_query("SELECT @@VERSION")
        .await
        .unwrap()
        .into_row()
        .await
        .unwrap()
        .unwrap();
    assert!(v.get::<&str, _>(0).unwrap().contains("not SQL Server"));
    let r = s.requests();
    assert_eq!(r.last().unwrap().login, USER);
}

#[tokio::test]
async fn login_failure_is_18456() {
    let s = standin().await;
    let e = connect_with(config(&s, USER, "wrong", EncryptionLevel::NotSupported))
        .await
        .err()
        .unwrap();
    assert_eq!(e.code(), Some(18456), "{e:?}");
}

#[tokio::test]
async fn every_column_type_via_batch_and_rpc() {
    let s = standin().await;
    let mut c = connect(&s).await;
    for rpc in [false, true] {
        let stream = if rpc {
            c.query("-- standin:types", &[]).await.unwrap()
        } else {
            c.simple_query("-- standin:types").await.unwrap()
        };
        let rows = stream.into_first_result().await.unwrap();
        let r = &rows[0];
        assert_eq!(r.get::<i32, _>("i32"), Some(-7));
        assert_eq!(r.get::<i64, _>("i64"), Some(1 << 40));
        assert_eq!(r.get::<u8, _>("u8"), Some(200));
        assert_eq!(r.get::<i16, _>("i16"), Some(-3));
        assert_eq!(r.get::<bool, _>("bit"), Some(true));
        assert_eq!(r.get::<&str, _>("text"), Some("Grüße"));
        assert_eq!(r.get::<&str, _>("long_text").unwrap().len(), 5000);
        assert_eq!(
            r.get::<Uuid, _>("guid"),
            Some(Uuid::parse_str("6F9619FF-8B86-D011-B42D-00C04FC964FF").unwrap())
        );
        let dt = r.get::<NaiveDateTime, _>("dt").unwrap();
        assert_eq!(dt.to_string(), "2024-03-07 09:30:05.120");
        let dt2 = r.get::<NaiveDateTime, _>("dt2").unwrap();
        assert_eq!(dt2.to_string(), "2024-03-07 09:30:05.120");
        let dto = r.get::<DateTime<FixedOffset>, _>("dto").unwrap();
        assert_eq!(dto.to_rfc3339(), "2024-03-07T09:30:05+02:00");
        assert_eq!(r.get::<f64, _>("f"), Some(1.5));
        assert_eq!(r.columns()[2].column_type(), ColumnType::Int1);
        assert_eq!(r.columns()[8].column_type(), ColumnType::Datetimen);
        let nulls = &rows[1];
        assert_eq!(nulls.get::<i32, _>("i32"), None);
        assert_eq!(nulls.get::<&str, _>("long_text"), None);
        assert_eq!(nulls.get::<Uuid, _>("guid"), None);
    }
}

#[tokio::test]
async fn rpc_parameters_are_decoded() {
    let s = standin().await;
    let mut c = connect(&s).await;
    let uuid = Uuid::parse_str("00112233-4455-6677-8899-aabbccddeeff").unwrap();
    let naive = chrono::NaiveDate::from_ymd_opt(2024, 1, 2)
        .unwrap()
        .and_hms_opt(3, 4, 5)
        .unwrap();
    let long = "y".repeat(4001);
    let rows = c
        .query(
            "-- standin:echo",
            &[
                &1i32,
                &2i64,
                &true,
                &"abc",
                &String::from("x"),
                &uuid,
                &naive,
                &None::<&str>,
                &None::<i32>,
                &long.as_str(),
                &1.5f64,
                &7u8,
                &-3i16,
            ],
        )
        .await
        .unwrap()
        .into_first_result()
        .await
        .unwrap();
    let got: Vec<(String, String)> = rows
        .iter()
        .map(|r| {
            (
                r.get::<&str, _>(0).unwrap().to_string(),
                r.get::<&str, _>(1).unwrap().to_string(),
            )
        })
        .collect();
    let expected = [
        "Int(1)",
        "BigInt(2)",
        "Bit(true)",
        "Str(\"abc\")",
        "Str(\"x\")",
        "Guid(00112233-4455-6677-8899-aabbccddeeff)",
        "DateTime(2024-01-02T03:04:05)",
        "Null",
        "Null",
    ];
    for (i, e) in expected.iter().enumerate() {
        assert_eq!(got[i].0, format!("@P{}", i + 1));
        assert_eq!(&got[i].1, e);
    }
    assert_eq!(got[9].1.len(), "Str(\"\")".len() + 4001);
    assert_eq!(got[10].1, "Float(1.5)");
    assert_eq!(got[11].1, "TinyInt(7)");
    assert_eq!(got[12].1, "SmallInt(-3)");
    // Capture keeps the decoded parameters.
    let last = s.requests().pop().unwrap();
    assert_eq!(last.marker.as_deref(), Some("echo"));
    assert_eq!(last.params.len(), 13);
}

#[tokio::test]
async fn multiple_result_sets_with_info_between() {
    let s = standin().await;
    let mut c = connect(&s).await;
    let r = c
        .simple_query("-- standin:multi")
        .await
        .unwrap()
        .into_results()
        .await
        .unwrap();
    assert_eq!(r.iter().map(Vec::len).collect::<Vec<_>>(), [1, 0, 1]);
}

#[tokio::test]
async fn errors_surface_and_connection_stays_usable() {
    let s = standin().await;
    let mut c = connect(&s).await;
    let e = c.simple_query("-- standin:error").await.err().unwrap();
    let Error::Server(t) = e else { panic!("{e:?}") };
    assert_eq!((t.code(), t.class(), t.state()), (50000, 16, 3));
    assert_eq!((t.procedure(), t.line()), ("standin_probe", 7));
    assert_eq!(t.message(), "probe error");
    // Rows then error: into_results loses the rows, the row stream yields then fails.
    assert!(
        c.simple_query("-- standin:rows_then_error")
            .await
            .unwrap()
            .into_results()
            .await
            .is_err()
    );
    // Free-form SQL: a clear error, never a hang.
    let e = c
        .simple_query("SELECT name FROM sys.tables")
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains("unsupported batch"), "{e}");
    let r = c.execute("-- standin:rowcount", &[]).await.unwrap();
    assert_eq!(r.rows_affected(), &[3, 2]);
    assert!(c.execute("-- standin:error", &[]).await.is_err());
}

#[tokio::test]
async fn named_rpc_returns_status() {
    let s = standin().await;
    let mut c = connect(&s).await;
    let mut cmd = Command::new("msdb.dbo.sp_start_job");
    cmd.bind_param("@job_name", "Quick");
    let r = cmd
        .exec(&mut c)
        .await
        .unwrap()
        .into_command_result()
        .await
        .unwrap();
    assert_eq!(r.return_code(), 0);
    let mut cmd = Command::new("sp_standin_echo");
    cmd.bind_param("@a", "v");
    cmd.bind_out_param("@out", 41i32);
    let r = cmd
        .exec(&mut c)
        .await
        .unwrap()
        .into_command_result()
        .await
        .unwrap();
    assert_eq!(r.return_code(), 7);
    assert_eq!(r.try_return_value::<i32>("@out").unwrap(), Some(41));
    let mut cmd = Command::new("msdb.dbo.sp_start_job");
    cmd.bind_param("@job_name", "Nope");
    let e = cmd
        .exec(&mut c)
        .await
        .unwrap()
        .into_command_result()
        .await
        .err()
        .unwrap();
    assert_eq!(e.code(), Some(14262));
}

#[tokio::test]
async fn multi_packet_responses_and_small_packet_size() {
    let s = standin().await;
    for size in [4096u32, 512] {
        let mut cfg = config(&s, USER, PASSWORD, EncryptionLevel::NotSupported);
        cfg.packet_size(size);
        let mut c = connect_with(cfg).await.unwrap();
        let rows = c
            .simple_query("-- standin:many 3000")
            .await
            .unwrap()
            .into_first_result()
            .await
            .unwrap();
        assert_eq!(rows.len(), 3000);
        assert_eq!(rows[2999].get::<i32, _>(0), Some(2999));
        // A request tiberius splits at 512 bytes.
        let long = "z".repeat(3000);
        let rows = c
            .query("-- standin:echo", &[&long.as_str()])
            .await
            .unwrap()
            .into_first_result()
            .await
            .unwrap();
        assert_eq!(rows[0].get::<&str, _>(1).unwrap().len(), 3000 + 7);
    }
}

#[tokio::test]
async fn tls_on_the_7x_path_and_strict() {
    let s = standin().await;
    for enc in [
        EncryptionLevel::Required,
        EncryptionLevel::On,
        EncryptionLevel::Off,
        EncryptionLevel::Strict,
    ] {
        let mut cfg = config(&s, USER, PASSWORD, enc);
        cfg.trust_cert();
        let mut c = connect_with(cfg)
            .await
            .unwrap_or_else(|e| panic!("{enc:?}: {e}"));
        let rows = c
            .query("-- standin:many 1000", &[])
            .await
            .unwrap()
            .into_first_result()
            .await
            .unwrap();
        assert_eq!(rows.len(), 1000, "{enc:?}");
    }
    // Trusting the stand-in's certificate as a CA bundle, for both names.
    for host in ["localhost", "127.0.0.1"] {
        let mut cfg = config(&s, USER, PASSWORD, EncryptionLevel::Required);
        cfg.host(host);
        cfg.trust_cert_ca_bundle(s.cert_pem().unwrap().into_bytes());
        connect_with(cfg)
            .await
            .unwrap_or_else(|e| panic!("{host}: {e}"));
    }
    // No trust configuration: rejected.
    let cfg = config(&s, USER, PASSWORD, EncryptionLevel::Required);
    assert!(matches!(connect_with(cfg).await, Err(Error::Tls(_))));
}

#[tokio::test]
async fn plaintext_only_standin_refuses_required() {
    let s = standin_with(JOBS, TlsSetup::None).await;
    let mut cfg = config(&s, USER, PASSWORD, EncryptionLevel::Required);
    cfg.trust_cert();
    let e = connect_with(cfg).await.err().unwrap();
    assert!(matches!(e, Error::Protocol(_)), "{e:?}");
}

#[tokio::test]
async fn dropped_connection_mid_response() {
    let s = standin().await;
    let mut c = connect(&s).await;
    let r = c
        .simple_query("-- standin:drop_mid")
        .await
        .unwrap()
        .into_results()
        .await;
    assert!(matches!(r, Err(Error::Io { .. })), "{r:?}");
    assert!(c.simple_query("SELECT 1").await.is_err());
    // The drop knob closes idle connections too.
    let mut c = connect(&s).await;
    s.drop_connections();
    let r = c.simple_query("SELECT 1").await;
    assert!(r.is_err());
}

#[tokio::test]
async fn cancel_while_open_and_while_idle() {
    let s = standin().await;
    let mut c = connect(&s).await;
    {
        let mut stream = c
            .simple_query("-- standin:hold")
            .await
            .unwrap()
            .into_row_stream();
        use futures::TryStreamExt;
        let first = stream.try_next().await.unwrap().unwrap();
        assert_eq!(first.get::<i32, _>(0), Some(1));
    }
    c.cancel_query().await.unwrap();
    assert_eq!(
        c.simple_query("SELECT 1")
            .await
            .unwrap()
            .into_row()
            .await
            .unwrap()
            .unwrap()
            .get::<i32, _>(0),
        Some(1)
    );
    c.cancel_query().await.unwrap();
    assert!(c.simple_query("SELECT 1").await.is_ok());
}

#[tokio::test]
async fn command_timeout_on_a_stall() {
    let s = standin().await;
    let mut cfg = config(&s, USER, PASSWORD, EncryptionLevel::NotSupported);
    cfg.command_timeout(Some(Duration::from_millis(200)));
    let mut c = connect_with(cfg).await.unwrap();
    let r = c.simple_query("-- standin:sleep 2000").await;
    assert!(matches!(r, Err(Error::Io { .. })), "{r:?}");
}

#[tokio::test]
async fn ado_connection_string_and_fail_next() {
    let s = standin().await;
    let ado = format!(
        "server=tcp:127.0.0.1,{};user={USER};password={PASSWORD};database=msdb;encrypt=DANGER_PLAINTEXT",
        s.addr().port()
    );
    let mut c = connect_with(tiberius::Config::from_ado_string(&ado).unwrap())
        .await
        .unwrap();
    s.fail_next(2, FailMode::lock_timeout());
    for _ in 0..2 {
        let e = c
            .query("-- agentfleet:server_info", &[])
            .await
            .err()
            .unwrap();
        assert_eq!(e.code(), Some(1222));
    }
    assert!(c.query("-- agentfleet:server_info", &[]).await.is_ok());
}
