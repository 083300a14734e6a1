//! A sidecar whose disk is full ends the execution instead of hanging: its state_dir is
//! a 1 MiB tmpfs, the job prints ~20 MB. The journal cannot take the output, the job is
//! stopped, and the run ends FAILED with "journal write failed" well before the task's
//! own timeout would stop it. Needs root (for `mount`); skipped, saying so, without it.
#![cfg(target_os = "linux")]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use agentfleet_e2e::{SidecarOptions, TestEnv};

/// The task's timeout: the journal failure must end the run before it.
const TASK_TIMEOUT: &str = "20s";
/// How long the whole run may take (the writer gives up after 10 s of failed appends).
const RUN_BOUND: Duration = Duration::from_secs(60);

/// ~20 MB of 100-byte lines, as fast as `sh` prints them.
const FLOOD_JOB: &str = r#"
[[job]]
name = "flood"
[[job.step]]
name = "print"
run = ["sh", "-c", "i=0; while [ $i -lt 200000 ]; do echo \"line-$i-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"; i=$((i+1)); done"]
"#;

/// A tmpfs mounted on a directory; unmounted when dropped (also when the test fails).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Self, String> {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("could not run `mount`: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        Ok(Self(dir.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily: a supervisor or sidecar still holding a file there must not keep the
        // mount (and the test's tempdir) around.
        let unmounted = Command::new("umount")
            .arg("--lazy")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            eprintln!(
                "warning: could not unmount the tmpfs on {}",
                self.0.display()
            );
        }
    }
}

#[test]
fn a_full_disk_ends_the_execution_instead_of_hanging_it() {
    let env = TestEnv::new("full-disk");
    // Where `start_sidecar` puts the sidecar's state_dir: mounted before it starts.
    let state_dir = env.path().join("sidecars").join("s1").join("state");
    std::fs::create_dir_all(&state_dir).expect("create the state_dir");
    let _tmpfs = match Tmpfs::mount(&state_dir, "1m") {
        Ok(t) => t,
        Err(why) => {
            eprintln!("skipped: cannot mount tmpfs ({why})");
            return;
        }
    };
    let mut sidecar = env.start_sidecar("s1", FLOOD_JOB, SidecarOptions::default());
    assert_eq!(sidecar.state_dir(), state_dir);
    let fleet = env.write_fleet(&[&sidecar]);
    let plan = env.write_file(
        "plan.toml",
        &format!(
            "[plan]\nname = \"full-disk\"\n[[task]]\nname = \"flood\"\njob = \"flood\"\ntimeout = \"{TASK_TIMEOUT}\"\n"
        ),
    );

    let t0 = Instant::now();
    let out = env.run_plan(&plan, &fleet);
    let took = t0.elapsed();
    assert_ne!(out.code(), Some(0), "the run fails:\n{out}");
    assert!(took < RUN_BOUND, "the run took {took:?}:\n{out}");
    let finished = out.events().final_task_finished("flood").clone();
    assert_eq!(finished["status"], "failed", "{out}");
    let message = finished["message"].as_str().unwrap_or_default();
    eprintln!("the run ended in {took:?}: {message}");
    assert!(
        message.contains("journal write failed"),
        "the reason is the journal: {message}\n{out}"
    );
    // The central store says so too.
    let show = env.coordinator(["show", "last", "--json"]);
    assert!(show.stdout.contains("journal write failed"), "{show}");
    sidecar.stop();
}
