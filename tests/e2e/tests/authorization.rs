//! Who may drive a sidecar: the real `sidecar` and `coordinator pki` binaries on 127.0.0.1.
//! Every refused client tries to start a job that appends to a marker file, and each test
//! proves that nothing ran: the call failed, the sidecar lists no execution, and the
//! marker is absent (the allowed coordinator's runs show that the job does write it).
use std::path::{Path, PathBuf};
use std::time::Duration;

use agentfleet_common::proto::{DescribeRequest, ListExecutionsRequest, StartJobRequest};
use agentfleet_e2e::files::{toml_path, toml_str};
use agentfleet_e2e::grpc::{self, watch_to_end};
use agentfleet_e2e::pki::{CertPair, CraftedCert};
use agentfleet_e2e::{Pki, Sidecar, SidecarOptions, TestEnv};
use tonic::Code;

/// How long a job may take once watched, and a revocation to take effect.
const TIMEOUT: Duration = Duration::from_secs(30);
/// How often a condition is re-checked while waiting for it.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// One job, `mark`, that appends its execution id to `MARKERS/ran`.
fn marker_job(markers: &Path) -> String {
    std::fs::create_dir_all(markers).expect("create the markers dir");
    format!(
        "[[job]]\nname = \"mark\"\nenv = {{ MARKERS = {} }}\n[[job.step]]\nname = \"mark\"\nrun = [\"sh\", \"-c\", {}]\n",
        toml_path(markers),
        toml_str("echo \"$AGENTFLEET_EXECUTION_ID\" >> \"$MARKERS/ran\"")
    )
}

fn markers(env: &TestEnv) -> PathBuf {
    env.path().join("markers")
}

/// Lines in the marker file: how many times the job ran.
fn runs(env: &TestEnv) -> usize {
    std::fs::read_to_string(markers(env).join("ran"))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

fn start_request(id: &str) -> StartJobRequest {
    StartJobRequest {
        execution_id: id.into(),
        job: "mark".into(),
        run_id: "run".into(),
        task: "task".into(),
        attempt: 1,
        ..Default::default()
    }
}

fn start_sidecar(env: &TestEnv, options: SidecarOptions) -> Sidecar {
    env.start_sidecar("s1", &marker_job(&markers(env)), options)
}

/// `client` (or no certificate at all) tries StartJob and must be refused; returns the
/// refusal. Then proves that nothing ran, asking as `witness`.
async fn refused_and_nothing_ran(
    env: &TestEnv,
    sidecar: &Sidecar,
    client: Option<&CertPair>,
    witness: &CertPair,
    runs_before: usize,
) -> tonic::Status {
    let ca = env.pki().ca();
    let mut caller = match client {
        Some(pair) => grpc::client(sidecar, &ca, pair).await,
        None => grpc::anonymous_client(sidecar, &ca).await,
    };
    // A fresh canonical id (what the caller presented is in the status, not the id).
    let id = agentfleet_common::ids::new_execution_id();
    let status = caller
        .start_job(start_request(&id))
        .await
        .expect_err("a refused client started a job");
    let mut witness = grpc::client(sidecar, &ca, witness).await;
    let listed = witness
        .list_executions(ListExecutionsRequest {
            running_only: false,
        })
        .await
        .expect("the allowed coordinator can list executions")
        .into_inner();
    assert!(
        listed.executions.iter().all(|e| e.execution_id != id),
        "the refused StartJob created an execution: {listed:?}"
    );
    assert_eq!(runs(env), runs_before, "the job ran for a refused client");
    status
}

/// Asks `client`'s Describe (which starts nothing) until the sidecar refuses it with
/// PERMISSION_DENIED: the revocation has been read. Bounded by [`TIMEOUT`].
async fn until_refused(sidecar: &Sidecar, ca: &Path, client: &CertPair) -> tonic::Status {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let mut caller = grpc::client(sidecar, ca, client).await;
    loop {
        match caller.describe(DescribeRequest {}).await {
            Err(status) if status.code() == Code::PermissionDenied => return status,
            Err(status) => panic!("Describe failed otherwise than refused: {status:?}"),
            Ok(_) if tokio::time::Instant::now() >= deadline => {
                panic!("the sidecar still accepted the revoked certificate after {TIMEOUT:?}")
            }
            Ok(_) => tokio::time::sleep(POLL_INTERVAL).await,
        }
    }
}

/// The allowed coordinator runs the job to the end: the marker mechanism works.
async fn allowed_runs_the_job(env: &TestEnv, sidecar: &Sidecar, client: &CertPair, label: &str) {
    let id = &agentfleet_common::ids::execution_id_from_label(label);
    let before = runs(env);
    let mut allowed = grpc::client(sidecar, &env.pki().ca(), client).await;
    allowed
        .start_job(start_request(id))
        .await
        .expect("the allowed coordinator starts the job");
    let events = watch_to_end(&mut allowed, id, TIMEOUT).await;
    assert!(grpc::finished(&events).is_some(), "{events:?}");
    assert_eq!(runs(env), before + 1, "the job did not write its marker");
}

#[test]
fn a_client_without_a_certificate_is_refused() {
    let env = TestEnv::new("authz-anonymous");
    let sidecar = start_sidecar(&env, SidecarOptions::default());
    runtime().block_on(async {
        refused_and_nothing_ran(&env, &sidecar, None, env.coordinator_cert(), 0).await;
        allowed_runs_the_job(&env, &sidecar, env.coordinator_cert(), "allowed").await;
    });
}

#[test]
fn a_certificate_from_another_ca_is_refused() {
    let env = TestEnv::new("authz-foreign");
    let sidecar = start_sidecar(&env, SidecarOptions::default());
    // Same name and role as the allowed client, signed by a CA the sidecar does not trust.
    let foreign = Pki::init(&env.path().join("other-pki")).issue_coordinator("coordinator");
    runtime().block_on(async {
        refused_and_nothing_ran(&env, &sidecar, Some(&foreign), env.coordinator_cert(), 0).await;
    });
}

/// The reviewer's case: a sidecar certificate named `coordinator` used as the coordinator.
#[test]
fn a_sidecar_certificate_cannot_act_as_the_coordinator() {
    let env = TestEnv::new("authz-sidecar-role");
    let sidecar = start_sidecar(&env, SidecarOptions::default());

    // `pki issue` no longer hands out a name for both roles.
    let out = env
        .pki()
        .try_issue("coordinator", &["--sidecar", "--host", "127.0.0.1"]);
    assert_eq!(out.status.code(), Some(2), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("already issued as a coordinator"),
        "{}",
        out.stderr
    );

    // The same CA used from another directory (whose index knows nothing) still makes
    // such a certificate; the sidecar is what must refuse it.
    let copy = env.path().join("ca-copy");
    std::fs::create_dir_all(&copy).unwrap();
    for file in ["ca.pem", "ca.key"] {
        std::fs::copy(env.pki().dir().join(file), copy.join(file)).unwrap();
    }
    let copy = Pki::open(&copy);
    let issued = copy.issue_sidecar("coordinator");
    // A sidecar certificate that also allows clientAuth, as they used to, gets through
    // the handshake: its role URI alone refuses it.
    let with_client_auth = env.pki().craft(
        "sidecar-as-client",
        &CraftedCert::sidecar_with_client_auth("coordinator"),
    );
    // A coordinator certificate from before role URIs: refused, with how to re-issue it.
    let legacy = env
        .pki()
        .craft("legacy", &CraftedCert::legacy_coordinator("coordinator"));

    runtime().block_on(async {
        let witness = env.coordinator_cert();
        refused_and_nothing_ran(&env, &sidecar, Some(&issued), witness, 0).await;
        let status =
            refused_and_nothing_ran(&env, &sidecar, Some(&with_client_auth), witness, 0).await;
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert!(
            status.message().contains("is not a coordinator's"),
            "{status:?}"
        );
        let status = refused_and_nothing_ran(&env, &sidecar, Some(&legacy), witness, 0).await;
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert!(
            status
                .message()
                .contains("coordinator pki issue DIR coordinator --coordinator"),
            "{status:?}"
        );
    });

    // Through the coordinator itself: nothing starts, the fleet is unreachable (exit 3).
    let fleet = env.write_fleet_as("fleet-sidecar-cert.toml", &issued, &[&sidecar]);
    let plan = env.write_file(
        "plan.toml",
        "[plan]\nname = \"p\"\n[[task]]\nname = \"t\"\njob = \"mark\"\n",
    );
    let out = env.run_plan(&plan, &fleet);
    assert_eq!(out.code(), Some(3), "{out}");
    assert_eq!(runs(&env), 0, "the plan ran with a sidecar's certificate");
}

#[test]
fn a_name_not_in_allow_clients_is_refused() {
    let env = TestEnv::new("authz-allow");
    let sidecar = start_sidecar(&env, SidecarOptions::default());
    let intruder = env.pki().issue_coordinator("intruder");
    runtime().block_on(async {
        let status =
            refused_and_nothing_ran(&env, &sidecar, Some(&intruder), env.coordinator_cert(), 0)
                .await;
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert!(status.message().contains("allow_clients"), "{status:?}");
    });
}

/// Revoked after the sidecar started: refused without a restart, then the rotated
/// certificate of the same name works.
#[test]
fn a_certificate_revoked_while_the_sidecar_runs_is_refused() {
    let env = TestEnv::new("authz-revoked");
    let options = SidecarOptions {
        tls_toml: format!("crl = {}\n", toml_path(&env.pki().crl())),
        ..SidecarOptions::default()
    };
    let mut sidecar = start_sidecar(&env, options);
    let old = env.path().join("old-coordinator");
    std::fs::create_dir_all(&old).unwrap();
    let stolen = CertPair {
        cert: old.join("coordinator.pem"),
        key: old.join("coordinator.key"),
    };
    std::fs::copy(&env.coordinator_cert().cert, &stolen.cert).unwrap();
    std::fs::copy(&env.coordinator_cert().key, &stolen.key).unwrap();
    let serial = env.pki().serial(&stolen.cert);

    let rt = runtime();
    rt.block_on(allowed_runs_the_job(&env, &sidecar, &stolen, "before"));

    // Rotate: revoke the old certificate, issue a new one under the same name.
    env.pki().revoke("coordinator");
    let rotated = env.pki().issue_coordinator("coordinator");
    assert_ne!(env.pki().serial(&rotated.cert), serial);

    rt.block_on(async {
        let refusal = until_refused(&sidecar, &env.pki().ca(), &stolen).await;
        assert!(
            refusal
                .message()
                .contains(&format!("(serial {serial}) is revoked")),
            "{refusal:?}"
        );
        refused_and_nothing_ran(&env, &sidecar, Some(&stolen), &rotated, 1).await;
        allowed_runs_the_job(&env, &sidecar, &rotated, "rotated").await;
    });

    // The coordinator with the revoked certificate: unreachable, told why, and not sent
    // to allow_clients.
    let fleet = env.write_fleet_as("fleet-revoked.toml", &stolen, &[&sidecar]);
    let out = env.coordinator(["sidecars".as_ref(), "--fleet".as_ref(), fleet.as_os_str()]);
    assert_eq!(out.code(), Some(3), "{out}");
    let said = format!("{}{}", out.stdout, out.stderr);
    assert!(
        said.contains("is revoked") && !said.contains("allow_clients"),
        "{out}"
    );

    // Still refused after a restart (the CRL is read at start too).
    sidecar.restart();
    rt.block_on(async {
        refused_and_nothing_ran(&env, &sidecar, Some(&stolen), &rotated, 2).await;
    });
}

#[test]
fn an_expired_certificate_is_refused() {
    let env = TestEnv::new("authz-expired");
    let sidecar = start_sidecar(&env, SidecarOptions::default());
    let expired = env
        .pki()
        .craft("expired", &CraftedCert::expired_coordinator("coordinator"));
    runtime().block_on(async {
        refused_and_nothing_ran(&env, &sidecar, Some(&expired), env.coordinator_cert(), 0).await;
        // The same name with a current certificate is fine: only the date differs.
        let mut allowed = grpc::client(&sidecar, &env.pki().ca(), env.coordinator_cert()).await;
        allowed
            .describe(DescribeRequest {})
            .await
            .expect("the current certificate is accepted");
    });
}
