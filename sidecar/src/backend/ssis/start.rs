//! Starting a catalog execution: the start batch (create, parameters, start, with
//! `SYNCHRONIZED = 0`), retried while the catalog's creation lock refuses it (27195), and
//! the caller-token lookup that tells, after a lost answer, whether the batch created and
//! started an execution (`ssis_find_by_token`), so a package is never started twice.
use std::collections::BTreeMap;
use std::time::Duration;

use agentfleet_common::backoff::Backoff;

use super::config::CatalogJobConfig;
use super::ledger::Entry;
use super::queries;
use crate::backend::BackendError;
use crate::backend::sqlagent::connection::{Conn, SqlError};
use crate::backend::sqlagent::rows;

/// How long starts refused with 27195 (the catalog's creation lock) are retried.
const BUSY_RETRY_FOR: Duration = Duration::from_secs(90);
/// How long a start whose answer was lost is looked for by its token.
const RECOVER_FOR: Duration = Duration::from_secs(60);

/// What the start batch answered.
#[derive(Debug, Default)]
struct StartRow {
    execution_id: Option<i64>,
    stage: String,
    error_number: Option<i32>,
    error_message: Option<String>,
}

/// The connection starts go through (one at a time: the catalog serialises them anyway).
pub struct Starter {
    control: tokio::sync::Mutex<Conn>,
}

impl Starter {
    pub fn new(conn: Conn) -> Self {
        Self {
            control: tokio::sync::Mutex::new(conn),
        }
    }

    /// The parameters as the start batch takes them (JSON), refusing undeclared ones.
    pub fn params_json(
        job: &CatalogJobConfig,
        params: &BTreeMap<String, String>,
    ) -> Result<String, BackendError> {
        let mut list = Vec::new();
        for (name, value) in params {
            let p = job.param(name).ok_or_else(|| {
                let declared: Vec<&str> = job.params.iter().map(|p| p.name.as_str()).collect();
                BackendError::InvalidArgument(format!(
                    "catalog job `{}` does not declare parameter `{name}` (declared: {}); add it to the job's params in the sidecar config",
                    job.name,
                    if declared.is_empty() { "none".to_string() } else { declared.join(", ") }
                ))
            })?;
            p.check_value(value)
                .map_err(BackendError::InvalidArgument)?;
            list.push(serde_json::json!({"t": p.object_type_code(), "n": p.name, "v": p.wire_value(value), "ty": p.data_type}));
        }
        Ok(serde_json::Value::Array(list).to_string())
    }

    async fn start_batch(
        &self,
        job: &CatalogJobConfig,
        token: &str,
        params: &str,
    ) -> Result<StartRow, SqlError> {
        let folder = job.folder.as_str();
        let project = job.project.as_str();
        let package = job.package_file();
        let reference = job.environment_reference;
        let use32 = job.use32bit;
        let level: i32 = job.logging_level.map_or(1, |l| l.value());
        let sets = self
            .control
            .lock()
            .await
            .query(
                queries::SSIS_START,
                &[
                    &folder,
                    &project,
                    &package.as_str(),
                    &reference,
                    &use32,
                    &level,
                    &token,
                    &params,
                ],
            )
            .await?;
        let r = sets.first().and_then(|s| s.first());
        Ok(r.map(|r| StartRow {
            execution_id: rows::int(r, "execution_id"),
            stage: rows::string(r, "stage").unwrap_or_default(),
            error_number: rows::int32(r, "error_number"),
            error_message: rows::string(r, "error_message"),
        })
        .unwrap_or_default())
    }

    /// The execution a start batch with `token` created: (id, status), the most advanced.
    pub async fn find_by_token(&self, token: &str) -> Result<Option<(i64, i32)>, SqlError> {
        let sets = self
            .control
            .lock()
            .await
            .query(queries::SSIS_FIND_BY_TOKEN, &[&token])
            .await?;
        Ok(sets
            .first()
            .into_iter()
            .flatten()
            .filter_map(|r| {
                Some((
                    rows::int(r, "execution_id")?,
                    rows::int32(r, "status").unwrap_or(0),
                ))
            })
            .max_by_key(|(id, status)| (*status != 1, *id)))
    }

    /// Sends the start batch until it started, retrying 27195 with backoff and looking the
    /// token up after a lost answer. Ok: the started execution's id.
    pub async fn run_start(
        &self,
        job: &CatalogJobConfig,
        entry: &Entry,
        params: &str,
    ) -> Result<i64, BackendError> {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(8));
        let t0 = std::time::Instant::now();
        loop {
            agentfleet_common::fault::point("ssis-before-start-batch");
            match self.start_batch(job, &entry.token, params).await {
                Ok(r) if r.stage == "started" && r.error_number.is_none() => {
                    return r.execution_id.ok_or_else(|| {
                        BackendError::Internal("the start batch returned no execution id".into())
                    });
                }
                Ok(r) if r.error_number == Some(27195) && t0.elapsed() < BUSY_RETRY_FOR => {
                    let d = backoff.next_delay();
                    tracing::info!(execution_id = %entry.execution_id, attempt = backoff.attempts(), delay_ms = d.as_millis() as u64, "the SSIS catalog is busy creating other executions (27195); retrying the start");
                    tokio::time::sleep(d).await;
                }
                Ok(r) => return Err(map_start_error(job, &r)),
                Err(SqlError::Server {
                    number, message, ..
                }) => {
                    return Err(map_start_error(
                        job,
                        &StartRow {
                            error_number: Some(number),
                            error_message: Some(message),
                            ..Default::default()
                        },
                    ));
                }
                Err(SqlError::Login { number, message }) => {
                    return Err(BackendError::Unavailable(format!(
                        "SQL Server refused the sidecar's catalog login (error {number}): {message}"
                    )));
                }
                Err(e) => {
                    tracing::warn!(execution_id = %entry.execution_id, error = %e, "the start batch's answer was lost; looking for its execution by token");
                    if let Some(id) = self.recover(entry).await? {
                        return Ok(id);
                    }
                    if t0.elapsed() > RECOVER_FOR {
                        return Err(BackendError::Unavailable(format!(
                            "cannot reach SSISDB to start `{}` ({e}); retry StartJob: it will not start the package twice",
                            job.name
                        )));
                    }
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    }

    /// After a lost answer: `Some(id)` when the token's execution was started; `None` when
    /// there is none, or it was created and never started (sending the batch again is safe).
    pub async fn recover(&self, entry: &Entry) -> Result<Option<i64>, BackendError> {
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));
        let t0 = std::time::Instant::now();
        loop {
            match self.find_by_token(&entry.token).await {
                Ok(Some((id, status))) if status >= 2 => return Ok(Some(id)),
                Ok(_) => return Ok(None),
                Err(e) if t0.elapsed() < RECOVER_FOR => {
                    tracing::debug!(error = %e, "token lookup failed; retrying");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                Err(e) => {
                    return Err(BackendError::Unavailable(format!(
                        "cannot reach SSISDB to confirm whether execution {} started ({e}); retry StartJob later: it will not start the package twice",
                        entry.execution_id
                    )));
                }
            }
        }
    }
}

fn map_start_error(job: &CatalogJobConfig, r: &StartRow) -> BackendError {
    let n = r.error_number.unwrap_or(0);
    let msg = r.error_message.clone().unwrap_or_default();
    let path = format!(
        "\\SSISDB\\{}\\{}\\{}",
        job.folder,
        job.project,
        job.package_file()
    );
    match n {
        27123 => BackendError::PermissionDenied(format!(
            "SSISDB refuses to start packages for a SQL Server login (error 27123): catalog job `{}` needs Windows authentication; set auth = \"windows\" in [ssis] (on Linux with user = 'DOMAIN\\name' and a password source, for NTLM)",
            job.name
        )),
        27146 => BackendError::InvalidArgument(format!(
            "the catalog has no package {path}, or the sidecar's login cannot read it (error 27146): check folder, project and package in the config, and grant READ on the project"
        )),
        27178 => BackendError::PermissionDenied(format!(
            "the sidecar's login may not execute project `{}` (error 27178): grant it EXECUTE on the project",
            job.project
        )),
        27195 => BackendError::Unavailable(format!(
            "the SSIS catalog stayed busy creating other executions (error 27195) for {}s; retry",
            BUSY_RETRY_FOR.as_secs()
        )),
        27176 | 27147 | 27217 | 27184 | 27208 | 27182 => BackendError::InvalidArgument(format!(
            "the catalog refused the start of {path} (error {n}): {msg}"
        )),
        916 | 4060 | 229 => BackendError::PermissionDenied(format!(
            "the sidecar's login cannot use SSISDB (error {n}): {msg}"
        )),
        _ => BackendError::Internal(format!(
            "the catalog refused the start of {path} at stage `{}` (error {n}): {msg}",
            r.stage
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> CatalogJobConfig {
        toml::from_str("name=\"J\"\nfolder=\"F\"\nproject=\"P\"\npackage=\"Pkg\"\nparams=[{name=\"N\", type=\"Int32\", object_type=\"package\"}]\n").unwrap()
    }

    #[test]
    fn params_become_typed_json_and_undeclared_ones_are_refused() {
        let p = BTreeMap::from([("N".to_string(), "42".to_string())]);
        let json: serde_json::Value =
            serde_json::from_str(&Starter::params_json(&job(), &p).unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!([{"t": 30, "n": "N", "v": "42", "ty": "Int32"}])
        );
        let bad = BTreeMap::from([("X".to_string(), "1".to_string())]);
        assert!(
            matches!(Starter::params_json(&job(), &bad), Err(BackendError::InvalidArgument(m)) if m.contains("does not declare parameter `X`"))
        );
        let mistyped = BTreeMap::from([("N".to_string(), "forty".to_string())]);
        assert!(Starter::params_json(&job(), &mistyped).is_err());
    }

    #[test]
    fn a_sql_login_refusal_says_what_to_do() {
        let e = map_start_error(
            &job(),
            &StartRow {
                error_number: Some(27123),
                ..Default::default()
            },
        );
        assert!(
            matches!(&e, BackendError::PermissionDenied(m) if m.contains("Windows authentication") && m.contains("27123")),
            "{e}"
        );
        assert!(matches!(
            map_start_error(
                &job(),
                &StartRow {
                    error_number: Some(27195),
                    ..Default::default()
                }
            ),
            BackendError::Unavailable(_)
        ));
        assert!(
            matches!(map_start_error(&job(), &StartRow { error_number: Some(27146), ..Default::default() }), BackendError::InvalidArgument(m) if m.contains("Pkg.dtsx"))
        );
    }
}
