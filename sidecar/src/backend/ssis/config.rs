//! `[[catalog_job]]`: jobs that run a package deployed to the SSIS catalog (SSISDB), and
//! `[ssis]`, the connection they use (same keys as `[sqlagent]`; without it, the
//! `[sqlagent]` connection).
//!
//! ```toml
//! [ssis]
//! server = "tcp:sql1,1433"
//! auth = "windows"                 # required: SSISDB refuses SQL logins (error 27123)
//! user = 'CONTOSO\svc_etl'         # Linux only: NTLM; on Windows omit it (integrated)
//! password_env = "ETL_PASSWORD"
//!
//! [[catalog_job]]
//! name = "SSIS - Load Sales"
//! folder = "Finance"
//! project = "Sales ETL"
//! package = "Load Sales.dtsx"
//! logging_level = "basic"          # none | basic | performance | verbose | 0-4
//! environment_reference = 3        # optional
//! params = [{ name = "Region", type = "String" },
//!           { name = "BatchSize", type = "Int32", object_type = "package" },
//!           { name = "CM.Source.Password", sensitive = true }]
//! ```
use serde::Deserialize;

use crate::backend::sqlagent::SqlAgentConfig;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CatalogJobConfig {
    pub name: String,
    pub folder: String,
    pub project: String,
    /// With or without `.dtsx` (added when missing).
    pub package: String,
    #[serde(default)]
    pub description: Option<String>,
    /// `catalog.environment_references.reference_id` of the project.
    #[serde(default)]
    pub environment_reference: Option<i64>,
    #[serde(default)]
    pub logging_level: Option<LoggingLevel>,
    #[serde(default)]
    pub use32bit: bool,
    /// The parameters a plan's task may set (any other is refused before starting).
    #[serde(default)]
    pub params: Vec<CatalogParam>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CatalogParam {
    /// Case-sensitive, as the catalog compares it.
    pub name: String,
    /// The SSIS data type: Boolean, Byte, DateTime, Decimal, Double, Int16, Int32,
    /// Int64, String (default).
    #[serde(rename = "type", default = "default_type")]
    pub data_type: String,
    /// "project" (default) or "package".
    #[serde(default = "default_object_type")]
    pub object_type: String,
    /// A sensitive parameter (a password): its value is never written to the audit log.
    #[serde(default)]
    pub sensitive: bool,
}

fn default_type() -> String {
    "String".into()
}
fn default_object_type() -> String {
    "project".into()
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum LoggingLevel {
    Number(i32),
    Name(LevelName),
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LevelName {
    None,
    Basic,
    Performance,
    Verbose,
}

impl LoggingLevel {
    pub fn value(self) -> i32 {
        match self {
            Self::Number(n) => n,
            Self::Name(LevelName::None) => 0,
            Self::Name(LevelName::Basic) => 1,
            Self::Name(LevelName::Performance) => 2,
            Self::Name(LevelName::Verbose) => 3,
        }
    }
}

pub const SSIS_TYPES: &[&str] = &[
    "Boolean", "Byte", "DateTime", "Decimal", "Double", "Int16", "Int32", "Int64", "String",
];

impl CatalogJobConfig {
    /// The package name as the catalog holds it.
    pub fn package_file(&self) -> String {
        if self.package.to_ascii_lowercase().ends_with(".dtsx") {
            self.package.clone()
        } else {
            format!("{}.dtsx", self.package)
        }
    }

    pub fn param(&self, name: &str) -> Option<&CatalogParam> {
        self.params.iter().find(|p| p.name == name)
    }
}

impl CatalogParam {
    /// The catalog's `object_type`: 20 project, 30 package.
    pub fn object_type_code(&self) -> i16 {
        if self.object_type.eq_ignore_ascii_case("package") {
            30
        } else {
            20
        }
    }

    /// Refuses a value the catalog would refuse (27147), before anything starts.
    pub fn check_value(&self, value: &str) -> Result<(), String> {
        let v = value.trim();
        let ok = match self.data_type.as_str() {
            "Boolean" => matches!(
                v.to_ascii_lowercase().as_str(),
                "true" | "false" | "1" | "0"
            ),
            "Byte" => v.parse::<u8>().is_ok(),
            "Int16" => v.parse::<i16>().is_ok(),
            "Int32" => v.parse::<i32>().is_ok(),
            "Int64" => v.parse::<i64>().is_ok(),
            "Double" | "Decimal" => v.parse::<f64>().is_ok(),
            "DateTime" => {
                chrono::NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S").is_ok()
                    || chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").is_ok()
            }
            _ => value.chars().count() <= 4000,
        };
        if ok {
            Ok(())
        } else {
            Err(format!(
                "parameter `{}` is of type {}; `{value}` is not a value of that type",
                self.name, self.data_type
            ))
        }
    }

    /// The value as the start batch converts it (`Boolean` as 0/1; DateTime in ISO 8601).
    pub fn wire_value(&self, value: &str) -> String {
        let v = value.trim();
        match self.data_type.as_str() {
            "Boolean" => match v.to_ascii_lowercase().as_str() {
                "true" | "1" => "1".into(),
                _ => "0".into(),
            },
            "DateTime" if !v.contains('T') => format!("{v}T00:00:00"),
            "String" => value.to_string(),
            _ => v.to_string(),
        }
    }
}

/// The connection catalog jobs use: `[ssis]`, else `[sqlagent]`.
pub fn connection<'a>(
    ssis: Option<&'a SqlAgentConfig>,
    sqlagent: Option<&'a SqlAgentConfig>,
) -> Option<&'a SqlAgentConfig> {
    ssis.or(sqlagent)
}

/// What is wrong with the catalog jobs: (key, message) pairs for `config::validate`.
pub fn problems(
    jobs: &[CatalogJobConfig],
    ssis: Option<&SqlAgentConfig>,
    sqlagent: Option<&SqlAgentConfig>,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if jobs.is_empty() {
        return out;
    }
    match connection(ssis, sqlagent) {
        None => out.push((
            "catalog_job".to_string(),
            "catalog jobs need a SQL Server connection: add an [ssis] section (server, auth = \"windows\") or an [sqlagent] section".to_string(),
        )),
        Some(c) if c.auth != "windows" => {
            let section = if ssis.is_some() { "ssis" } else { "sqlagent" };
            out.push((
                format!("{section}.auth"),
                format!("catalog jobs need Windows authentication, but [{section}] uses auth = \"{}\": SSISDB refuses to create, start or stop executions for a SQL Server login (error 27123). Add an [ssis] section with auth = \"windows\" (on Linux also user = 'DOMAIN\\name' and password_env or password_file, for NTLM); [sqlagent] may keep its SQL login", c.auth),
            ));
        }
        Some(_) => {}
    }
    let mut names = std::collections::HashSet::new();
    for j in jobs {
        let key = |k: &str| format!("catalog_job \"{}\" {k}", j.name);
        if j.name.trim().is_empty() {
            out.push((
                "catalog_job name".into(),
                "give every catalog job a name".into(),
            ));
        } else if !names.insert(j.name.as_str()) {
            out.push((
                key("name"),
                "another catalog job has this name; names must be unique".into(),
            ));
        }
        for (k, v) in [
            ("folder", &j.folder),
            ("project", &j.project),
            ("package", &j.package),
        ] {
            if v.trim().is_empty() {
                out.push((key(k), format!("set `{k}` to the catalog {k}'s name")));
            }
        }
        if let Some(l) = j.logging_level
            && !matches!(l.value(), 0..=4)
        {
            out.push((
                key("logging_level"),
                format!(
                    "{} is not a logging level; use none, basic, performance, verbose or 0-4",
                    l.value()
                ),
            ));
        }
        let mut pnames = std::collections::HashSet::new();
        for p in &j.params {
            if !pnames.insert(p.name.as_str()) {
                out.push((
                    key("params"),
                    format!("parameter `{}` is declared twice", p.name),
                ));
            }
            if !SSIS_TYPES.contains(&p.data_type.as_str()) {
                out.push((
                    key("params"),
                    format!(
                        "parameter `{}`: type `{}` is not an SSIS type; use one of {}",
                        p.name,
                        p.data_type,
                        SSIS_TYPES.join(", ")
                    ),
                ));
            }
            if !matches!(
                p.object_type.to_ascii_lowercase().as_str(),
                "project" | "package"
            ) {
                out.push((
                    key("params"),
                    format!(
                        "parameter `{}`: object_type `{}`: use \"project\" or \"package\"",
                        p.name, p.object_type
                    ),
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sql(auth: &str) -> SqlAgentConfig {
        toml::from_str(&format!(
            "server = \"tcp:h,1\"\nauth = \"{auth}\"\nuser = \"u\"\npassword_env = \"P\"\n"
        ))
        .unwrap()
    }

    fn job(text: &str) -> CatalogJobConfig {
        toml::from_str(text).unwrap()
    }

    const JOB: &str = "name = \"J\"\nfolder = \"F\"\nproject = \"P\"\npackage = \"Pkg\"\nlogging_level = \"verbose\"\nparams = [{ name = \"N\", type = \"Int32\", object_type = \"package\" }, { name = \"S\" }]\n";

    #[test]
    fn parses_a_catalog_job() {
        let j = job(JOB);
        assert!(!j.params[0].sensitive);
        assert_eq!(j.package_file(), "Pkg.dtsx");
        assert_eq!(j.logging_level.unwrap().value(), 3);
        assert_eq!(j.param("N").unwrap().object_type_code(), 30);
        assert_eq!(j.param("S").unwrap().object_type_code(), 20);
        assert_eq!(j.param("S").unwrap().data_type, "String");
        assert!(j.param("n").is_none(), "names are case-sensitive");
        assert_eq!(
            job("name=\"J\"\nfolder=\"F\"\nproject=\"P\"\npackage=\"x.dtsx\"\nlogging_level=2\n")
                .logging_level
                .unwrap()
                .value(),
            2
        );
    }

    #[test]
    fn a_sql_login_is_refused_with_what_to_do() {
        let p = problems(&[job(JOB)], None, Some(&sql("sql")));
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].0, "sqlagent.auth");
        assert!(
            p[0].1.contains("27123")
                && p[0].1.contains("[ssis]")
                && p[0].1.contains("auth = \"windows\""),
            "{}",
            p[0].1
        );
        assert!(problems(&[job(JOB)], Some(&sql("windows")), Some(&sql("sql"))).is_empty());
        assert!(problems(&[job(JOB)], None, None)[0].1.contains("[ssis]"));
        assert!(problems(&[], None, Some(&sql("sql"))).is_empty());
    }

    #[test]
    fn bad_types_levels_and_duplicates_are_refused() {
        let bad = job(
            "name=\"J\"\nfolder=\"F\"\nproject=\"P\"\npackage=\"x\"\nlogging_level=7\nparams=[{name=\"A\", type=\"Float\"}, {name=\"A\", object_type=\"folder\"}]\n",
        );
        let p = problems(&[bad.clone(), bad], Some(&sql("windows")), None);
        let text = format!("{p:?}");
        for needle in [
            "not a logging level",
            "not an SSIS type",
            "declared twice",
            "object_type `folder`",
            "names must be unique",
        ] {
            assert!(text.contains(needle), "{needle} missing in {text}");
        }
    }

    #[test]
    fn values_are_checked_by_type() {
        let p = |t: &str| CatalogParam {
            name: "x".into(),
            data_type: t.into(),
            object_type: "project".into(),
            sensitive: false,
        };
        assert!(p("Int32").check_value("42").is_ok());
        assert!(p("Int32").check_value("4.2").is_err());
        assert!(p("Int16").check_value("70000").is_err());
        assert!(p("Boolean").check_value("True").is_ok());
        assert_eq!(p("Boolean").wire_value("True"), "1");
        assert!(p("DateTime").check_value("2026-11-24").is_ok());
        assert_eq!(
            p("DateTime").wire_value("2026-11-24"),
            "2026-11-24T00:00:00"
        );
        assert!(p("DateTime").check_value("yesterday").is_err());
        assert!(p("String").check_value("anything; DROP TABLE x").is_ok());
    }
}
