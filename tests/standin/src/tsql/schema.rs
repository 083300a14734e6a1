//! The schema fixtures: msdb / master tables, views and procedures (`schema/msdb.toml`) and
//! the SSIS catalog's views and procedures (`schema/ssisdb.toml`), with the Microsoft Learn
//! page each entry comes from.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(rename = "table")]
    tables: Vec<TableEntry>,
    #[serde(rename = "procedure")]
    procedures: Vec<ProcEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TableEntry {
    name: String,
    #[allow(dead_code)]
    source: String,
    #[allow(dead_code)]
    complete: bool,
    columns: Vec<(String, String)>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProcEntry {
    name: String,
    #[allow(dead_code)]
    source: String,
    #[serde(default)]
    positional: usize,
    parameters: Vec<(String, String)>,
}

/// A table or view: column name (lower case) → type.
#[derive(Debug)]
pub struct Table {
    pub columns: HashMap<String, String>,
}

#[derive(Debug)]
pub struct Procedure {
    /// Parameter name with `@`, lower case → type.
    pub parameters: HashMap<String, String>,
    /// How many positional arguments it takes (undocumented extended procedures).
    pub positional: usize,
}

#[derive(Debug)]
pub struct Schema {
    pub tables: HashMap<String, Table>,
    pub procedures: HashMap<String, Procedure>,
}

pub const FIXTURE: &str = include_str!("../../schema/msdb.toml");
pub const SSISDB_FIXTURE: &str = include_str!("../../schema/ssisdb.toml");

impl Schema {
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let f: File = toml::from_str(text)?;
        let lower = |v: Vec<(String, String)>| {
            v.into_iter()
                .map(|(n, t)| (n.to_lowercase(), t))
                .collect::<HashMap<_, _>>()
        };
        Ok(Self {
            tables: f
                .tables
                .into_iter()
                .map(|t| {
                    (
                        t.name.to_lowercase(),
                        Table {
                            columns: lower(t.columns),
                        },
                    )
                })
                .collect(),
            procedures: f
                .procedures
                .into_iter()
                .map(|p| {
                    (
                        p.name.to_lowercase(),
                        Procedure {
                            parameters: lower(p.parameters),
                            positional: p.positional,
                        },
                    )
                })
                .collect(),
        })
    }

    /// The fixtures shipped with the stand-in (msdb / master and SSISDB), merged.
    pub fn get() -> &'static Schema {
        static SCHEMA: OnceLock<Schema> = OnceLock::new();
        SCHEMA.get_or_init(|| {
            let mut s = Schema::parse(FIXTURE).expect("schema/msdb.toml is valid");
            let ssisdb = Schema::parse(SSISDB_FIXTURE).expect("schema/ssisdb.toml is valid");
            s.tables.extend(ssisdb.tables);
            s.procedures.extend(ssisdb.procedures);
            s
        })
    }

    /// Whether a (lower-case, unbracketed, [`normalize`](Self::normalize)d) name is in a
    /// database the fixtures describe: `msdb.*.*`, `master.*.*`, `ssisdb.*.*`, or a `sys.*`
    /// catalog view.
    pub fn covers(name: &str) -> bool {
        name.starts_with("msdb.")
            || name.starts_with("master.")
            || name.starts_with("ssisdb.")
            || name.starts_with("sys.")
    }

    /// A two-part `catalog.x` name is SSISDB's `catalog` schema (the SSIS backend's
    /// connection uses database SSISDB); every other name is kept as written.
    pub fn normalize(name: String) -> String {
        if name.starts_with("catalog.") && name.split('.').count() == 2 {
            format!("ssisdb.{name}")
        } else {
            name
        }
    }
}
