-- agentfleet: sample SQL Server Agent jobs and a least-privilege login for the sidecar.
--
-- Run by the `mssql-init` service of docker/compose.yaml with sqlcmd, as sa:
--   sqlcmd -S mssql -U sa -C -b -i init.sql
-- sqlcmd takes the sa password from SQLCMDPASSWORD and the sidecar's password from the
-- environment variable AGENTFLEET_SQL_PASSWORD (sqlcmd reads environment variables as
-- scripting variables), so no password is ever on a command line. The password must meet
-- the server's password policy and must not contain a single quote.
--
-- Idempotent: re-running it resets the jobs and the login's password and grants.
--
-- The jobs mirror the stand-in jobs of tests/e2e/tests/sqlagent.rs (same names, steps and
-- outcomes), so the end-to-end scenarios run against this server when AGENTFLEET_TEST_MSSQL
-- is set.
--
-- No SSIS here: SQL Server on Linux (this image) does not support the SSIS catalog
-- (SSISDB), and a project to deploy to one is an .ispac that only Visual Studio's SSIS
-- tooling builds. SSIS catalog support (Agent SSIS steps, [[catalog_job]]s) is tested
-- against the stand-in's simulated SSISDB instead: tests/e2e/tests/ssis.rs (on the
-- stand-in even when AGENTFLEET_TEST_MSSQL is set) and sidecar/tests/ssis_standin.rs.

SET NOCOUNT ON;
GO

------------------------------------------------------------------------------------------
-- A scratch database for the jobs' state (the flaky step's attempt counter).
------------------------------------------------------------------------------------------
IF DB_ID(N'agentfleet_test') IS NULL
    CREATE DATABASE agentfleet_test;
GO
USE agentfleet_test;
GO
IF OBJECT_ID(N'dbo.flaky_counter', N'U') IS NULL
BEGIN
    CREATE TABLE dbo.flaky_counter (n int NOT NULL);
    INSERT INTO dbo.flaky_counter (n) VALUES (0);
END;
GO

------------------------------------------------------------------------------------------
-- The sidecar's login (see sqlagent-msdb.md §1.6 for why each grant is needed).
------------------------------------------------------------------------------------------
USE master;
GO
IF SUSER_ID(N'agentfleet') IS NULL
    CREATE LOGIN agentfleet WITH PASSWORD = N'$(AGENTFLEET_SQL_PASSWORD)',
        DEFAULT_DATABASE = msdb, CHECK_POLICY = ON, CHECK_EXPIRATION = OFF;
ELSE
    ALTER LOGIN agentfleet WITH PASSWORD = N'$(AGENTFLEET_SQL_PASSWORD)';
GO
-- sys.dm_server_services and the Agent's sessions in sys.dm_exec_sessions: is Agent running?
GRANT VIEW SERVER STATE TO agentfleet;
GO
-- The live state of running jobs (current step, retry attempt). Without it the sidecar
-- infers the running step from the step flow (`sidecar check` warns).
IF USER_ID(N'agentfleet') IS NULL
    CREATE USER agentfleet FOR LOGIN agentfleet;
GRANT EXECUTE ON master.dbo.xp_sqlagent_enum_jobs TO agentfleet;
GO

USE msdb;
GO
IF USER_ID(N'agentfleet') IS NULL
    CREATE USER agentfleet FOR LOGIN agentfleet;
GO
-- Start and stop any local job (not only jobs the login owns), see every job.
ALTER ROLE SQLAgentOperatorRole ADD MEMBER agentfleet;
GO
-- The role works through procedures; the sidecar's one-batch poller reads the tables.
GRANT SELECT ON dbo.sysjobs TO agentfleet;
GRANT SELECT ON dbo.sysjobs_view TO agentfleet;
GRANT SELECT ON dbo.sysjobsteps TO agentfleet;
GRANT SELECT ON dbo.sysjobhistory TO agentfleet;
GRANT SELECT ON dbo.sysjobactivity TO agentfleet;
GRANT SELECT ON dbo.syssessions TO agentfleet;
GRANT SELECT ON dbo.sysjobservers TO agentfleet;
GRANT SELECT ON dbo.syscategories TO agentfleet;
GO

------------------------------------------------------------------------------------------
-- Sample jobs. Each is dropped and re-created; owner sa, target the local server.
-- Step actions: 1 quit with success, 2 quit with failure, 3 go to the next step.
------------------------------------------------------------------------------------------
IF OBJECT_ID(N'tempdb..#recreate_job') IS NOT NULL DROP PROCEDURE #recreate_job;
GO
CREATE PROCEDURE #recreate_job @name sysname, @description nvarchar(512)
AS
BEGIN
    IF EXISTS (SELECT 1 FROM msdb.dbo.sysjobs WHERE name = @name)
        EXEC msdb.dbo.sp_delete_job @job_name = @name, @delete_history = 1;
    EXEC msdb.dbo.sp_add_job @job_name = @name, @description = @description,
        @owner_login_name = N'sa', @enabled = 1;
    EXEC msdb.dbo.sp_add_jobserver @job_name = @name, @server_name = N'(local)';
END;
GO

-- Three steps, about a second each.
EXEC #recreate_job N'AF Test - Multi Step', N'agentfleet sample: three steps that succeed';
EXEC msdb.dbo.sp_add_jobstep @job_name = N'AF Test - Multi Step', @step_name = N'extract',
    @subsystem = N'TSQL', @database_name = N'agentfleet_test', @on_success_action = 3,
    @command = N'WAITFOR DELAY ''00:00:01''; PRINT N''extracted 42 rows'';';
EXEC msdb.dbo.sp_add_jobstep @job_name = N'AF Test - Multi Step', @step_name = N'transform',
    @subsystem = N'TSQL', @database_name = N'agentfleet_test', @on_success_action = 3,
    @command = N'WAITFOR DELAY ''00:00:01''; PRINT N''transformed'';';
EXEC msdb.dbo.sp_add_jobstep @job_name = N'AF Test - Multi Step', @step_name = N'load',
    @subsystem = N'TSQL', @database_name = N'agentfleet_test', @on_success_action = 1,
    @command = N'WAITFOR DELAY ''00:00:01''; PRINT N''loaded 42 rows'';';
GO

-- Agent's own step retry: `flaky` fails on odd attempts (a counter that survives across
-- attempts), so each run fails once and succeeds on its one retry (interval 0 minutes).
EXEC #recreate_job N'AF Test - Step Retry', N'agentfleet sample: a step that fails once and is retried';
EXEC msdb.dbo.sp_add_jobstep @job_name = N'AF Test - Step Retry', @step_name = N'flaky',
    @subsystem = N'TSQL', @database_name = N'agentfleet_test', @on_success_action = 3,
    @retry_attempts = 1, @retry_interval = 0,
    @command = N'UPDATE dbo.flaky_counter SET n = n + 1;
IF (SELECT n FROM dbo.flaky_counter) % 2 = 1
    RAISERROR(N''flaky: fails on odd attempts'', 16, 1);
ELSE
    PRINT N''flaky: fails on odd attempts'';';
EXEC msdb.dbo.sp_add_jobstep @job_name = N'AF Test - Step Retry', @step_name = N'finish',
    @subsystem = N'TSQL', @database_name = N'agentfleet_test', @on_success_action = 1,
    @command = N'PRINT N''done'';';
GO

-- Fails for real: the Agent's history message carries the error text.
EXEC #recreate_job N'AF Test - Fails', N'agentfleet sample: a job that fails';
EXEC msdb.dbo.sp_add_jobstep @job_name = N'AF Test - Fails', @step_name = N'load',
    @subsystem = N'TSQL', @database_name = N'agentfleet_test', @on_fail_action = 2,
    @command = N'RAISERROR(N''AF test: the source is down'', 16, 1);';
GO

-- Runs until stopped (sp_stop_job cancels the WAITFOR): for task timeouts and stops.
EXEC #recreate_job N'AF Test - Long', N'agentfleet sample: runs for ten minutes unless stopped';
EXEC msdb.dbo.sp_add_jobstep @job_name = N'AF Test - Long', @step_name = N'wait',
    @subsystem = N'TSQL', @database_name = N'agentfleet_test',
    @command = N'WAITFOR DELAY ''00:10:00'';';
GO

-- Runs a few seconds: two tasks of it on one sidecar must not overlap.
EXEC #recreate_job N'AF Test - Hold', N'agentfleet sample: holds for three seconds';
EXEC msdb.dbo.sp_add_jobstep @job_name = N'AF Test - Hold', @step_name = N'hold',
    @subsystem = N'TSQL', @database_name = N'agentfleet_test',
    @command = N'WAITFOR DELAY ''00:00:03'';';
GO

DROP PROCEDURE #recreate_job;
GO
PRINT N'agentfleet: sample jobs and the agentfleet login are ready';
GO
