//! A sidecar that is boring to attack, with the real binaries on 127.0.0.1: a flood of
//! TCP connections that never start TLS neither stays open nor keeps the coordinator out.
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use agentfleet_e2e::{SidecarOptions, TestEnv};
use socket2::{Domain, Socket, Type};

/// Idle connections opened by the "attacker" (from 127.0.0.2, another peer than the
/// coordinator's 127.0.0.1).
const FLOOD: usize = 300;
/// The sidecar's TLS handshake timeout is 10 s; idle connections must be gone by then,
/// with room for a slow machine.
const CLOSE_BOUND: Duration = Duration::from_secs(30);

fn connect_from(from: [u8; 4], to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.bind(&SocketAddr::from((from, 0)).into())?;
    socket.connect_timeout(&to.into(), Duration::from_secs(5))?;
    Ok(socket.into())
}

#[test]
fn idle_connections_are_closed_and_do_not_keep_the_coordinator_out() {
    let env = TestEnv::new("idle_connection_flood");
    let sidecar = env.start_sidecar(
        "s1",
        "[[job]]\nname = \"quick\"\n[[job.step]]\nname = \"work\"\nrun = [\"sh\", \"-c\", \"echo done\"]\n",
        SidecarOptions::default(),
    );
    // Connections the kernel accepted, past the sidecar's per-address cap, may be closed
    // at once; the rest wait for their ClientHello. Neither must hold the sidecar.
    let mut idle: Vec<TcpStream> = (0..FLOOD)
        .filter_map(|_| connect_from([127, 0, 0, 2], sidecar.addr()).ok())
        .collect();
    assert!(!idle.is_empty(), "no connection of the flood was made");

    let plan = env.write_file(
        "plan.toml",
        "[plan]\nname = \"flood\"\n\n[[task]]\nname = \"quick\"\njob = \"quick\"\n",
    );
    let fleet = env.write_fleet(&[&sidecar]);
    let out = env.run_plan(&plan, &fleet);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);

    // Every idle connection is closed by the sidecar (EOF or reset) within the bound.
    let began = Instant::now();
    for (i, conn) in idle.iter_mut().enumerate() {
        let left = CLOSE_BOUND
            .saturating_sub(began.elapsed())
            .max(Duration::from_millis(1));
        conn.set_read_timeout(Some(left)).unwrap();
        let mut buf = [0u8; 16];
        match conn.read(&mut buf) {
            Ok(0) => {}
            Err(e)
                if !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            other => panic!(
                "idle connection {i} of {} still open after {:?}: {other:?}",
                FLOOD,
                began.elapsed()
            ),
        }
    }
}

/// A job's output cannot drive the operator's terminal: `--show-logs` shows its control
/// characters as escapes; the store keeps the raw line (`logs` into a pipe, `--json`).
#[test]
fn job_output_cannot_drive_the_operators_terminal() {
    let env = TestEnv::new("terminal_escapes");
    // printf's octal escapes: ESC ] 0 ; pwned BEL (retitle the terminal), then ESC [ 2 J.
    let sidecar = env.start_sidecar(
        "s1",
        "[[job]]\nname = \"retitle\"\n[[job.step]]\nname = \"work\"\nrun = [\"sh\", \"-c\", \"printf '\\\\033]0;pwned\\\\007 and \\\\033[2J done\\\\n'\"]\n",
        SidecarOptions::default(),
    );
    let plan = env.write_file(
        "plan.toml",
        "[plan]\nname = \"escapes\"\n\n[[task]]\nname = \"retitle\"\njob = \"retitle\"\n",
    );
    let fleet = env.write_fleet(&[&sidecar]);
    let out = env.coordinator([
        "run",
        plan.to_str().unwrap(),
        "--fleet",
        fleet.to_str().unwrap(),
        "--show-logs",
    ]);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    let shown = format!("{}{}", out.stdout, out.stderr);
    assert!(
        shown.contains("\\x1b]0;pwned\\x07 and \\x1b[2J done"),
        "the line is not shown escaped:\n{shown}"
    );
    assert!(
        !shown.contains('\x1b'),
        "a raw ESC reached the terminal:\n{shown:?}"
    );
    assert!(
        !shown.contains('\x07'),
        "a raw BEL reached the terminal:\n{shown:?}"
    );

    let stored = env.coordinator(["logs", "last"]);
    assert!(
        stored.stdout.contains("\x1b]0;pwned\x07 and \x1b[2J done"),
        "the store must keep the raw line: {:?}",
        stored.stdout
    );
}

/// A parameter value that does not match its declared type is refused before anything
/// starts (the reviewer's `2026-11-24 & whoami` would reach a `.cmd` step's `%VAR%`).
#[test]
fn a_parameter_value_outside_its_rule_is_refused_and_nothing_runs() {
    let env = TestEnv::new("parameter_rules");
    let marker = env.path().join("ran");
    let sidecar = env.start_sidecar(
        "s1",
        &format!(
            "[[job]]\nname = \"load\"\nparams = {{ BUSINESS_DATE = \"date\", REGION = \"^[A-Z]{{2}}$\" }}\n[[job.step]]\nname = \"work\"\nrun = [\"sh\", \"-c\", \"touch {}\"]\n",
            marker.display()
        ),
        SidecarOptions::default(),
    );
    let fleet = env.write_fleet(&[&sidecar]);
    let plan = |date: &str| {
        env.write_file(
            "plan.toml",
            &format!(
                "[plan]\nname = \"params\"\n\n[[task]]\nname = \"load\"\njob = \"load\"\nparams = {{ BUSINESS_DATE = {}, REGION = \"EU\" }}\n",
                agentfleet_e2e::toml_str(date)
            ),
        )
    };
    let out = env.run_plan(&plan("2026-11-24 & whoami"), &fleet);
    assert_eq!(out.code(), Some(1), "{}{}", out.stdout, out.stderr);
    let said = format!("{}{}", out.stdout, out.stderr);
    assert!(
        said.contains(
            "parameter `BUSINESS_DATE` of job `load` is refused: it is not a date (YYYY-MM-DD)"
        ),
        "{said}"
    );
    assert!(!marker.exists(), "the job ran with a refused parameter");

    let out = env.run_plan(&plan("2026-11-24"), &fleet);
    assert_eq!(out.code(), Some(0), "{}{}", out.stdout, out.stderr);
    assert!(
        marker.exists(),
        "the job did not run with a valid parameter"
    );
}

/// A secret in the sidecar's environment (as `password_env` invites) never reaches a job,
/// and so never the central log; what programs need, and what the job asks for, does.
#[test]
fn the_sidecars_secrets_never_reach_a_job() {
    let env = TestEnv::new("secrets_in_env");
    let options = SidecarOptions {
        env: vec![
            ("SQL_PASSWORD".into(), "hunter2-secret".into()),
            ("AGENTFLEET_SQL_PASSWORD".into(), "hunter3-secret".into()),
            ("KEEP_ME".into(), "kept".into()),
        ],
        ..SidecarOptions::default()
    };
    let sidecar = env.start_sidecar(
        "s1",
        "[[job]]\nname = \"env\"\ninherit_env = [\"KEEP_*\"]\n[[job.step]]\nname = \"print\"\nrun = [\"env\"]\n",
        options,
    );
    let plan = env.write_file(
        "plan.toml",
        "[plan]\nname = \"env\"\n\n[[task]]\nname = \"env\"\njob = \"env\"\n",
    );
    let fleet = env.write_fleet(&[&sidecar]);
    let out = env.run_plan(&plan, &fleet);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    let logs = env.coordinator(["logs", "last"]).stdout;
    assert!(logs.contains("KEEP_ME=kept"), "{logs}");
    assert!(logs.contains("PATH="), "{logs}");
    assert!(logs.contains("AGENTFLEET_EXECUTION_ID="), "{logs}");
    assert!(
        !logs.contains("secret"),
        "a secret reached the job:\n{logs}"
    );
}

/// Job output at rest is private to the service account: the sidecar's state_dir is 0700
/// and the coordinator's store 0600 (its write-ahead log too).
#[test]
fn job_output_at_rest_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| {
        std::fs::metadata(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions()
            .mode()
            & 0o777
    };
    let env = TestEnv::new("private_at_rest");
    let sidecar = env.start_sidecar(
        "s1",
        "[[job]]\nname = \"quick\"\n[[job.step]]\nname = \"work\"\nrun = [\"sh\", \"-c\", \"echo private\"]\n",
        SidecarOptions::default(),
    );
    let plan = env.write_file(
        "plan.toml",
        "[plan]\nname = \"private\"\n\n[[task]]\nname = \"quick\"\njob = \"quick\"\n",
    );
    let fleet = env.write_fleet(&[&sidecar]);
    let out = env.run_plan(&plan, &fleet);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert_eq!(mode(sidecar.state_dir()), 0o700);
    let db = env.path().join("home").join("agentfleet.db");
    assert_eq!(mode(&db), 0o600);
    let wal = env.path().join("home").join("agentfleet.db-wal");
    if wal.exists() {
        assert_eq!(mode(&wal), 0o600);
    }
}
