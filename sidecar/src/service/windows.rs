//! Windows: `sidecar install` registers a Windows service (started automatically at boot)
//! that runs `sidecar service-run --config FILE --log-file FILE`; `service-run` hands the
//! thread to the service dispatcher, whose service main runs the same serve path as
//! `sidecar serve`. The control handler turns Stop and Shutdown into a shutdown request on
//! the root cancellation token, as SIGTERM does on Linux. Built on the safe
//! `windows-service` API; runs in CI under Wine's service manager (`tests/e2e/tests/windows.rs`).
use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use agentfleet_common::shutdown::{self, ShutdownRequests};
use agentfleet_common::telemetry;
use windows_service::service::{
    ServiceAccess, ServiceAction, ServiceActionType, ServiceControl, ServiceControlAccept,
    ServiceErrorControl, ServiceExitCode, ServiceFailureActions, ServiceFailureResetPeriod,
    ServiceInfo, ServiceStartType, ServiceState, ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::{
    self, ServiceControlHandlerResult, ServiceStatusHandle,
};
use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};
use windows_service::{define_windows_service, service_dispatcher};

use super::ServiceError;
use super::windows_spec::{
    DESCRIPTION, DISPLAY_NAME, EXIT_BAD_CONFIG, EXIT_FAILED, FAILURE_RESET, LOG_ROTATE_BYTES,
    Launch, RESTART_DELAYS, SERVICE_NAME, WindowsService,
};
use crate::{config, server};

/// `ERROR_ACCESS_DENIED`.
const ACCESS_DENIED: i32 = 5;
/// `ERROR_SERVICE_DOES_NOT_EXIST`.
const SERVICE_DOES_NOT_EXIST: i32 = 1060;
/// `ERROR_SERVICE_NOT_ACTIVE`: asked to stop a service that is not running.
const SERVICE_NOT_ACTIVE: i32 = 1062;
/// `ERROR_INVALID_LEVEL`: the service manager does not know a setting (Wine's lacks
/// delayed start).
const INVALID_LEVEL: i32 = 124;
/// How often `uninstall` looks whether the service has stopped.
const STOP_POLL: Duration = Duration::from_millis(250);
/// The wait hint while starting: loading the config and binding the port.
const START_WAIT_HINT: Duration = Duration::from_secs(10);

/// `windows_service::Error` into a `ServiceError` that says what failed and what to do.
fn scm(action: impl Into<String>) -> impl FnOnce(windows_service::Error) -> ServiceError {
    let action = action.into();
    move |error| {
        let detail = match &error {
            windows_service::Error::Winapi(e) if e.raw_os_error() == Some(ACCESS_DENIED) => {
                format!("{e}; run from an elevated (Run as administrator) prompt, or use --dry-run")
            }
            windows_service::Error::Winapi(e) => e.to_string(),
            other => other.to_string(),
        };
        ServiceError::Windows { action, detail }
    }
}

fn os_error(error: &windows_service::Error) -> Option<i32> {
    match error {
        windows_service::Error::Winapi(e) => e.raw_os_error(),
        _ => None,
    }
}

/// Creates (or updates) the service, sets its restarts, starts it; returns what it did.
pub fn install(
    exe: &Path,
    config: &Path,
    state_dir: &Path,
    stop_grace: Duration,
    dry_run: bool,
) -> Result<Vec<String>, ServiceError> {
    // `absolute`, not `canonicalize`: the latter gives `\\?\C:\...`, which people do not
    // expect to read in the Services console. The service starts in System32, so the
    // path must not be relative.
    let config = std::path::absolute(config).map_err(super::io("find", config))?;
    std::fs::metadata(&config).map_err(super::io("find", &config))?;
    let state_dir = std::path::absolute(state_dir).map_err(super::io("find", state_dir))?;
    let spec = WindowsService::new(exe, &config, &state_dir, stop_grace);
    if dry_run {
        let mut lines =
            vec!["would register and start this Windows service (nothing was changed):".to_owned()];
        lines.extend(spec.describe().into_iter().map(|l| format!("  {l}")));
        return Ok(lines);
    }

    let manager = ServiceManager::local_computer(
        None::<&str>,
        ServiceManagerAccess::CONNECT | ServiceManagerAccess::CREATE_SERVICE,
    )
    .map_err(scm("open the Windows service control manager"))?;
    let info = ServiceInfo {
        name: SERVICE_NAME.into(),
        display_name: DISPLAY_NAME.into(),
        service_type: ServiceType::OWN_PROCESS,
        start_type: ServiceStartType::AutoStart,
        error_control: ServiceErrorControl::Normal,
        executable_path: spec.exe.clone(),
        launch_arguments: spec.args.clone(),
        dependencies: vec![],
        // LocalSystem: can write the state directory and, with auth = "windows", reaches a
        // local SQL Server as the machine account. Change it with `sc.exe config`.
        account_name: None,
        account_password: None,
    };
    let access = ServiceAccess::QUERY_STATUS | ServiceAccess::START | ServiceAccess::CHANGE_CONFIG;
    let mut done = Vec::new();
    let service = match manager.open_service(SERVICE_NAME, access) {
        Ok(service) => {
            service
                .change_config(&info)
                .map_err(scm(format!("update the Windows service {SERVICE_NAME}")))?;
            done.push(format!(
                "updated the existing Windows service {SERVICE_NAME}"
            ));
            service
        }
        Err(e) if os_error(&e) == Some(SERVICE_DOES_NOT_EXIST) => {
            let service = manager
                .create_service(&info, access)
                .map_err(scm(format!("create the Windows service {SERVICE_NAME}")))?;
            done.push(format!("created the Windows service {SERVICE_NAME}"));
            service
        }
        Err(e) => return Err(scm(format!("open the Windows service {SERVICE_NAME}"))(e)),
    };
    let configure = || scm(format!("configure the Windows service {SERVICE_NAME}"));
    service.set_description(DESCRIPTION).map_err(configure())?;
    // Delayed: after the services that start at once (SQL Server, the network stack).
    let delayed = service.set_delayed_auto_start(true);
    unless_unknown(delayed, "delayed start", &mut done).map_err(configure())?;
    service
        .update_failure_actions(ServiceFailureActions {
            reset_period: ServiceFailureResetPeriod::After(FAILURE_RESET),
            reboot_msg: None,
            command: None,
            actions: Some(
                RESTART_DELAYS
                    .iter()
                    .map(|&delay| ServiceAction {
                        action_type: ServiceActionType::Restart,
                        delay,
                    })
                    .collect(),
            ),
        })
        .map_err(configure())?;
    // Restart also when the sidecar stops with an error it reported (not only on crashes),
    // as systemd's Restart=on-failure does.
    let on_errors = service.set_failure_actions_on_non_crash_failures(true);
    unless_unknown(on_errors, "restarts after reported errors", &mut done).map_err(configure())?;
    done.extend(spec.describe().into_iter().map(|l| format!("  {l}")));

    let state = service
        .query_status()
        .map_err(scm(format!("query the Windows service {SERVICE_NAME}")))?
        .current_state;
    if state == ServiceState::Stopped {
        service
            .start(&[] as &[&OsStr])
            .map_err(scm(format!("start the Windows service {SERVICE_NAME}")))?;
        done.push(format!("started {SERVICE_NAME}"));
    } else {
        done.push(format!(
            "{SERVICE_NAME} is already running: restart it to apply the new settings \
             (sc.exe stop {SERVICE_NAME}, then sc.exe start {SERVICE_NAME})"
        ));
    }
    done.push(format!(
        "check it with: sc.exe query {SERVICE_NAME}; logs: {}",
        spec.log_file.display()
    ));
    Ok(done)
}

/// A setting Windows has had since Vista, which another service manager (Wine's) may not
/// know (`ERROR_INVALID_LEVEL`): without it the service still works, so say so and go on.
fn unless_unknown(
    result: windows_service::Result<()>,
    setting: &str,
    done: &mut Vec<String>,
) -> windows_service::Result<()> {
    match result {
        Err(windows_service::Error::Winapi(e)) if e.raw_os_error() == Some(INVALID_LEVEL) => {
            done.push(format!(
                "note: this service manager does not support {setting} ({e}); left out"
            ));
            Ok(())
        }
        other => other,
    }
}

/// Stops the service (waiting for it, bounded) and deletes it; returns what it did.
pub fn uninstall(dry_run: bool) -> Result<Vec<String>, ServiceError> {
    if dry_run {
        return Ok(vec![
            format!("would stop the Windows service {SERVICE_NAME} if it runs"),
            format!("would delete the Windows service {SERVICE_NAME}"),
        ]);
    }
    let manager = ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT)
        .map_err(scm("open the Windows service control manager"))?;
    let access = ServiceAccess::QUERY_STATUS | ServiceAccess::STOP | ServiceAccess::DELETE;
    let service = match manager.open_service(SERVICE_NAME, access) {
        Ok(service) => service,
        Err(e) if os_error(&e) == Some(SERVICE_DOES_NOT_EXIST) => {
            return Ok(vec![format!(
                "the Windows service {SERVICE_NAME} is not installed; nothing to do"
            )]);
        }
        Err(e) => return Err(scm(format!("open the Windows service {SERVICE_NAME}"))(e)),
    };
    let mut done = Vec::new();
    let query = || scm(format!("query the Windows service {SERVICE_NAME}"));
    let status = service.query_status().map_err(query())?;
    if status.current_state != ServiceState::Stopped {
        match service.stop() {
            Ok(_) => {}
            Err(e) if os_error(&e) == Some(SERVICE_NOT_ACTIVE) => {}
            Err(e) => return Err(scm(format!("stop the Windows service {SERVICE_NAME}"))(e)),
        }
        // The service reports how long its stop may take; wait that long, and at least a
        // minute (it waits for running work up to its stop grace).
        let limit = status.wait_hint.max(Duration::from_secs(60));
        let deadline = Instant::now() + limit;
        loop {
            let state = service.query_status().map_err(query())?.current_state;
            if state == ServiceState::Stopped {
                done.push(format!("stopped the Windows service {SERVICE_NAME}"));
                break;
            }
            if Instant::now() >= deadline {
                done.push(format!(
                    "{SERVICE_NAME} did not stop within {}; it is deleted once it stops",
                    humantime::format_duration(limit)
                ));
                break;
            }
            std::thread::sleep(STOP_POLL);
        }
    }
    service
        .delete()
        .map_err(scm(format!("delete the Windows service {SERVICE_NAME}")))?;
    done.push(format!("deleted the Windows service {SERVICE_NAME}"));
    Ok(done)
}

/// What `service-run` was started with, for the service main (a plain `fn` the dispatcher
/// calls on a thread of its own).
static LAUNCH: OnceLock<Launch> = OnceLock::new();

// The `extern "system"` entry the dispatcher calls. The one `unsafe` it needs (reading the
// argument vector the service control manager passes) is inside `windows-service`'s macro.
define_windows_service!(ffi_service_main, service_main);

/// `sidecar service-run`: connects to the service control manager and runs the service
/// until it is stopped. Returns the process's exit code.
pub fn run(launch: Launch) -> u8 {
    let _ = LAUNCH.set(launch);
    match service_dispatcher::start(SERVICE_NAME, ffi_service_main) {
        Ok(()) => 0,
        Err(e) => {
            let detail = match &e {
                windows_service::Error::Winapi(io) => io.to_string(),
                other => other.to_string(),
            };
            eprintln!(
                "sidecar: could not connect to the Windows service control manager ({detail}); \
                 `service-run` is what the service starts: to run in the foreground use \
                 `sidecar serve --config FILE`"
            );
            2
        }
    }
}

fn service_main(_arguments: Vec<OsString>) {
    let launch = LAUNCH.get().cloned().unwrap_or_default();
    init_logs(&launch);
    if let Err(e) = run_service(launch) {
        tracing::error!(error = %e, "the Windows service failed");
    }
}

/// Logs to the launch's log file (a service has no stderr), rotated once at start.
fn init_logs(launch: &Launch) {
    let format = config::log_format(&launch.flags, &env).unwrap_or_default();
    let opened = launch
        .log_file
        .as_deref()
        .map(|path| (path, open_log(path)));
    match opened {
        Some((_, Ok(file))) => telemetry::init_to_file("info", format, file),
        Some((path, Err(e))) => {
            telemetry::init("info", format);
            tracing::error!(path = %path.display(), error = %e, "failed to open the service's log file");
        }
        None => telemetry::init("info", format),
    }
}

fn open_log(path: &Path) -> std::io::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if std::fs::metadata(path).is_ok_and(|m| m.len() > LOG_ROTATE_BYTES) {
        let mut old = path.as_os_str().to_owned();
        old.push(".old");
        std::fs::rename(path, old)?;
    }
    OpenOptions::new().create(true).append(true).open(path)
}

fn run_service(launch: Launch) -> Result<(), windows_service::Error> {
    let (requester, requests) = shutdown::requests();
    let handler = move |control| match control {
        ServiceControl::Stop => {
            requester.request("service stop");
            ServiceControlHandlerResult::NoError
        }
        ServiceControl::Shutdown => {
            requester.request("system shutdown");
            ServiceControlHandlerResult::NoError
        }
        ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
        _ => ServiceControlHandlerResult::NotImplemented,
    };
    let status = service_control_handler::register(SERVICE_NAME, handler)?;
    report(
        &status,
        ServiceState::StartPending,
        ServiceControlAccept::empty(),
        START_WAIT_HINT,
        ServiceExitCode::Win32(0),
    );
    let exit_code = serve(&launch, requests, status);
    report(
        &status,
        ServiceState::Stopped,
        ServiceControlAccept::empty(),
        Duration::ZERO,
        exit_code,
    );
    Ok(())
}

/// Loads the config and runs the server until the root token is cancelled (the control
/// manager's Stop or Shutdown); the service's exit code.
fn serve(
    launch: &Launch,
    requests: ShutdownRequests,
    status: ServiceStatusHandle,
) -> ServiceExitCode {
    let cfg = match config::load(&launch.flags, &env) {
        Ok(cfg) => cfg,
        Err(e) => {
            tracing::error!(error = %e, "the sidecar's config cannot be loaded");
            return ServiceExitCode::ServiceSpecific(EXIT_BAD_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "failed to start the async runtime");
            return ServiceExitCode::ServiceSpecific(EXIT_FAILED);
        }
    };
    let stop_hint = super::windows_spec::stop_timeout(cfg.stop_grace);
    let result = runtime.block_on(async {
        let token = shutdown::install_for_service(requests);
        report(
            &status,
            ServiceState::Running,
            ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN,
            Duration::ZERO,
            ServiceExitCode::Win32(0),
        );
        // Once shutting down, say so (and accept no further controls) with how long the
        // stop may take, so that the service control manager waits for the drain.
        let stopping = token.clone();
        tokio::spawn(async move {
            stopping.cancelled().await;
            report(
                &status,
                ServiceState::StopPending,
                ServiceControlAccept::empty(),
                stop_hint,
                ServiceExitCode::Win32(0),
            );
        });
        server::run(cfg, token).await
    });
    // Bounded: a blocking task stuck in a call must not keep the service from stopping.
    runtime.shutdown_timeout(Duration::from_secs(5));
    match result {
        Ok(()) => {
            tracing::info!("the Windows service stopped");
            ServiceExitCode::Win32(0)
        }
        Err(e) => {
            tracing::error!(error = %e, "the sidecar failed");
            ServiceExitCode::ServiceSpecific(EXIT_FAILED)
        }
    }
}

fn report(
    status: &ServiceStatusHandle,
    state: ServiceState,
    controls_accepted: ServiceControlAccept,
    wait_hint: Duration,
    exit_code: ServiceExitCode,
) {
    let pending = matches!(
        state,
        ServiceState::StartPending | ServiceState::StopPending
    );
    let result = status.set_service_status(ServiceStatus {
        service_type: ServiceType::OWN_PROCESS,
        current_state: state,
        controls_accepted,
        exit_code,
        checkpoint: u32::from(pending),
        wait_hint,
        process_id: None,
    });
    if let Err(e) = result {
        tracing::warn!(?state, error = %e, "failed to report the service's status");
    }
}

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok()
}
