//! The catalog's writing procedures — `create_execution`, `set_execution_parameter_value`,
//! `start_execution`, `stop_operation` — with their checks in the order of the catalog's
//! T-SQL (`ssisdb.md` §1, §3), each failing with the real error number and text.

use super::model::{Execution, ParamValue, may_modify, may_read, operation_type, status};
use super::{Catalog, CatalogError, run};
use crate::agent::Caller;
use crate::tds::values::Value;

/// An integer value of any integer type (bit included).
pub fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::TinyInt(x) => Some(i64::from(*x)),
        Value::SmallInt(x) => Some(i64::from(*x)),
        Value::Int(x) => Some(i64::from(*x)),
        Value::BigInt(x) => Some(*x),
        Value::Bit(b) => Some(i64::from(*b)),
        _ => None,
    }
}

/// Whether a `sql_variant` base type maps to an SSIS type (`internal.data_type_mapping`).
/// Assumption: the mapping's contents are unconfirmed (`ssisdb.md` §1.3); integers of any
/// width are accepted for integer types and for Boolean (public scripts pass an `int` 1 for
/// SYNCHRONIZED), text only for String, and the exact base type otherwise.
fn type_fits(ssis_type: &str, v: &Value) -> bool {
    match ssis_type {
        "Boolean" | "Byte" | "Int16" | "Int32" | "Int64" => as_i64(v).is_some(),
        "String" => matches!(v, Value::Str(_)),
        "Decimal" => matches!(v, Value::Numeric(..)) || as_i64(v).is_some(),
        "Double" => matches!(v, Value::Float(_) | Value::Numeric(..)) || as_i64(v).is_some(),
        "DateTime" => matches!(v, Value::DateTime(_) | Value::DateTimeOffset(_)),
        _ => false,
    }
}

fn system_params() -> [(&'static str, &'static str); 6] {
    [
        ("DUMP_ON_ERROR", "Boolean"),
        ("DUMP_ON_EVENT", "Boolean"),
        ("DUMP_EVENT_CODE", "String"),
        ("LOGGING_LEVEL", "Int32"),
        ("CALLER_INFO", "String"),
        ("SYNCHRONIZED", "Boolean"),
    ]
}

impl Catalog {
    /// `catalog.create_execution`: returns the new execution id.
    pub fn create_execution(
        &self,
        caller: &Caller,
        folder: Option<&str>,
        project: Option<&str>,
        package: Option<&str>,
        reference_id: Option<i64>,
        use32: bool,
    ) -> Result<i64, CatalogError> {
        const PROC: &str = "create_execution";
        if !caller.windows {
            return Err(CatalogError::sql_login(PROC));
        }
        let (Some(folder), Some(project), Some(package)) = (folder, project, package) else {
            return Err(CatalogError::null_input(PROC));
        };
        let now = self.clock.now_offset();
        let mut s = self.lock();
        // The operation row is inserted outside the transaction: a failure below leaves it
        // behind with status 4 and no executions row.
        let id = s.new_operation(
            operation_type::EXECUTION,
            project,
            &caller.login,
            now,
            status::CREATED,
        );
        let fail = |s: &mut super::CatalogState, e: CatalogError| {
            if let Some(o) = s.operations.get_mut(&id) {
                o.status = status::FAILED;
                o.end_time = Some(now);
            }
            Err(e)
        };
        if s.create_timeouts > 0 {
            s.create_timeouts -= 1;
            return fail(&mut s, CatalogError::create_timed_out());
        }
        let Some(index) = s
            .packages
            .iter()
            .position(|p| p.matches(folder, project, package))
        else {
            return fail(&mut s, CatalogError::no_package(PROC));
        };
        let pkg = s.packages[index].config.clone();
        let server_level = s.settings.server_logging_level;
        let mut params = Vec::new();
        for p in &pkg.parameters {
            let value = p.default.clone().map(Value::Str);
            params.push((
                if p.scope == "project" { 20 } else { 30 },
                p.name.clone(),
                p.ty.clone(),
                value,
                p.required,
            ));
        }
        for (name, ty) in system_params() {
            let value = match name {
                "DUMP_ON_ERROR" | "DUMP_ON_EVENT" | "SYNCHRONIZED" => Some(Value::Bit(false)),
                "DUMP_EVENT_CODE" => Some(Value::Str("0".into())),
                "LOGGING_LEVEL" => Some(Value::Int(server_level)),
                _ => None,
            };
            params.push((50, name.to_string(), ty.to_string(), value, false));
        }
        let params = params
            .into_iter()
            .map(|(object_type, name, data_type, value, required)| {
                let pid = s.next_param_id;
                s.next_param_id += 1;
                ParamValue {
                    id: pid,
                    object_type,
                    name,
                    data_type,
                    value_set: value.is_some() && object_type == 50,
                    value,
                    required,
                }
            })
            .collect();
        let project_id = s.project_id(&pkg.folder, &pkg.project);
        s.operations.get_mut(&id).expect("inserted above").object_id = project_id;
        s.executions.insert(
            id,
            Execution {
                id,
                folder: folder.to_string(),
                project: project.to_string(),
                package: package.to_string(),
                reference_id,
                use32,
                executed_as_name: caller.login.clone(),
                package_index: index,
                params,
            },
        );
        Ok(id)
    }

    /// `catalog.set_execution_parameter_value`. `value` NULL is refused (27138).
    pub fn set_parameter(
        &self,
        caller: &Caller,
        execution_id: i64,
        object_type: i64,
        name: &str,
        value: &Value,
    ) -> Result<(), CatalogError> {
        const PROC: &str = "set_execution_parameter_value";
        if !caller.windows {
            return Err(CatalogError::sql_login(PROC));
        }
        if value.is_null() {
            return Err(CatalogError::null_input(PROC));
        }
        if !matches!(object_type, 20 | 30 | 50) {
            return Err(CatalogError::invalid_input(PROC, "object type"));
        }
        if execution_id <= 0 {
            return Err(CatalogError::invalid_input(PROC, "execution_id"));
        }
        let mut s = self.lock();
        let op = s
            .operations
            .get(&execution_id)
            .filter(|o| o.operation_type == operation_type::EXECUTION && may_modify(caller, o))
            .filter(|_| s.executions.contains_key(&execution_id))
            .ok_or_else(|| CatalogError::no_execution(PROC, execution_id))?;
        if op.status != status::CREATED {
            return Err(CatalogError::already_started_params());
        }
        let exec = s.executions.get_mut(&execution_id).expect("checked above");
        // Parameter names compare case-sensitively (COLLATE …_CS_AS in the procedure).
        let p = exec
            .params
            .iter_mut()
            .find(|p| i64::from(p.object_type) == object_type && p.name == name)
            .ok_or_else(|| CatalogError::no_parameter(name))?;
        if !type_fits(&p.data_type, value) {
            return Err(CatalogError::wrong_type(name));
        }
        if object_type == 50 && name == "LOGGING_LEVEL" {
            let level = as_i64(value).unwrap_or(-1);
            if !matches!(level, 0..=4 | 100) {
                return Err(CatalogError::bad_logging_level(level));
            }
        }
        p.value = Some(value.clone());
        p.value_set = true;
        Ok(())
    }

    /// `catalog.start_execution`: created (1) → pending (5); the package then runs on its
    /// own. Returns whether `SYNCHRONIZED` is set (the caller then waits for the end).
    pub fn start_execution(
        &self,
        caller: &Caller,
        execution_id: i64,
    ) -> Result<bool, CatalogError> {
        const PROC: &str = "start_execution";
        if !caller.windows {
            return Err(CatalogError::sql_login(PROC));
        }
        if execution_id <= 0 {
            return Err(CatalogError::invalid_input(PROC, "execution_id"));
        }
        let now = self.clock.now_offset();
        let mut s = self.lock();
        let visible = s.operations.get(&execution_id).is_some_and(|o| {
            o.operation_type == operation_type::EXECUTION && may_modify(caller, o)
        });
        let Some(exec) = s.executions.get(&execution_id).filter(|_| visible) else {
            return Err(CatalogError::no_execution(
                "prepare_execution",
                execution_id,
            ));
        };
        if exec.params.iter().any(|p| p.required && p.value.is_none()) {
            return Err(CatalogError::required_unset());
        }
        let synchronized = exec
            .params
            .iter()
            .find(|p| p.object_type == 50 && p.name == "SYNCHRONIZED")
            .and_then(|p| p.value.as_ref())
            .and_then(as_i64)
            .is_some_and(|v| v != 0);
        let op = s.operations.get_mut(&execution_id).expect("checked above");
        if op.status != status::CREATED {
            return Err(CatalogError::started_twice());
        }
        op.status = status::PENDING;
        op.start_time = Some(now);
        let stop = self.shutdown.child_token();
        s.runs.insert(execution_id, (stop.clone(), None));
        drop(s);
        self.notify();
        tokio::spawn(run::run(self.clone(), execution_id, stop));
        Ok(synchronized)
    }

    /// `catalog.stop_operation`: running (2) → stopping (8); the run unwinds to canceled (3).
    pub fn stop_operation(
        &self,
        caller: &Caller,
        operation_id: Option<i64>,
    ) -> Result<(), CatalogError> {
        let Some(id) = operation_id else {
            return Err(CatalogError::null_input("stop_operation"));
        };
        if !caller.windows {
            return Err(CatalogError::sql_login("prepare_stop"));
        }
        let now = self.clock.now_offset();
        let mut s = self.lock();
        // prepare_stop records its own operation (type 202) before the checks.
        let stop_op = s.new_operation(
            operation_type::STOP,
            "",
            &caller.login,
            now,
            status::RUNNING,
        );
        let check = match s.operations.get(&id) {
            Some(o)
                if o.operation_type == operation_type::EXECUTION && matches!(o.status, 2 | 8) =>
            {
                if o.status == status::STOPPING {
                    Err(CatalogError::already_stopping())
                } else if !(may_read(caller, o) && may_modify(caller, o)) {
                    Err(CatalogError::no_access(id))
                } else {
                    Ok((o.object_id, o.object_name.clone()))
                }
            }
            _ => Err(CatalogError::not_running(id)),
        };
        let so = s.operations.get_mut(&stop_op).expect("just inserted");
        match check {
            Err(e) => {
                so.status = status::FAILED;
                so.end_time = Some(now);
                Err(e)
            }
            Ok((object_id, object_name)) => {
                so.object_id = object_id;
                so.object_name = object_name;
                let target = s.operations.get_mut(&id).expect("checked above");
                target.status = status::STOPPING;
                target.stopped_by_name = Some(caller.login.clone());
                if let Some((token, by)) = s.runs.get_mut(&id) {
                    *by = Some(stop_op);
                    token.cancel();
                }
                drop(s);
                self.notify();
                Ok(())
            }
        }
    }
}

/// A value given as text converted to an SSIS type's base type, as `CONVERT` would (`None`:
/// the conversion fails). Unknown types stay text.
pub fn text_value(ssis_type: &str, text: &str) -> Option<Value> {
    let t = text.trim();
    Some(match ssis_type {
        "Boolean" => match t.to_ascii_lowercase().as_str() {
            "1" | "true" => Value::Bit(true),
            "0" | "false" => Value::Bit(false),
            _ => return None,
        },
        "Byte" => Value::TinyInt(t.parse().ok()?),
        "Int16" => Value::SmallInt(t.parse().ok()?),
        "Int32" => Value::Int(t.parse().ok()?),
        "Int64" => Value::BigInt(t.parse().ok()?),
        "Double" => Value::Float(t.parse().ok()?),
        "Decimal" => {
            let f: f64 = t.parse().ok()?;
            Value::Numeric((f * 1e18).round() as i128, 18)
        }
        "DateTime" => Value::DateTime(
            chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f")
                .or_else(|_| chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S"))
                .ok()?,
        ),
        _ => Value::Str(text.to_string()),
    })
}

impl Catalog {
    /// The SSIS type of one of an execution's parameters (ignoring permissions).
    pub fn parameter_type(
        &self,
        execution_id: i64,
        object_type: i64,
        name: &str,
    ) -> Option<String> {
        let s = self.lock();
        s.executions
            .get(&execution_id)?
            .params
            .iter()
            .find(|p| i64::from(p.object_type) == object_type && p.name == name)
            .map(|p| p.data_type.clone())
    }
}
