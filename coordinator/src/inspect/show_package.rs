//! `show RUN`: the SSIS package under a step that ran one: its catalog execution, then
//! each task or container (sub-step) with status and duration, and the rows of each of
//! its data-flow paths.
//!
//! ```text
//!         1 Load Sales  failed     2.9s  package failed
//!           catalog execution 12345 on SQL1 · ETL\Sales\Load Sales.dtsx · failed
//!           \Load Sales\Truncate   succeeded  300ms
//!           \Load Sales\Copy rows  failed     2.1s  bad row
//!             OLE DB Source Output  2500 rows  Sales source → Sales table
//!           \Load Sales\Check      running    …
//! ```
use std::fmt::Write as _;

use super::show::{message, ms};
use crate::report::terminal_safe;
use crate::sub_steps::StepPackage;

/// Indent of a package's lines (under the step's name).
const INDENT: &str = "          ";

/// Appends `package`'s lines to `out`.
pub fn render_package(out: &mut String, package: &StepPackage) {
    if let Some(c) = &package.catalog {
        let _ = writeln!(
            out,
            "{INDENT}catalog execution {} on {} · {}\\{}\\{} · {}",
            c.catalog_execution_id,
            terminal_safe(&c.server),
            terminal_safe(&c.folder),
            terminal_safe(&c.project),
            terminal_safe(&c.package),
            c.status
        );
    }
    let width = package
        .sub_steps
        .iter()
        .map(|s| s.path.chars().count())
        .max()
        .unwrap_or(0);
    for s in &package.sub_steps {
        let took = s.duration_ms.map(ms).unwrap_or_else(|| "…".into());
        let _ = writeln!(
            out,
            "{INDENT}{:<width$}  {:<9}  {took}{}",
            terminal_safe(&s.path),
            s.status,
            message(&s.message)
        );
        for r in &s.rows {
            let _ = writeln!(
                out,
                "{INDENT}  {}  {} rows  {} → {}",
                terminal_safe(&r.data_flow_path),
                r.rows,
                terminal_safe(&r.source_component),
                terminal_safe(&r.destination_component)
            );
        }
    }
}
