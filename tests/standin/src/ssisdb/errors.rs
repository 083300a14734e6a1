//! The errors the SSIS catalog's procedures raise: numbers, severity 16 and the message texts
//! of Microsoft's error table (26000–27999), placeholders filled as the procedures fill them.

use crate::tds::tokens::ServerMessage;

/// An error raised by a catalog procedure, as SQL Server would send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogError(pub ServerMessage);

impl CatalogError {
    fn new(number: u32, procedure: &str, text: impl Into<String>) -> Self {
        Self(ServerMessage::new(number, 16, text).in_procedure(procedure, 1))
    }

    pub fn number(&self) -> u32 {
        self.0.number
    }

    pub fn message(&self) -> &str {
        &self.0.text
    }

    /// 27123: every writing procedure refuses SQL Server authentication.
    pub fn sql_login(procedure: &str) -> Self {
        Self::new(
            27123,
            procedure,
            "The operation cannot be started by an account that uses SQL Server Authentication. Start the operation with an account that uses Integrated Authentication.",
        )
    }

    /// 27138: a required input parameter is NULL.
    pub fn null_input(procedure: &str) -> Self {
        Self::new(
            27138,
            procedure,
            "The input parameter cannot be null. Provide a valid value for the parameter.",
        )
    }

    /// 27101: an input parameter has an invalid value.
    pub fn invalid_input(procedure: &str, what: &str) -> Self {
        Self::new(
            27101,
            procedure,
            format!(
                "The value specified for the input parameter, '{what}', is not valid. Provide a valid value for the parameter."
            ),
        )
    }

    /// 27146: missing folder, project or package — or one the caller cannot READ.
    pub fn no_package(procedure: &str) -> Self {
        Self::new(
            27146,
            procedure,
            "Cannot access the package or the package does not exist. Verify that the package exists and that the user has permissions to it.",
        )
    }

    /// 27195: `sp_getapplock` on `MS_ISServer_Create_Execution` timed out twice.
    pub fn create_timed_out() -> Self {
        Self::new(
            27195,
            "create_execution",
            "The operation failed because the execution timed out.",
        )
    }

    /// 27103: not visible, not an execution, or no MODIFY on it.
    pub fn no_execution(procedure: &str, id: i64) -> Self {
        Self::new(
            27103,
            procedure,
            format!(
                "Cannot find the execution instance '{id}' because it does not exist or you do not have sufficient permissions."
            ),
        )
    }

    /// 27224: parameters can only change while the execution is created (1).
    pub fn already_started_params() -> Self {
        Self::new(
            27224,
            "set_execution_parameter_value",
            "The parameter value cannot be changed after the execution has been started.",
        )
    }

    /// 27176: no parameter of that name (compared case-sensitively) and object type.
    pub fn no_parameter(name: &str) -> Self {
        Self::new(
            27176,
            "set_execution_parameter_value",
            format!(
                "The parameter '{name}' does not exist or you do not have sufficient permissions."
            ),
        )
    }

    /// 27147: the value's base type does not map to the parameter's SSIS type.
    pub fn wrong_type(name: &str) -> Self {
        Self::new(
            27147,
            "set_execution_parameter_value",
            format!(
                "The data type of the input value is not compatible with the data type of the '{name}'."
            ),
        )
    }

    /// 27217: LOGGING_LEVEL outside 0–4 and 100.
    pub fn bad_logging_level(level: i64) -> Self {
        Self::new(
            27217,
            "set_execution_parameter_value",
            format!(
                "The logging level '{level}' is undefined. Provide one of the following logging levels: 0 (None), 1 (Basic), 2 (Performance), 3 (Verbose), 4 (RuntimeLineage), 100 (Customized)."
            ),
        )
    }

    /// 27121: an execution starts only once, from created (1).
    pub fn started_twice() -> Self {
        Self::new(
            27121,
            "prepare_execution",
            "The project is currently running or has completed. An instance of execution can only be started once.",
        )
    }

    /// 27184: a required parameter has no value.
    pub fn required_unset() -> Self {
        Self::new(
            27184,
            "prepare_execution",
            "In order to execute this package, you need to specify values for the required parameters.",
        )
    }

    /// 27124: not running (also pending (5), created (1), ended, unknown id).
    pub fn not_running(id: i64) -> Self {
        Self::new(
            27124,
            "prepare_stop",
            format!(
                "Integration Services server cannot stop the operation. The specified operation with ID '{id}' is not valid or is not running."
            ),
        )
    }

    /// 27126: a second stop while stopping (8).
    pub fn already_stopping() -> Self {
        Self::new(
            27126,
            "prepare_stop",
            "Integration Services server cannot stop the operation. The specified operation is already in Stopping state.",
        )
    }

    /// 27143: the caller lacks READ or MODIFY on the operation.
    pub fn no_access(id: i64) -> Self {
        Self::new(
            27143,
            "prepare_stop",
            format!(
                "Cannot access the operation with ID, '{id}'. Verify that the user has appropriate permissions."
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_severity_and_placeholders() {
        let e = CatalogError::not_running(42);
        assert_eq!((e.number(), e.0.class), (27124, 16));
        assert!(e.message().contains("'42'"));
        assert_eq!(CatalogError::sql_login("create_execution").number(), 27123);
        assert!(
            CatalogError::bad_logging_level(7)
                .message()
                .starts_with("The logging level '7' is undefined.")
        );
    }
}
