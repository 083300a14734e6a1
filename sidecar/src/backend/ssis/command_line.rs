//! The command of a SQL Server Agent job step of subsystem SSIS: dtexec options as SSMS
//! writes them, e.g.
//!
//! ```text
//! /ISSERVER "\"\SSISDB\Finance\Sales\Load.dtsx\"" /SERVER "\"SQL1\"" /ENVREFERENCE 3
//! /Par "\"$ServerOption::LOGGING_LEVEL(Int16)\"";1 /CALLERINFO SQLAGENT /REPORTING E
//! ```
//!
//! Only what following the package needs is kept: the catalog path, the server whose
//! SSISDB holds the execution, the environment reference and the logging level (which
//! tells whether sub-step starts will be logged). A step that runs a package from a file
//! or msdb (`/FILE`, `/SQL`) has no catalog execution: `parse` returns `None`.

/// What an `/ISSERVER` step command names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsServerCommand {
    pub folder: String,
    pub project: String,
    /// With its `.dtsx` suffix, as `catalog.executions.package_name` holds it.
    pub package: String,
    /// `/SERVER`; `None` when absent (the local instance).
    pub server: Option<String>,
    pub env_reference: Option<i64>,
    /// `$ServerOption::LOGGING_LEVEL`, when the step sets it.
    pub logging_level: Option<i32>,
    pub synchronized: Option<bool>,
    pub caller_info: Option<String>,
}

/// Parses a step command; `None` unless it runs a package from the SSIS catalog.
pub fn parse(command: &str) -> Option<IsServerCommand> {
    let args = split_args(command);
    let mut path = None;
    let mut out = IsServerCommand {
        folder: String::new(),
        project: String::new(),
        package: String::new(),
        server: None,
        env_reference: None,
        logging_level: None,
        synchronized: None,
        caller_info: None,
    };
    let mut it = args.into_iter().peekable();
    while let Some(arg) = it.next() {
        let Some(option) = arg.strip_prefix('/').or_else(|| arg.strip_prefix('-')) else {
            continue;
        };
        let option = option.to_ascii_lowercase();
        // Every option kept below takes one value; flags without one (`/REP E` has one
        // too) are skipped with theirs.
        let value = match it.peek() {
            Some(v) if !v.starts_with('/') => it.next(),
            _ => None,
        };
        let Some(value) = value else { continue };
        match option.as_str() {
            "isserver" | "is" => path = Some(unquote(&value)),
            "server" | "ser" => out.server = Some(unquote(&value)).filter(|s| !s.is_empty()),
            "envreference" | "env" => out.env_reference = unquote(&value).trim().parse().ok(),
            "callerinfo" | "ca" => out.caller_info = Some(unquote(&value)),
            "par" => {
                let (name, val) = split_par(&value);
                let name = name.to_ascii_lowercase();
                if name.starts_with("$serveroption::logging_level") {
                    out.logging_level = val.trim().parse().ok();
                } else if name.starts_with("$serveroption::synchronized") {
                    out.synchronized = match val.trim().to_ascii_lowercase().as_str() {
                        "true" | "1" => Some(true),
                        "false" | "0" => Some(false),
                        _ => None,
                    };
                }
            }
            _ => {}
        }
    }
    // `\SSISDB\<folder>\<project>\<package>`: exactly these four parts.
    let path = path?;
    let parts: Vec<&str> = path
        .trim()
        .trim_start_matches('\\')
        .split('\\')
        .filter(|p| !p.is_empty())
        .collect();
    match parts.as_slice() {
        [catalog, folder, project, package] if catalog.eq_ignore_ascii_case("SSISDB") => {
            out.folder = (*folder).to_string();
            out.project = (*project).to_string();
            out.package = (*package).to_string();
            Some(out)
        }
        _ => None,
    }
}

/// Splits like the Windows command line the Agent hands dtexec: whitespace separates
/// arguments outside quotes, `"` toggles quoting and `\"` is a literal quote (so SSMS's
/// `"\"x\""` becomes `"x"`, unwrapped by `unquote`).
fn split_args(command: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut cur = String::new();
    let mut in_quotes = false;
    let mut started = false;
    let mut chars = command.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
                started = true;
            }
            '"' => {
                in_quotes = !in_quotes;
                started = true;
            }
            c if c.is_whitespace() && !in_quotes => {
                if started {
                    args.push(std::mem::take(&mut cur));
                    started = false;
                }
            }
            c => {
                cur.push(c);
                started = true;
            }
        }
    }
    if started {
        args.push(cur);
    }
    args
}

/// Drops one pair of surrounding quotes left by `split_args`.
fn unquote(s: &str) -> String {
    let t = s.trim();
    t.strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(t)
        .to_string()
}

/// `/Par "name";value` → (name, value), the `;` outside the quotes.
fn split_par(s: &str) -> (String, String) {
    let mut in_quotes = false;
    for (i, c) in s.char_indices() {
        match c {
            '"' => in_quotes = !in_quotes,
            ';' if !in_quotes => return (unquote(&s[..i]), unquote(&s[i + 1..])),
            _ => {}
        }
    }
    (unquote(s), String::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_command_ssms_writes() {
        let c = parse(
            r#"/ISSERVER "\"\SSISDB\Finance\Sales ETL\Load Sales.dtsx\"" /SERVER "\"SQL1\INST\"" /ENVREFERENCE 3 /Par "\"$Project::Region\"";EU /Par "\"$ServerOption::LOGGING_LEVEL(Int16)\"";3 /Par "\"$ServerOption::SYNCHRONIZED(Boolean)\"";True /CALLERINFO SQLAGENT /REPORTING E"#,
        )
        .unwrap();
        assert_eq!(c.folder, "Finance");
        assert_eq!(c.project, "Sales ETL");
        assert_eq!(c.package, "Load Sales.dtsx");
        assert_eq!(c.server.as_deref(), Some("SQL1\\INST"));
        assert_eq!(c.env_reference, Some(3));
        assert_eq!(c.logging_level, Some(3));
        assert_eq!(c.synchronized, Some(true));
        assert_eq!(c.caller_info.as_deref(), Some("SQLAGENT"));
    }

    #[test]
    fn parses_a_minimal_hand_written_command() {
        let c =
            parse(r#"/ISSERVER "\SSISDB\F\P\Pkg.dtsx" /SERVER . /CALLERINFO SQLAGENT"#).unwrap();
        assert_eq!(
            (c.folder.as_str(), c.project.as_str(), c.package.as_str()),
            ("F", "P", "Pkg.dtsx")
        );
        assert_eq!(c.server.as_deref(), Some("."));
        assert_eq!(c.env_reference, None);
        assert_eq!(c.logging_level, None);
        assert_eq!(c.synchronized, None);
    }

    #[test]
    fn options_are_case_insensitive_and_the_server_is_optional() {
        let c = parse(
            r#"/isserver "\"\ssisdb\F\P\Pkg.dtsx\"" /par "\"$ServerOption::SYNCHRONIZED(Boolean)\"";False /par "\"$ServerOption::LOGGING_LEVEL(Int16)\"";1"#,
        )
        .unwrap();
        assert_eq!(c.server, None);
        assert_eq!(c.synchronized, Some(false));
        assert_eq!(c.logging_level, Some(1));
    }

    #[test]
    fn packages_outside_the_catalog_are_not_followed() {
        assert_eq!(parse(r#"/FILE "\"C:\etl\Load.dtsx\"" /REPORTING E"#), None);
        assert_eq!(parse(r#"/SQL "\"\Maintenance\Backup\"" /SERVER ."#), None);
        assert_eq!(
            parse(r#"/ISSERVER "\"\SSISDB\OnlyFolder\Pkg.dtsx\"""#),
            None
        );
        assert_eq!(parse(""), None);
    }

    #[test]
    fn quoted_values_may_hold_spaces_and_semicolons() {
        let c = parse(r#"/ISSERVER "\"\SSISDB\A B\C;D\E F.dtsx\"" /SERVER "\"tcp:sql1,1444\"""#)
            .unwrap();
        assert_eq!(c.folder, "A B");
        assert_eq!(c.project, "C;D");
        assert_eq!(c.package, "E F.dtsx");
        assert_eq!(c.server.as_deref(), Some("tcp:sql1,1444"));
    }
}
