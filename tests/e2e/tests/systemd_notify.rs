//! The sidecar under a systemd unit of `Type=notify` (what `sidecar install` writes), with
//! the real binary and a fake service manager: a datagram socket named by `NOTIFY_SOCKET`.
//! `READY=1` comes once the gRPC server takes calls, `STOPPING=1` once shutdown begins.
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use agentfleet_e2e::{SidecarOptions, TestEnv};

/// How long the test waits for each notification (a deadline, not an expected time).
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(30);

fn next_message(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = socket
        .recv(&mut buf)
        .expect("a notification from the sidecar before the deadline");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn the_sidecar_tells_systemd_it_is_ready_then_stopping() {
    let env = TestEnv::new("systemd_notify");
    let socket_path = env.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(NOTIFY_TIMEOUT)).unwrap();
    let mut sidecar = env.start_sidecar(
        "s1",
        "[[job]]\nname = \"quick\"\n[[job.step]]\nname = \"work\"\nrun = [\"true\"]\n",
        SidecarOptions {
            env: vec![("NOTIFY_SOCKET".into(), socket_path.display().to_string())],
            ..SidecarOptions::default()
        },
    );

    let ready = next_message(&socket);
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    let status = format!("STATUS=serving on {}", sidecar.addr());
    assert!(ready.lines().any(|l| l == status), "{ready:?}");
    // Ready means it takes calls: the coordinator reaches it.
    let fleet = env.write_fleet(&[&sidecar]);
    let out = env.coordinator(["sidecars", "--fleet", fleet.to_str().unwrap()]);
    assert_eq!(out.code(), Some(0), "{out}");

    let status = sidecar.stop();
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let stopping = next_message(&socket);
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
}
