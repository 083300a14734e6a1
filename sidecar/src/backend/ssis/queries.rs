//! Every T-SQL text the SSIS catalog backend sends, in one place.
//!
//! Conventions (stable; a TDS stand-in dispatches on them, as for `sqlagent::queries`):
//!
//! * Each text starts with a marker line `-- agentfleet:<name>` (the first line, exactly).
//! * Texts are sent with `Client::query` (an RPC to `sp_executesql`) with typed parameters
//!   `@P1`, `@P2`, …; no value is ever spliced into a text.
//! * The connection logs in with **Windows authentication** and database `SSISDB`: every
//!   writing catalog procedure refuses SQL Server logins with 27123, and `IS_ROLEMEMBER` in
//!   [`SSIS_VISIBILITY`] answers for the connection's database. Catalog objects are still
//!   written three-part (`SSISDB.catalog.…`).
//! * `smallint` catalog columns (`message_type`, `message_source_type`, `execution_result`)
//!   are `CAST(… AS int)`, so every integer column below is `int` or `bigint` as stated.
//!   Catalog times are `datetimeoffset(7)` with the server's local offset at that instant
//!   (DST can change it within one execution): compare them as instants.
//! * Catalog errors (27xxx, severity 16) raised inside a procedure are caught in T-SQL and
//!   returned as a row (`error_number`, `error_message`, …) by the writing batches; the
//!   reading batches let engine errors (1222 lock timeout, 229 permission) arrive as TDS
//!   errors.
//! * Row-level security: a login sees only executions it created unless it is `ssis_admin`,
//!   `ssis_logreader` or `sysadmin`. An invisible execution is indistinguishable from a
//!   deleted one (retention): both are a NULL status row in [`SSIS_POLL`].
//! * Minimum server: SQL Server 2016 (13.x) with SSISDB at compatibility level 130+
//!   (`OPENJSON`).

/// Status, new messages, new executable statistics and new data-flow row counts of many
/// tracked executions in one batch (`ssisdb.md` §7.1).
///
/// Parameters:
/// * `@P1` nvarchar(max) — JSON array, one object per tracked execution:
///   `[{"id":123,"msg":0,"stat":0,"data":0}, …]` — `id` the execution id, `msg` the last
///   `event_message_id` seen, `stat` the last `statistics_id` seen, `data` the last
///   `data_stats_id` seen (missing or null = 0).
/// * `@P2` int — most messages returned per execution.
/// * `@P3` int — most executable-statistics rows per execution.
/// * `@P4` bigint — tail re-read distance: messages are read from `msg - @P4` (0 disables),
///   because message ids are allocated at insert and committed out of order by several
///   threads; the client de-duplicates by `event_message_id`.
/// * `@P5` int — most data-statistics rows per execution.
///
/// Result set 1 — one row per tracked id, ordered by `execution_id`:
/// 1. `execution_id` bigint — the tracked id (always present).
/// 2. `status` int NULL — NULL: no such execution visible (deleted by retention, or the login
///    lost READ on it). 1 created, 2 running, 3 canceled, 4 failed, 5 pending,
///    6 ended unexpectedly, 7 succeeded, 8 stopping, 9 completed.
/// 3. `package_name` nvarchar(260) NULL
/// 4. `created_time` datetimeoffset NULL
/// 5. `start_time` datetimeoffset NULL — set at pending (5).
/// 6. `end_time` datetimeoffset NULL — set at a terminal status.
/// 7. `process_id` int NULL — ISServerExec's PID, set when it reports in (running).
/// 8. `caller_name` nvarchar(128) NULL — who created the execution.
/// 9. `stopped_by_name` nvarchar(128) NULL
/// 10. `server_name` nvarchar(128) NULL
/// 11. `machine_name` nvarchar(128) NULL
/// 12. `polled_at` datetimeoffset — `SYSDATETIMEOFFSET()`.
/// 13. `max_message_id` bigint NULL — highest message id of the execution ("more pending").
///
/// Result set 2 — messages with `event_message_id > msg - @P4`, at most `@P2` per execution,
/// ordered by `execution_id`, `event_message_id`:
/// 1. `execution_id` bigint
/// 2. `event_message_id` bigint
/// 3. `message_time` datetimeoffset
/// 4. `message_type` int — 120 error, 110 warning, 70 information, 30/40 pre/post-execute, …
/// 5. `message_source_type` int — 10 entry API, 20 ISServerExec, 30 package, 40 task,
///    50 container, 60 data flow.
/// 6. `message_code` int NULL
/// 7. `event_name` nvarchar(1024) NULL — NULL for server-side messages and for an event
///    whose detail row is not committed yet (re-read it).
/// 8. `package_name` nvarchar(260) NULL
/// 9. `message_source_name` nvarchar(4000) NULL
/// 10. `subcomponent_name` nvarchar(4000) NULL
/// 11. `execution_path` nvarchar(max) NULL
/// 12. `package_path` nvarchar(max) NULL
/// 13. `thread_id` int NULL
/// 14. `message` nvarchar(max) NULL
///
/// Result set 3 — executable statistics with `statistics_id > stat` (one row per finished
/// task or container iteration, written once, complete), at most `@P3` per execution,
/// ordered by `execution_id`, `statistics_id`:
/// 1. `execution_id` bigint
/// 2. `statistics_id` bigint
/// 3. `executable_id` bigint
/// 4. `executable_name` nvarchar(4000) NULL
/// 5. `package_name` nvarchar(260) NULL
/// 6. `execution_path` nvarchar(max) NULL
/// 7. `start_time` datetimeoffset NULL
/// 8. `end_time` datetimeoffset NULL
/// 9. `execution_duration` int NULL — milliseconds.
/// 10. `execution_result` int NULL — 0 success, 1 failure, 2 completion, 3 canceled.
///
/// Result set 4 — data-flow row counts with `data_stats_id > data` (logging level Verbose
/// only), at most `@P5` per execution, ordered by `execution_id`, `data_stats_id`:
/// 1. `execution_id` bigint
/// 2. `data_stats_id` bigint
/// 3. `package_name` nvarchar(260) NULL
/// 4. `task_name` nvarchar(4000) NULL
/// 5. `dataflow_path_id_string` nvarchar(4000) NULL
/// 6. `dataflow_path_name` nvarchar(4000) NULL
/// 7. `source_component_name` nvarchar(4000) NULL
/// 8. `destination_component_name` nvarchar(4000) NULL
/// 9. `rows_sent` bigint NULL — rows sent on that path by one buffer; sum per
///    (`execution_path`, `dataflow_path_id_string`) for a total.
/// 10. `created_time` datetimeoffset NULL
/// 11. `execution_path` nvarchar(max) NULL
///
/// Errors: 13609 (malformed JSON), 1222 (lock timeout behind the catalog's writers or the
/// retention job: try again next tick), 229.
pub const SSIS_POLL: &str = "-- agentfleet:ssis_poll
SET NOCOUNT ON;
SET LOCK_TIMEOUT 5000;
DECLARE @max_msg int = @P2, @max_stat int = @P3, @tail bigint = @P4, @max_data int = @P5;
DECLARE @t TABLE (execution_id bigint PRIMARY KEY, msg_wm bigint NOT NULL, stat_wm bigint NOT NULL,
                  data_wm bigint NOT NULL);
INSERT @t (execution_id, msg_wm, stat_wm, data_wm)
SELECT j.id, MAX(ISNULL(j.msg, 0)), MAX(ISNULL(j.stat, 0)), MAX(ISNULL(j.data, 0))
FROM OPENJSON(@P1) WITH (id bigint '$.id', msg bigint '$.msg', stat bigint '$.stat', data bigint '$.data') AS j
WHERE j.id IS NOT NULL
GROUP BY j.id;
SELECT t.execution_id, e.status, e.package_name, e.created_time, e.start_time, e.end_time,
       e.process_id, e.caller_name, e.stopped_by_name, e.server_name, e.machine_name,
       SYSDATETIMEOFFSET() AS polled_at,
       (SELECT MAX(m.operation_message_id) FROM SSISDB.catalog.operation_messages AS m
         WHERE m.operation_id = t.execution_id) AS max_message_id
FROM @t AS t
LEFT JOIN SSISDB.catalog.executions AS e ON e.execution_id = t.execution_id
ORDER BY t.execution_id;
SELECT t.execution_id, m.event_message_id, m.message_time,
       CAST(m.message_type AS int) AS message_type,
       CAST(m.message_source_type AS int) AS message_source_type,
       m.message_code, m.event_name, m.package_name, m.message_source_name, m.subcomponent_name,
       m.execution_path, m.package_path, m.threadID AS thread_id, m.message
FROM @t AS t
CROSS APPLY (
    SELECT TOP (@max_msg) em.event_message_id, em.message_time, em.message_type,
           em.message_source_type, em.message_code, em.event_name, em.package_name,
           em.message_source_name, em.subcomponent_name, em.execution_path, em.package_path,
           em.threadID, em.message
    FROM SSISDB.catalog.event_messages AS em
    WHERE em.operation_id = t.execution_id
      AND em.event_message_id > CASE WHEN t.msg_wm > @tail THEN t.msg_wm - @tail ELSE 0 END
    ORDER BY em.event_message_id
) AS m
ORDER BY t.execution_id, m.event_message_id;
SELECT t.execution_id, s.statistics_id, s.executable_id, x.executable_name, x.package_name,
       s.execution_path, s.start_time, s.end_time, s.execution_duration,
       CAST(s.execution_result AS int) AS execution_result
FROM @t AS t
CROSS APPLY (
    SELECT TOP (@max_stat) es.statistics_id, es.executable_id, es.execution_path, es.start_time,
           es.end_time, es.execution_duration, es.execution_result
    FROM SSISDB.catalog.executable_statistics AS es
    WHERE es.execution_id = t.execution_id AND es.statistics_id > t.stat_wm
    ORDER BY es.statistics_id
) AS s
LEFT JOIN SSISDB.catalog.executables AS x
       ON x.executable_id = s.executable_id AND x.execution_id = t.execution_id
ORDER BY t.execution_id, s.statistics_id;
SELECT t.execution_id, d.data_stats_id, d.package_name, d.task_name, d.dataflow_path_id_string,
       d.dataflow_path_name, d.source_component_name, d.destination_component_name,
       d.rows_sent, d.created_time, d.execution_path
FROM @t AS t
CROSS APPLY (
    SELECT TOP (@max_data) ds.data_stats_id, ds.package_name, ds.task_name,
           ds.dataflow_path_id_string, ds.dataflow_path_name, ds.source_component_name,
           ds.destination_component_name, ds.rows_sent, ds.created_time, ds.execution_path
    FROM SSISDB.catalog.execution_data_statistics AS ds
    WHERE ds.execution_id = t.execution_id AND ds.data_stats_id > t.data_wm
    ORDER BY ds.data_stats_id
) AS d
ORDER BY t.execution_id, d.data_stats_id;";

/// The catalog execution an Agent SSIS job step created (`ssisdb.md` §4.3): there is no link
/// column, so candidates are matched by package, creation time, caller and
/// `CALLER_INFO = 'SQLAGENT'` (the value an Agent step passes with `/CALLERINFO SQLAGENT`;
/// unconfirmed on a real instance).
///
/// Parameters:
/// * `@P1` nvarchar(128) — folder name, from the step command's `\SSISDB\<folder>\…` path.
/// * `@P2` nvarchar(128) — project name.
/// * `@P3` nvarchar(260) — package name including `.dtsx`.
/// * `@P4` datetimeoffset — the step's start minus a few seconds of slack (Agent times are
///   server-local `datetime`: convert them with the server's offset first).
/// * `@P5` nvarchar(128) NULL — the Agent service or proxy account, when known (NULL: any).
/// * `@P6` bigint NULL — the step's `/ENVREFERENCE`, when it has one (NULL: any).
///
/// One result set, zero or more rows ordered by `execution_id` (more than one = ambiguous:
/// report it rather than guess; a failed step's history message names the id):
/// 1. `execution_id` bigint
/// 2. `status` int
/// 3. `created_time` datetimeoffset
/// 4. `caller_name` nvarchar(128) NULL
/// 5. `server_name` nvarchar(128) NULL
///
/// Errors: none expected. The login sees Agent-created executions only as `ssis_admin`,
/// `ssis_logreader` or `sysadmin`; otherwise no row.
pub const SSIS_FIND_AGENT_EXECUTION: &str = "-- agentfleet:ssis_find_agent_execution
SET NOCOUNT ON;
SET LOCK_TIMEOUT 5000;
DECLARE @folder nvarchar(128) = @P1, @project nvarchar(128) = @P2, @package nvarchar(260) = @P3,
        @since datetimeoffset = @P4, @caller nvarchar(128) = @P5, @envref bigint = @P6;
SELECT e.execution_id, e.status, e.created_time, e.caller_name, e.server_name
FROM SSISDB.catalog.executions AS e
WHERE e.folder_name = @folder AND e.project_name = @project AND e.package_name = @package
  AND e.created_time >= @since
  AND (@caller IS NULL OR e.caller_name = @caller)
  AND (@envref IS NULL OR e.reference_id = @envref)
  AND EXISTS (SELECT 1 FROM SSISDB.catalog.execution_parameter_values AS p
              WHERE p.execution_id = e.execution_id AND p.object_type = 50
                AND p.parameter_name = N'CALLER_INFO'
                AND CONVERT(nvarchar(128), p.parameter_value) = N'SQLAGENT')
ORDER BY e.execution_id;";

/// Creates, parameterises and starts one execution (`ssisdb.md` §7.2), asynchronously
/// (`SYNCHRONIZED = 0`: the batch returns once the execution is pending or running).
///
/// Parameters:
/// * `@P1` nvarchar(128) — folder name.
/// * `@P2` nvarchar(128) — project name.
/// * `@P3` nvarchar(260) — package name including `.dtsx`.
/// * `@P4` bigint NULL — environment reference id (NULL: none).
/// * `@P5` bit — use the 32-bit runtime.
/// * `@P6` int — `LOGGING_LEVEL`: 0 None, 1 Basic, 2 Performance, 3 Verbose (data-flow row
///   counts), 4 RuntimeLineage.
/// * `@P7` nvarchar(128) — the caller token stored as `CALLER_INFO`
///   (`agentfleet:<execution uuid>`), for [`SSIS_FIND_BY_TOKEN`] after a lost answer.
/// * `@P8` nvarchar(max) — JSON array of parameter values:
///   `[{"t":30,"n":"Name","v":"42","ty":"Int32"}, …]` — `t` object type (20 project,
///   30 package, 50 system), `n` the parameter name (case-sensitive), `v` the value as text
///   (at most 4000 characters; DateTime as ISO 8601), `ty` the SSIS type (`Boolean`, `Byte`,
///   `Int16`, `Int32`, `Int64`, `Decimal`, `Double`, `DateTime`, `String`). NULL or `[]`: none.
///
/// One result set, one row:
/// 1. `execution_id` bigint NULL — set once `create_execution` succeeded (also when a later
///    stage failed: that execution stays created (1) and is never started).
/// 2. `stage` nvarchar(16) — `started` on success, else where it failed: `create`, `params`
///    or `start`.
/// 3. `error_number` int NULL — e.g. 27123 SQL login, 27146 no such package (or no READ),
///    27178 no EXECUTE, 27195 create timed out (retry), 27176 unknown parameter, 27147 type,
///    27217 logging level, 27184 required parameter unset, 27150 project redeployed, 27121
///    already started; 50001 inside a transaction.
/// 4. `error_severity` int NULL
/// 5. `error_state` int NULL
/// 6. `error_message` nvarchar(4000) NULL
///
/// Errors: none as TDS errors beyond login-level ones; everything is the row.
pub const SSIS_START: &str = "-- agentfleet:ssis_start
SET NOCOUNT ON;
SET XACT_ABORT OFF;
DECLARE @folder nvarchar(128) = @P1, @project nvarchar(128) = @P2, @package nvarchar(260) = @P3,
        @ref bigint = @P4, @use32 bit = @P5, @log int = @P6, @token nvarchar(128) = @P7,
        @params nvarchar(max) = @P8;
DECLARE @execution_id bigint = NULL, @stage nvarchar(16) = N'create', @rc int;
BEGIN TRY
    IF @@TRANCOUNT > 0 THROW 50001, N'start batch must not run inside a transaction', 1;
    EXEC @rc = SSISDB.catalog.create_execution @folder_name = @folder, @project_name = @project,
         @package_name = @package, @reference_id = @ref, @use32bitruntime = @use32,
         @runinscaleout = 0, @execution_id = @execution_id OUTPUT;
    IF @rc <> 0 OR @execution_id IS NULL THROW 50002, N'create_execution returned non-zero', 1;
    SET @stage = N'params';
    DECLARE @v sql_variant;
    SET @v = CONVERT(int, @log);
    EXEC SSISDB.catalog.set_execution_parameter_value @execution_id = @execution_id,
         @object_type = 50, @parameter_name = N'LOGGING_LEVEL', @parameter_value = @v;
    SET @v = CONVERT(bit, 0);
    EXEC SSISDB.catalog.set_execution_parameter_value @execution_id = @execution_id,
         @object_type = 50, @parameter_name = N'SYNCHRONIZED', @parameter_value = @v;
    SET @v = CONVERT(nvarchar(128), @token);
    EXEC SSISDB.catalog.set_execution_parameter_value @execution_id = @execution_id,
         @object_type = 50, @parameter_name = N'CALLER_INFO', @parameter_value = @v;
    DECLARE @t smallint, @n nvarchar(128), @s nvarchar(4000), @ty nvarchar(32);
    DECLARE p CURSOR LOCAL FAST_FORWARD FOR
        SELECT j.t, j.n, j.v, j.ty FROM OPENJSON(ISNULL(@params, N'[]'))
        WITH (t smallint '$.t', n nvarchar(128) '$.n', v nvarchar(4000) '$.v', ty nvarchar(32) '$.ty') AS j;
    OPEN p;
    FETCH NEXT FROM p INTO @t, @n, @s, @ty;
    WHILE @@FETCH_STATUS = 0
    BEGIN
        SET @v = CASE @ty
            WHEN N'Boolean'  THEN CONVERT(sql_variant, CONVERT(bit, @s))
            WHEN N'Byte'     THEN CONVERT(sql_variant, CONVERT(tinyint, @s))
            WHEN N'Int16'    THEN CONVERT(sql_variant, CONVERT(smallint, @s))
            WHEN N'Int32'    THEN CONVERT(sql_variant, CONVERT(int, @s))
            WHEN N'Int64'    THEN CONVERT(sql_variant, CONVERT(bigint, @s))
            WHEN N'Decimal'  THEN CONVERT(sql_variant, CONVERT(decimal(38, 18), @s))
            WHEN N'Double'   THEN CONVERT(sql_variant, CONVERT(float, @s))
            WHEN N'DateTime' THEN CONVERT(sql_variant, CONVERT(datetime2(7), @s, 126))
            ELSE CONVERT(sql_variant, @s) END;
        EXEC SSISDB.catalog.set_execution_parameter_value @execution_id = @execution_id,
             @object_type = @t, @parameter_name = @n, @parameter_value = @v;
        FETCH NEXT FROM p INTO @t, @n, @s, @ty;
    END;
    CLOSE p;
    DEALLOCATE p;
    SET @stage = N'start';
    EXEC @rc = SSISDB.catalog.start_execution @execution_id = @execution_id;
    IF @rc <> 0 THROW 50003, N'start_execution returned non-zero', 1;
    SELECT @execution_id AS execution_id, N'started' AS stage, CAST(NULL AS int) AS error_number,
           CAST(NULL AS int) AS error_severity, CAST(NULL AS int) AS error_state,
           CAST(NULL AS nvarchar(4000)) AS error_message;
END TRY
BEGIN CATCH
    IF CURSOR_STATUS('local', 'p') >= -1
    BEGIN
        BEGIN TRY CLOSE p; END TRY BEGIN CATCH END CATCH;
        BEGIN TRY DEALLOCATE p; END TRY BEGIN CATCH END CATCH;
    END;
    SELECT @execution_id AS execution_id, @stage AS stage, ERROR_NUMBER() AS error_number,
           ERROR_SEVERITY() AS error_severity, ERROR_STATE() AS error_state,
           CAST(ERROR_MESSAGE() AS nvarchar(4000)) AS error_message;
END CATCH;";

/// The execution a start batch created, found by its caller token (idempotent retry after a
/// lost answer to [`SSIS_START`]): status 1 → call `start_execution` only (not catalogued:
/// create a new execution instead, or stop tracking), ≥ 2 → already started, no row → the
/// start never created one (or the login cannot see it).
///
/// Parameters:
/// * `@P1` nvarchar(128) — the token passed as `@P7` of [`SSIS_START`].
///
/// One result set, zero or one row (more only if a token was reused):
/// 1. `execution_id` bigint
/// 2. `status` int
/// 3. `created_time` datetimeoffset
///
/// Errors: none expected.
pub const SSIS_FIND_BY_TOKEN: &str = "-- agentfleet:ssis_find_by_token
SET NOCOUNT ON;
SET LOCK_TIMEOUT 5000;
DECLARE @token nvarchar(128) = @P1;
SELECT e.execution_id, e.status, e.created_time
FROM SSISDB.catalog.execution_parameter_values AS p
JOIN SSISDB.catalog.executions AS e ON e.execution_id = p.execution_id
WHERE p.object_type = 50 AND p.parameter_name = N'CALLER_INFO'
  AND CONVERT(nvarchar(128), p.parameter_value) = @token
ORDER BY e.execution_id;";

/// Asks the catalog to stop an execution (asynchronous: 2 → stopping (8) → canceled (3)
/// once the package has unwound; poll for it).
///
/// Parameters:
/// * `@P1` bigint — the execution id.
///
/// One result set, one row:
/// 1. `rc` int NULL — return code of `catalog.stop_operation` (0 = stop requested); NULL if
///    it raised.
/// 2. `error_number` int NULL — 27124 not running (also still pending (5): retry once it
///    runs; or already ended, or unknown/invisible id), 27126 already stopping, 27125 process
///    not reported in yet (retry), 27143 no permission, 27123 SQL login.
/// 3. `error_severity` int NULL
/// 4. `error_message` nvarchar(4000) NULL
/// 5. `status` int NULL — the execution's status read after the call (NULL: not visible).
///
/// Errors: none as TDS errors beyond login-level ones.
pub const SSIS_STOP: &str = "-- agentfleet:ssis_stop
SET NOCOUNT ON;
DECLARE @execution_id bigint = @P1, @rc int = NULL, @err int = NULL, @sev int = NULL,
        @msg nvarchar(4000) = NULL;
BEGIN TRY
    EXEC @rc = SSISDB.catalog.stop_operation @operation_id = @execution_id;
END TRY
BEGIN CATCH
    SELECT @err = ERROR_NUMBER(), @sev = ERROR_SEVERITY(), @msg = ERROR_MESSAGE();
END CATCH;
SELECT @rc AS rc, @err AS error_number, @sev AS error_severity, @msg AS error_message,
       (SELECT e.status FROM SSISDB.catalog.executions AS e
         WHERE e.execution_id = @execution_id) AS status;";

/// What the login can see and do in the catalog, for `sidecar check`. No parameters.
///
/// One result set, one row:
/// 1. `login_name` nvarchar(128) — `SUSER_SNAME()`, the `caller_name` of its executions.
/// 2. `is_windows_auth` int — 1 if the session authenticated with Windows (its
///    `sys.dm_exec_sessions.nt_user_name` is set): required by every writing procedure.
/// 3. `nt_domain` nvarchar(128) NULL
/// 4. `nt_user_name` nvarchar(128) NULL
/// 5. `database_name` nvarchar(128) — `DB_NAME()`; must be `SSISDB` for the role columns.
/// 6. `is_sysadmin` int — `IS_SRVROLEMEMBER('sysadmin')`: sees and stops everything.
/// 7. `is_ssis_admin` int — `IS_ROLEMEMBER('ssis_admin')`: sees and stops everything.
/// 8. `is_ssis_logreader` int — `IS_ROLEMEMBER('ssis_logreader')`: sees every execution
///    (Agent-started ones too), stops none but its own.
/// 9. `can_create_execution` int — EXECUTE on `SSISDB.catalog.create_execution`.
/// 10. `can_start_execution` int — EXECUTE on `SSISDB.catalog.start_execution`.
/// 11. `can_stop_operation` int — EXECUTE on `SSISDB.catalog.stop_operation`.
/// 12. `ssisdb_compatibility_level` int NULL — `OPENJSON` needs 130+.
/// 13. `server_logging_level` int NULL — catalog property `SERVER_LOGGING_LEVEL` (default
///     of executions that do not set `LOGGING_LEVEL`).
/// 14. `retention_window_days` int NULL — catalog property `RETENTION_WINDOW`: ended
///     executions older than this vanish.
///
/// Errors: 916/4060 when the login has no user in SSISDB (cannot open the database).
pub const SSIS_VISIBILITY: &str = "-- agentfleet:ssis_visibility
SET NOCOUNT ON;
DECLARE @nt_user nvarchar(128) = NULL, @nt_domain nvarchar(128) = NULL;
SELECT @nt_user = s.nt_user_name, @nt_domain = s.nt_domain
FROM sys.dm_exec_sessions AS s WHERE s.session_id = @@SPID;
SELECT CAST(SUSER_SNAME() AS nvarchar(128)) AS login_name,
       CASE WHEN ISNULL(@nt_user, N'') <> N'' THEN 1 ELSE 0 END AS is_windows_auth,
       @nt_domain AS nt_domain, @nt_user AS nt_user_name,
       CAST(DB_NAME() AS nvarchar(128)) AS database_name,
       CAST(ISNULL(IS_SRVROLEMEMBER(N'sysadmin'), 0) AS int) AS is_sysadmin,
       CAST(ISNULL(IS_ROLEMEMBER(N'ssis_admin'), 0) AS int) AS is_ssis_admin,
       CAST(ISNULL(IS_ROLEMEMBER(N'ssis_logreader'), 0) AS int) AS is_ssis_logreader,
       CAST(ISNULL(HAS_PERMS_BY_NAME(N'SSISDB.catalog.create_execution', N'OBJECT', N'EXECUTE'), 0) AS int) AS can_create_execution,
       CAST(ISNULL(HAS_PERMS_BY_NAME(N'SSISDB.catalog.start_execution', N'OBJECT', N'EXECUTE'), 0) AS int) AS can_start_execution,
       CAST(ISNULL(HAS_PERMS_BY_NAME(N'SSISDB.catalog.stop_operation', N'OBJECT', N'EXECUTE'), 0) AS int) AS can_stop_operation,
       (SELECT CAST(d.compatibility_level AS int) FROM sys.databases AS d WHERE d.name = N'SSISDB') AS ssisdb_compatibility_level,
       (SELECT TRY_CONVERT(int, cp.property_value) FROM SSISDB.catalog.catalog_properties AS cp
         WHERE cp.property_name = N'SERVER_LOGGING_LEVEL') AS server_logging_level,
       (SELECT TRY_CONVERT(int, cp.property_value) FROM SSISDB.catalog.catalog_properties AS cp
         WHERE cp.property_name = N'RETENTION_WINDOW') AS retention_window_days;";

/// Every query, by marker name (for tests and for the stand-in's coverage check).
pub const ALL: &[(&str, &str)] = &[
    ("ssis_poll", SSIS_POLL),
    ("ssis_find_agent_execution", SSIS_FIND_AGENT_EXECUTION),
    ("ssis_start", SSIS_START),
    ("ssis_find_by_token", SSIS_FIND_BY_TOKEN),
    ("ssis_stop", SSIS_STOP),
    ("ssis_visibility", SSIS_VISIBILITY),
];

/// How many `@Pn` parameters a text uses: n for `@P1`..`@Pn`, checked consecutive by the tests.
pub fn parameter_count(text: &str) -> usize {
    parameters(text).last().copied().unwrap_or(0)
}

/// The distinct `@Pn` numbers a text uses, sorted.
fn parameters(text: &str) -> Vec<usize> {
    let mut out: Vec<usize> = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("@P") {
        let tail = &rest[i + 2..];
        let digits: String = tail.chars().take_while(char::is_ascii_digit).collect();
        let word_before = rest[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '@');
        if !digits.is_empty() && !word_before {
            let n: usize = digits.parse().unwrap_or(0);
            if !out.contains(&n) {
                out.push(n);
            }
        }
        rest = tail;
    }
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::sqlagent::queries::marker;

    #[test]
    fn every_query_starts_with_its_marker() {
        for (name, text) in ALL {
            assert_eq!(marker(text), Some(*name), "{name}");
            assert!(text.starts_with("-- agentfleet:"), "{name}");
        }
    }

    #[test]
    fn parameters_are_consecutive_from_p1() {
        for (name, text) in ALL {
            let ps = parameters(text);
            let expected: Vec<usize> = (1..=ps.len()).collect();
            assert_eq!(ps, expected, "{name} uses @P numbers {ps:?}");
        }
        assert_eq!(parameter_count(SSIS_POLL), 5);
        assert_eq!(parameter_count(SSIS_FIND_AGENT_EXECUTION), 6);
        assert_eq!(parameter_count(SSIS_START), 8);
        assert_eq!(parameter_count(SSIS_FIND_BY_TOKEN), 1);
        assert_eq!(parameter_count(SSIS_STOP), 1);
        assert_eq!(parameter_count(SSIS_VISIBILITY), 0);
    }

    #[test]
    fn no_query_splices_values() {
        for (name, text) in ALL {
            assert!(!text.contains('{'), "{name}");
            assert!(
                !text.contains("EXEC ('") && !text.contains("EXEC(@"),
                "{name}"
            );
        }
    }

    #[test]
    fn catalog_objects_are_three_part_names() {
        for (name, text) in ALL {
            for line in text.lines().skip(1) {
                let l = line.to_lowercase();
                if let Some(i) = l.find("catalog.") {
                    assert!(
                        l[..i].ends_with("ssisdb."),
                        "{name}: catalog object without SSISDB prefix: {line}"
                    );
                }
            }
        }
    }
}
