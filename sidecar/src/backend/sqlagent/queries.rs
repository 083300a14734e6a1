//! Every T-SQL text the SQL Server Agent backend sends, in one place.
//!
//! Conventions (stable; a TDS stand-in dispatches on them):
//!
//! * Each text starts with a marker line `-- agentfleet:<name>` (the first line, exactly).
//! * Texts are sent with `Client::query`, i.e. as an RPC to `sp_executesql` with typed
//!   parameters `@P1`, `@P2`, … (tiberius names them so). No value is ever spliced into text.
//! * The connection logs in with database `msdb`, but every object is still fully qualified.
//! * Integer-typed columns that are `tinyint`/`smallint` in msdb are `CAST(... AS int)` so every
//!   integer column below is `int` unless stated otherwise; `SERVERPROPERTY` and
//!   `sys.configurations.value_in_use` (sql_variant) are cast as documented.
//! * Errors a batch can raise are either caught in T-SQL and returned as columns
//!   (`err_number`, `err_message`) or arrive as a TDS ERROR token (tiberius `Error::Server`);
//!   the backend maps both the same way. Errors raised by msdb's T-SQL (14262, 14393, …) are
//!   caught, but errors raised *inside an extended procedure* — 22022 from
//!   `xp_sqlagent_notify` ("not currently running", "already running") and from
//!   `xp_sqlagent_enum_jobs` — are field-reported to escape TRY/CATCH, and then tiberius
//!   fails the whole request: every caller must expect the escaped form.
//! * Minimum server: SQL Server 2016 (13.x) — `poll` uses `OPENJSON`, which needs database
//!   compatibility level 130+ for msdb (msdb follows the server's level after an upgrade).
//!
//! The current Agent session is `MAX(session_id)` of `msdb.dbo.syssessions` when the login may
//! read it (sysadmin by default), else `MAX(session_id)` of `msdb.dbo.sysjobactivity` (the Agent
//! inserts one activity row per job for every new session, so both agree whenever a job exists).

/// Server identity, Agent status and clock. No parameters.
///
/// One result set, one row:
/// 1. `engine_edition` int — `SERVERPROPERTY('EngineEdition')` (4 = Express: no Agent).
/// 2. `product_version` nvarchar(128) — e.g. `16.0.4135.4`.
/// 3. `agent_xps` int NULL — `sys.configurations` "Agent XPs" `value_in_use` (0/1).
/// 4. `can_view_server_state` int — 1 if the login holds VIEW SERVER STATE.
/// 5. `agent_connected` int NULL — 1 if a session `SQLAgent - Generic Refresher` exists; NULL
///    without VIEW SERVER STATE (then the DMV shows only our own session).
/// 6. `agent_service_status` int NULL — `sys.dm_server_services.status` of the Agent service
///    (4 = running, 1 = stopped); NULL without VIEW SERVER STATE or when not listed.
/// 7. `agent_session_id` int NULL — current Agent session (see module doc).
/// 8. `server_now` datetimeoffset — `SYSDATETIMEOFFSET()`; its offset converts Agent times.
/// 9. `server_started` datetime — `tempdb` `create_date`: changes when the engine restarts.
/// 10. `login_name` nvarchar(128) — `SUSER_SNAME()`, the "User X" in Agent messages.
///
/// Errors: none expected (only login-level failures).
pub const SERVER_INFO: &str = "-- agentfleet:server_info
SET NOCOUNT ON;
DECLARE @vss int = HAS_PERMS_BY_NAME(NULL, NULL, N'VIEW SERVER STATE');
DECLARE @connected int = NULL, @svc int = NULL, @sess int = NULL;
IF @vss = 1
BEGIN
    SET @connected = CASE WHEN EXISTS (SELECT 1 FROM sys.dm_exec_sessions
                                       WHERE program_name = N'SQLAgent - Generic Refresher')
                          THEN 1 ELSE 0 END;
    SET @svc = (SELECT TOP (1) CAST(status AS int) FROM sys.dm_server_services
                WHERE servicename LIKE N'SQL Server Agent%');
END;
IF HAS_PERMS_BY_NAME(N'msdb.dbo.syssessions', N'OBJECT', N'SELECT') = 1
    SET @sess = (SELECT MAX(session_id) FROM msdb.dbo.syssessions);
ELSE
    SET @sess = (SELECT MAX(session_id) FROM msdb.dbo.sysjobactivity);
SELECT CAST(SERVERPROPERTY('EngineEdition') AS int) AS engine_edition,
       CAST(SERVERPROPERTY('ProductVersion') AS nvarchar(128)) AS product_version,
       (SELECT CAST(value_in_use AS int) FROM sys.configurations WHERE name = N'Agent XPs') AS agent_xps,
       @vss AS can_view_server_state,
       @connected AS agent_connected,
       @svc AS agent_service_status,
       @sess AS agent_session_id,
       SYSDATETIMEOFFSET() AS server_now,
       (SELECT create_date FROM sys.databases WHERE database_id = 2) AS server_started,
       CAST(SUSER_SNAME() AS nvarchar(128)) AS login_name;";

/// What the login may do, for `sidecar check` and for permission-denied messages.
/// No parameters.
///
/// One result set, one row, every column int 0/1:
/// 1. `is_sysadmin` — `IS_SRVROLEMEMBER('sysadmin')`.
/// 2. `is_agent_operator` — member of msdb `SQLAgentOperatorRole` (may start any local job).
/// 3. `is_agent_reader` — member of msdb `SQLAgentReaderRole` (sees all jobs; starts own).
/// 4. `is_agent_user` — member of msdb `SQLAgentUserRole` (sees and starts own jobs only).
/// 5. `can_start_job` — EXECUTE on `msdb.dbo.sp_start_job`.
/// 6. `can_stop_job` — EXECUTE on `msdb.dbo.sp_stop_job`.
/// 7. `can_read_jobs` — SELECT on `msdb.dbo.sysjobs_view`.
/// 8. `can_read_steps` — SELECT on `msdb.dbo.sysjobsteps`.
/// 9. `can_read_history` — SELECT on `msdb.dbo.sysjobhistory`.
/// 10. `can_read_activity` — SELECT on `msdb.dbo.sysjobactivity`.
/// 11. `can_read_sessions` — SELECT on `msdb.dbo.syssessions` (optional; see module doc).
/// 12. `can_view_server_state` — VIEW SERVER STATE (optional; Agent liveness hints).
/// 13. `can_enum_jobs` — EXECUTE on `master.dbo.xp_sqlagent_enum_jobs` (optional; live step).
/// 14. `msdb_compatibility_level` int NULL — `sys.databases.compatibility_level` of msdb
///     (`poll` uses `OPENJSON`, which needs 130 or more).
///
/// Every other object the catalogue touches is checked one by one with
/// [`OBJECT_PERMISSION`] (see [`objects`]).
///
/// Role columns use `IS_ROLEMEMBER` in msdb (the connection's database); sysadmin members
/// may show 0 there and are covered by `is_sysadmin`. Errors: none expected.
pub const CHECK_PERMISSIONS: &str = "-- agentfleet:check_permissions
SET NOCOUNT ON;
SELECT CAST(ISNULL(IS_SRVROLEMEMBER(N'sysadmin'), 0) AS int) AS is_sysadmin,
       CAST(ISNULL(IS_ROLEMEMBER(N'SQLAgentOperatorRole'), 0) AS int) AS is_agent_operator,
       CAST(ISNULL(IS_ROLEMEMBER(N'SQLAgentReaderRole'), 0) AS int) AS is_agent_reader,
       CAST(ISNULL(IS_ROLEMEMBER(N'SQLAgentUserRole'), 0) AS int) AS is_agent_user,
       CAST(ISNULL(HAS_PERMS_BY_NAME(N'msdb.dbo.sp_start_job', N'OBJECT', N'EXECUTE'), 0) AS int) AS can_start_job,
       CAST(ISNULL(HAS_PERMS_BY_NAME(N'msdb.dbo.sp_stop_job', N'OBJECT', N'EXECUTE'), 0) AS int) AS can_stop_job,
       CAST(ISNULL(HAS_PERMS_BY_NAME(N'msdb.dbo.sysjobs_view', N'OBJECT', N'SELECT'), 0) AS int) AS can_read_jobs,
       CAST(ISNULL(HAS_PERMS_BY_NAME(N'msdb.dbo.sysjobsteps', N'OBJECT', N'SELECT'), 0) AS int) AS can_read_steps,
       CAST(ISNULL(HAS_PERMS_BY_NAME(N'msdb.dbo.sysjobhistory', N'OBJECT', N'SELECT'), 0) AS int) AS can_read_history,
       CAST(ISNULL(HAS_PERMS_BY_NAME(N'msdb.dbo.sysjobactivity', N'OBJECT', N'SELECT'), 0) AS int) AS can_read_activity,
       CAST(ISNULL(HAS_PERMS_BY_NAME(N'msdb.dbo.syssessions', N'OBJECT', N'SELECT'), 0) AS int) AS can_read_sessions,
       CAST(ISNULL(HAS_PERMS_BY_NAME(NULL, NULL, N'VIEW SERVER STATE'), 0) AS int) AS can_view_server_state,
       CAST(ISNULL(HAS_PERMS_BY_NAME(N'master.dbo.xp_sqlagent_enum_jobs', N'OBJECT', N'EXECUTE'), 0) AS int) AS can_enum_jobs,
       (SELECT CAST(d.compatibility_level AS int) FROM sys.databases AS d WHERE d.name = N'msdb') AS msdb_compatibility_level;";

/// Whether the login holds one permission on one object (`sidecar check`, once per object
/// the catalogue touches).
///
/// Parameters:
/// * `@P1` nvarchar — the three-part object name, e.g. `msdb.dbo.sysjobs`.
/// * `@P2` nvarchar — `SELECT` or `EXECUTE`.
///
/// One result set, one row:
/// 1. `granted` int — 1 if `HAS_PERMS_BY_NAME` says so; 0 if not, or if the object is not
///    visible to the login at all.
///
/// Errors: none expected.
pub const OBJECT_PERMISSION: &str = "-- agentfleet:object_permission
SET NOCOUNT ON;
SELECT CAST(ISNULL(HAS_PERMS_BY_NAME(@P1, N'OBJECT', @P2), 0) AS int) AS granted;";

/// Names of the jobs visible to the login. No parameters.
///
/// One result set, one row per job, ordered by name:
/// 1. `name` nvarchar(128).
///
/// Errors: 229 (no SELECT on `sysjobs_view`).
pub const JOB_NAMES: &str = "-- agentfleet:job_names
SET NOCOUNT ON;
SELECT j.name FROM msdb.dbo.sysjobs_view AS j ORDER BY j.name;";

/// The job catalogue with steps and the raw durations of successful runs. No parameters.
///
/// Result set 1 — jobs, one row per visible job, ordered by name:
/// 1. `job_id` uniqueidentifier
/// 2. `name` nvarchar(128)
/// 3. `enabled` int (0/1)
/// 4. `description` nvarchar(512) NULL
/// 5. `category` nvarchar(128) NULL
/// 6. `start_step_id` int
/// 7. `job_type` int — 1 local (`sysjobservers.server_id = 0`), 2 multiserver, 0 no target.
///
/// Result set 2 — steps of those jobs, ordered by job_id, step_id:
/// 1. `job_id` uniqueidentifier
/// 2. `step_id` int
/// 3. `step_name` nvarchar(128)
/// 4. `subsystem` nvarchar(40)
/// 5. `on_success_action` int (1 quit ok, 2 quit fail, 3 next, 4 goto)
/// 6. `on_success_step_id` int
/// 7. `on_fail_action` int (same codes)
/// 8. `on_fail_step_id` int
/// 9. `retry_attempts` int
/// 10. `retry_interval` int (minutes)
/// 11. `output_file_name` nvarchar(200) NULL
/// 12. `flags` int
///
/// Result set 3 — successful job outcome rows (`step_id = 0 AND run_status = 1`) still in
/// history, for duration statistics:
/// 1. `job_id` uniqueidentifier
/// 2. `run_duration` int (HHMMSS-encoded, hours not capped)
///
/// Errors: 229 (missing SELECT on a table).
pub const LIST_JOBS: &str = "-- agentfleet:list_jobs
SET NOCOUNT ON; SET LOCK_TIMEOUT 3000;
SELECT j.job_id, j.name, CAST(j.enabled AS int) AS enabled, j.description,
       c.name AS category, j.start_step_id,
       CASE WHEN EXISTS (SELECT 1 FROM msdb.dbo.sysjobservers AS s WHERE s.job_id = j.job_id AND s.server_id <> 0) THEN 2
            WHEN EXISTS (SELECT 1 FROM msdb.dbo.sysjobservers AS s WHERE s.job_id = j.job_id AND s.server_id = 0) THEN 1
            ELSE 0 END AS job_type
FROM msdb.dbo.sysjobs_view AS j
LEFT JOIN msdb.dbo.syscategories AS c ON c.category_id = j.category_id
ORDER BY j.name;
SELECT st.job_id, st.step_id, st.step_name, st.subsystem,
       CAST(st.on_success_action AS int) AS on_success_action, st.on_success_step_id,
       CAST(st.on_fail_action AS int) AS on_fail_action, st.on_fail_step_id,
       st.retry_attempts, st.retry_interval, st.output_file_name, st.flags
FROM msdb.dbo.sysjobsteps AS st
WHERE st.job_id IN (SELECT job_id FROM msdb.dbo.sysjobs_view)
ORDER BY st.job_id, st.step_id;
SELECT h.job_id, h.run_duration
FROM msdb.dbo.sysjobhistory AS h
WHERE h.step_id = 0 AND h.run_status = 1
  AND h.job_id IN (SELECT job_id FROM msdb.dbo.sysjobs_view);";

/// One job by name, with its steps (used before a start).
///
/// Parameters:
/// * `@P1` nvarchar — the job name, exactly as in `sysjobs.name`.
///
/// Result set 1 — 0 rows (unknown or invisible to the login), 1 row, or >1 (duplicate names):
/// columns exactly as `list_jobs` result set 1.
///
/// Result set 2 — the steps of the matching job(s): columns as `list_jobs` result set 2, then
/// 13. `command` nvarchar(max) NULL — the step's command (an SSIS step's `/ISSERVER` line
///     names the catalog package to follow).
///
/// Errors: 229.
pub const RESOLVE_JOB: &str = "-- agentfleet:resolve_job
SET NOCOUNT ON; SET LOCK_TIMEOUT 3000;
DECLARE @name sysname = @P1;
SELECT j.job_id, j.name, CAST(j.enabled AS int) AS enabled, j.description,
       c.name AS category, j.start_step_id,
       CASE WHEN EXISTS (SELECT 1 FROM msdb.dbo.sysjobservers AS s WHERE s.job_id = j.job_id AND s.server_id <> 0) THEN 2
            WHEN EXISTS (SELECT 1 FROM msdb.dbo.sysjobservers AS s WHERE s.job_id = j.job_id AND s.server_id = 0) THEN 1
            ELSE 0 END AS job_type
FROM msdb.dbo.sysjobs_view AS j
LEFT JOIN msdb.dbo.syscategories AS c ON c.category_id = j.category_id
WHERE j.name = @name;
SELECT st.job_id, st.step_id, st.step_name, st.subsystem,
       CAST(st.on_success_action AS int) AS on_success_action, st.on_success_step_id,
       CAST(st.on_fail_action AS int) AS on_fail_action, st.on_fail_step_id,
       st.retry_attempts, st.retry_interval, st.output_file_name, st.flags, st.command
FROM msdb.dbo.sysjobsteps AS st
WHERE st.job_id IN (SELECT job_id FROM msdb.dbo.sysjobs_view WHERE name = @name)
ORDER BY st.job_id, st.step_id;";

/// Pre-read before a start: what the ledger records *before* `sp_start_job` is called.
///
/// Parameters:
/// * `@P1` uniqueidentifier — the job id.
///
/// One result set, one row:
/// 1. `agent_session_id` int NULL — current Agent session.
/// 2. `history_watermark` int — `ISNULL(MAX(instance_id), 0)` of the job's history.
/// 3. `requested_not_before` datetime — `GETDATE()` truncated to whole seconds.
/// 4. `server_now` datetimeoffset.
/// 5. `running` int — 1 if the job's current-session activity row has
///    `start_execution_date` set and `stop_execution_date` NULL, or `run_requested_date` set
///    with both NULL (requested, not begun); else 0. While the Agent is down the newest
///    session's rows keep whatever state they had (a "ghost"), so read it with column 6.
/// 6. `agent_connected` int NULL — as in `server_info`: 1 if the Agent's session is
///    connected, 0 if not, NULL without VIEW SERVER STATE (unknown).
///
/// Errors: 229, 1222 (lock timeout behind the history row limiter: nothing was started,
/// the probe may be repeated).
pub const START_PROBE: &str = "-- agentfleet:start_probe
SET NOCOUNT ON; SET LOCK_TIMEOUT 3000;
DECLARE @job_id uniqueidentifier = @P1;
DECLARE @sess int, @connected int = NULL;
IF HAS_PERMS_BY_NAME(N'msdb.dbo.syssessions', N'OBJECT', N'SELECT') = 1
    SET @sess = (SELECT MAX(session_id) FROM msdb.dbo.syssessions);
ELSE
    SET @sess = (SELECT MAX(session_id) FROM msdb.dbo.sysjobactivity);
IF HAS_PERMS_BY_NAME(NULL, NULL, N'VIEW SERVER STATE') = 1
    SET @connected = CASE WHEN EXISTS (SELECT 1 FROM sys.dm_exec_sessions
                                       WHERE program_name = N'SQLAgent - Generic Refresher')
                          THEN 1 ELSE 0 END;
SELECT @sess AS agent_session_id,
       (SELECT ISNULL(MAX(instance_id), 0) FROM msdb.dbo.sysjobhistory WHERE job_id = @job_id) AS history_watermark,
       DATEADD(millisecond, -DATEPART(millisecond, GETDATE()), GETDATE()) AS requested_not_before,
       SYSDATETIMEOFFSET() AS server_now,
       CASE WHEN EXISTS (SELECT 1 FROM msdb.dbo.sysjobactivity AS a
                         WHERE a.session_id = @sess AND a.job_id = @job_id
                           AND a.stop_execution_date IS NULL
                           AND (a.start_execution_date IS NOT NULL OR a.run_requested_date IS NOT NULL))
            THEN 1 ELSE 0 END AS running,
       @connected AS agent_connected;";

/// The start itself, with the history watermark and Agent session taken in the same batch.
///
/// Parameters:
/// * `@P1` uniqueidentifier — the job id (always by id, never by name).
///
/// One result set, one row (also when `sp_start_job` raised a catchable error):
/// 1. `rc` int NULL — return code of `sp_start_job` (0 = accepted); NULL if it raised.
/// 2. `err_number` int NULL — caught error number, NULL on success.
/// 3. `err_message` nvarchar(4000) NULL — caught error text.
/// 4. `agent_session_id` int NULL — Agent session just before the call.
/// 5. `history_watermark` int — job's `MAX(instance_id)` just before the call (0 if none).
/// 6. `requested_not_before` datetime — `GETDATE()` truncated to whole seconds, before the call.
/// 7. `server_now` datetimeoffset.
///
/// Errors (as `err_number`, or as a TDS error if not caught): 14262 unknown/invisible job,
/// 14258 Agent starting, 14393 not owner/operator, 14256 no job server, 14397 multiserver,
/// 22022 already running / pending request / Agent not running (raised inside
/// `xp_sqlagent_notify`: expect it as a TDS error), 15281 Agent XPs off, 229 EXECUTE denied
/// (e.g. on Managed Instance `xp_sqlagent_notify`).
///
/// 1222 with `rc` NULL: the watermark read timed out behind the history row limiter
/// (`TABLOCKX` on `sysjobhistory`); `sp_start_job` was **not** called, so the batch may be
/// sent again. The lock timeout covers only that read: `sp_start_job` runs with the
/// default (wait), so a 1222 never comes from inside it.
pub const START_JOB: &str = "-- agentfleet:start_job
SET NOCOUNT ON;
DECLARE @job_id uniqueidentifier = @P1;
DECLARE @rc int = NULL, @err int = NULL, @msg nvarchar(4000) = NULL, @sess int, @hwm int = NULL;
IF HAS_PERMS_BY_NAME(N'msdb.dbo.syssessions', N'OBJECT', N'SELECT') = 1
    SET @sess = (SELECT MAX(session_id) FROM msdb.dbo.syssessions);
ELSE
    SET @sess = (SELECT MAX(session_id) FROM msdb.dbo.sysjobactivity);
SET LOCK_TIMEOUT 3000;
BEGIN TRY
    SET @hwm = (SELECT ISNULL(MAX(instance_id), 0) FROM msdb.dbo.sysjobhistory WHERE job_id = @job_id);
END TRY
BEGIN CATCH
    SELECT @err = ERROR_NUMBER(), @msg = ERROR_MESSAGE();
END CATCH;
SET LOCK_TIMEOUT -1;
DECLARE @t0 datetime = DATEADD(millisecond, -DATEPART(millisecond, GETDATE()), GETDATE());
IF @err IS NULL
BEGIN
    BEGIN TRY
        EXEC @rc = msdb.dbo.sp_start_job @job_id = @job_id;
    END TRY
    BEGIN CATCH
        SELECT @err = ERROR_NUMBER(), @msg = ERROR_MESSAGE();
    END CATCH;
END;
SELECT @rc AS rc, @err AS err_number, @msg AS err_message,
       @sess AS agent_session_id, @hwm AS history_watermark,
       @t0 AS requested_not_before, SYSDATETIMEOFFSET() AS server_now;";

/// Ask the Agent to stop a job (asynchronous: the outcome row comes later).
///
/// Parameters:
/// * `@P1` uniqueidentifier — the job id.
///
/// One result set, one row:
/// 1. `rc` int NULL — return code of `sp_stop_job` (0 = request accepted).
/// 2. `err_number` int NULL
/// 3. `err_message` nvarchar(4000) NULL
///
/// Errors (as `err_number` or TDS error): 22022 not currently running (the run already ended:
/// the poller reports its real outcome) or Agent not running — raised inside
/// `xp_sqlagent_notify`, so expect it as a TDS error —, 14262, 14393, 14257, 229.
pub const STOP_JOB: &str = "-- agentfleet:stop_job
SET NOCOUNT ON;
DECLARE @job_id uniqueidentifier = @P1;
DECLARE @rc int = NULL, @err int = NULL, @msg nvarchar(4000) = NULL;
BEGIN TRY
    EXEC @rc = msdb.dbo.sp_stop_job @job_id = @job_id;
END TRY
BEGIN CATCH
    SELECT @err = ERROR_NUMBER(), @msg = ERROR_MESSAGE();
END CATCH;
SELECT @rc AS rc, @err AS err_number, @msg AS err_message;";

/// The one batch per tick for every tracked execution of the server.
///
/// Parameters:
/// * `@P1` nvarchar(max) — JSON array of the tracked jobs with their history cursors:
///   `[{"job_id":"6F9619FF-8B86-D011-B42D-00C04FC964FF","after_id":1234}, ...]`.
///   `after_id` is the last `sysjobhistory.instance_id` already consumed for that job (the
///   start watermark at first). One entry per job; may be `[]` (heartbeat only).
/// * `@P2` int — 1 to read the live Agent state with `master.dbo.xp_sqlagent_enum_jobs`
///   (undocumented; needs sysadmin or grants), 0 to skip it (result set 2 is then empty).
///
/// Result set 1 — heartbeat, one row:
/// 1. `agent_session_id` int NULL — current Agent session.
/// 2. `server_now` datetimeoffset — its offset converts Agent local times to UTC.
/// 3. `server_started` datetime — `tempdb` `create_date` (engine restart detector).
/// 4. `agent_connected` int NULL — as in `server_info` (NULL without VIEW SERVER STATE).
/// 5. `enum_jobs_error` int NULL — error number if `xp_sqlagent_enum_jobs` failed, else NULL.
///
/// Result set 2 — live Agent state of tracked jobs (from `xp_sqlagent_enum_jobs`):
/// 1. `job_id` uniqueidentifier
/// 2. `running` int (0/1)
/// 3. `current_step` int (0 when not running)
/// 4. `current_retry_attempt` int
/// 5. `job_state` int (1 executing, 2 waiting for thread, 3 between retries, 4 idle,
///    5 suspended, 7 performing completion actions)
/// 6. `request_source` int (1 scheduler, 2 alerter, 3 boot, 4 user, 6 on idle)
/// 7. `request_source_id` nvarchar(128) NULL (for user requests: the login)
///
/// Result set 3 — one row per tracked job (LEFT JOINs; activity columns NULL when the
/// current session has no row for the job):
/// 1. `job_id` uniqueidentifier
/// 2. `job_exists` int (0 = deleted from `sysjobs`)
/// 3. `run_requested_date` datetime NULL
/// 4. `run_requested_source` nvarchar(128) NULL (the numeric code as text, '4' = user)
/// 5. `queued_date` datetime NULL
/// 6. `start_execution_date` datetime NULL
/// 7. `last_executed_step_id` int NULL (last *completed* step)
/// 8. `last_executed_step_date` datetime NULL
/// 9. `stop_execution_date` datetime NULL
/// 10. `job_history_id` int NULL (instance_id of the outcome row once the run ended)
///
/// Result set 4 — history rows of tracked jobs after their cursors, ordered by job_id, instance_id:
/// 1. `instance_id` int
/// 2. `job_id` uniqueidentifier
/// 3. `step_id` int (0 = job outcome)
/// 4. `step_name` nvarchar(128)
/// 5. `run_status` int (0 failed, 1 succeeded, 2 retry, 3 canceled, 4 in progress, 5 unknown)
/// 6. `run_date` int (yyyymmdd, server-local)
/// 7. `run_time` int (hhmmss, server-local)
/// 8. `run_duration` int (HHMMSS, hours not capped)
/// 9. `retries_attempted` int
/// 10. `sql_message_id` int
/// 11. `sql_severity` int
/// 12. `message` nvarchar(4000) NULL
///
/// Errors: 1222 lock timeout (the row limiter holds TABLOCKX on `sysjobhistory`; the tick is
/// skipped), 229 missing SELECT, 13609/0 JSON text invalid (a bug), and 22022 from
/// `xp_sqlagent_enum_jobs` (e.g. the Agent is stopped): it escapes the TRY/CATCH around the
/// `INSERT … EXEC`, so the whole batch fails; after a few such failures the poller polls
/// with `@P2 = 0` (history only).
pub const POLL: &str = "-- agentfleet:poll
SET NOCOUNT ON; SET LOCK_TIMEOUT 3000;
DECLARE @t TABLE (job_id uniqueidentifier PRIMARY KEY, after_id int NOT NULL);
INSERT @t (job_id, after_id)
SELECT job_id, MAX(after_id) FROM OPENJSON(@P1) WITH (job_id uniqueidentifier '$.job_id', after_id int '$.after_id')
WHERE job_id IS NOT NULL GROUP BY job_id;
DECLARE @sess int, @connected int = NULL, @enum_err int = NULL;
IF HAS_PERMS_BY_NAME(N'msdb.dbo.syssessions', N'OBJECT', N'SELECT') = 1
    SET @sess = (SELECT MAX(session_id) FROM msdb.dbo.syssessions);
ELSE
    SET @sess = (SELECT MAX(session_id) FROM msdb.dbo.sysjobactivity);
IF HAS_PERMS_BY_NAME(NULL, NULL, N'VIEW SERVER STATE') = 1
    SET @connected = CASE WHEN EXISTS (SELECT 1 FROM sys.dm_exec_sessions
                                       WHERE program_name = N'SQLAgent - Generic Refresher')
                          THEN 1 ELSE 0 END;
DECLARE @x TABLE (job_id uniqueidentifier, last_run_date int, last_run_time int, next_run_date int,
                  next_run_time int, next_run_schedule_id int, requested_to_run int, request_source int,
                  request_source_id sysname NULL, running int, current_step int,
                  current_retry_attempt int, job_state int);
IF @P2 = 1 AND EXISTS (SELECT 1 FROM @t)
BEGIN
    BEGIN TRY
        INSERT @x EXEC master.dbo.xp_sqlagent_enum_jobs 1, N'';
    END TRY
    BEGIN CATCH
        SET @enum_err = ERROR_NUMBER();
    END CATCH;
END;
SELECT @sess AS agent_session_id, SYSDATETIMEOFFSET() AS server_now,
       (SELECT create_date FROM sys.databases WHERE database_id = 2) AS server_started,
       @connected AS agent_connected, @enum_err AS enum_jobs_error;
SELECT x.job_id, x.running, x.current_step, x.current_retry_attempt, x.job_state,
       x.request_source, CAST(x.request_source_id AS nvarchar(128)) AS request_source_id
FROM @x AS x WHERE x.job_id IN (SELECT job_id FROM @t);
SELECT t.job_id, CASE WHEN j.job_id IS NULL THEN 0 ELSE 1 END AS job_exists,
       a.run_requested_date, CAST(a.run_requested_source AS nvarchar(128)) AS run_requested_source,
       a.queued_date, a.start_execution_date, a.last_executed_step_id, a.last_executed_step_date,
       a.stop_execution_date, a.job_history_id
FROM @t AS t
LEFT JOIN msdb.dbo.sysjobs AS j ON j.job_id = t.job_id
LEFT JOIN msdb.dbo.sysjobactivity AS a ON a.job_id = t.job_id AND a.session_id = @sess;
SELECT h.instance_id, h.job_id, h.step_id, h.step_name, h.run_status, h.run_date, h.run_time,
       h.run_duration, h.retries_attempted, h.sql_message_id, h.sql_severity, h.message
FROM @t AS t
JOIN msdb.dbo.sysjobhistory AS h ON h.job_id = t.job_id AND h.instance_id > t.after_id
ORDER BY h.job_id, h.instance_id;";

/// Every query, by marker name (for tests and for the stand-in's coverage check).
pub const ALL: &[(&str, &str)] = &[
    ("server_info", SERVER_INFO),
    ("check_permissions", CHECK_PERMISSIONS),
    ("job_names", JOB_NAMES),
    ("list_jobs", LIST_JOBS),
    ("resolve_job", RESOLVE_JOB),
    ("start_probe", START_PROBE),
    ("start_job", START_JOB),
    ("stop_job", STOP_JOB),
    ("poll", POLL),
    ("object_permission", OBJECT_PERMISSION),
];

/// A permission on an object a catalogued query touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjectUse {
    /// Three-part name as written, e.g. `msdb.dbo.sysjobs`.
    pub object: &'static str,
    /// `SELECT` or `EXECUTE`.
    pub permission: &'static str,
    /// The queries that use it degrade without it (they test `HAS_PERMS_BY_NAME` first, or
    /// catch the error): `syssessions` and `xp_sqlagent_enum_jobs`.
    pub optional: bool,
}

/// Every `msdb.dbo.*` / `master.dbo.*` object the catalogue touches, with the permission
/// it needs, derived from the query texts (not kept by hand): procedures (`sp_*`, `xp_*`)
/// need EXECUTE, everything else SELECT. Names only quoted inside `HAS_PERMS_BY_NAME`
/// (string literals) count too: the queries read those objects when permitted.
/// `check_permissions` and `object_permission` themselves are left out (they only ask).
pub fn objects() -> Vec<ObjectUse> {
    let mut out: Vec<ObjectUse> = Vec::new();
    for (name, text) in ALL {
        if matches!(*name, "check_permissions" | "object_permission") {
            continue;
        }
        for db in ["msdb.dbo.", "master.dbo."] {
            let mut rest: &'static str = text;
            while let Some(i) = rest.find(db) {
                let tail = &rest[i + db.len()..];
                let len = tail
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(tail.len());
                let object = &rest[i..i + db.len() + len];
                rest = &tail[len..];
                let proc = tail.starts_with("sp_") || tail.starts_with("xp_");
                let optional =
                    object.ends_with(".syssessions") || object.ends_with(".xp_sqlagent_enum_jobs");
                if !out.iter().any(|o| o.object == object) {
                    out.push(ObjectUse {
                        object,
                        permission: if proc { "EXECUTE" } else { "SELECT" },
                        optional,
                    });
                }
            }
        }
    }
    out.sort();
    out
}

/// The marker name of a query text (`-- agentfleet:<name>` on its first line).
pub fn marker(text: &str) -> Option<&str> {
    text.lines()
        .next()?
        .strip_prefix("-- agentfleet:")
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_query_starts_with_its_marker() {
        for (name, text) in ALL {
            assert_eq!(marker(text), Some(*name), "{name}");
        }
    }

    #[test]
    fn the_objects_needed_are_derived_from_the_texts() {
        let objs = objects();
        let names: Vec<&str> = objs.iter().map(|o| o.object).collect();
        for needed in [
            "msdb.dbo.sysjobs",
            "msdb.dbo.sysjobs_view",
            "msdb.dbo.sysjobservers",
            "msdb.dbo.syscategories",
            "msdb.dbo.sysjobsteps",
            "msdb.dbo.sysjobhistory",
            "msdb.dbo.sysjobactivity",
            "msdb.dbo.syssessions",
            "msdb.dbo.sp_start_job",
            "msdb.dbo.sp_stop_job",
            "master.dbo.xp_sqlagent_enum_jobs",
        ] {
            assert!(names.contains(&needed), "{needed} missing from {names:?}");
        }
        let perm = |n: &str| objs.iter().find(|o| o.object == n).unwrap();
        assert_eq!(perm("msdb.dbo.sp_start_job").permission, "EXECUTE");
        assert_eq!(perm("msdb.dbo.sysjobs").permission, "SELECT");
        assert!(perm("master.dbo.xp_sqlagent_enum_jobs").optional);
        assert!(!perm("msdb.dbo.sysjobservers").optional);
    }

    #[test]
    fn no_query_splices_values() {
        // Parameters only: nothing in the texts looks like a format placeholder.
        for (name, text) in ALL {
            assert!(!text.contains('{'), "{name}");
        }
    }
}
