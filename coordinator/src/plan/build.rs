//! Plan text → validated [`Plan`]: decode each section, then check what spans sections
//! (unique names, `after` targets, cycles, `on` against the fleet). Problems are collected;
//! checks that would only repeat an earlier problem in other words are skipped.
use std::collections::BTreeMap;
use std::path::Path;

use agentfleet_common::duration;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::diagnostic::{Diagnostic, PlanError, Source};
use super::raw::{self, PLAN_KEYS, RawPlan, RawTask, TASK_KEYS, TOP_KEYS, key_subject};
use super::task::TaskContext;
use super::{FleetChoice, Plan, Task, graph};
use crate::fleet_config;

pub(super) fn parse(text: &str, path: &Path, choice: FleetChoice) -> Result<Plan, PlanError> {
    let src = Source { path, text };
    let root = match DeTable::parse(text) {
        Ok(root) => root.into_inner(),
        Err(e) => return Err(PlanError::invalid(vec![syntax_error(src, &e)])),
    };
    let mut out = Vec::new();
    raw::check_keys(src, &root, TOP_KEYS, "", &mut out);

    let plan = match root.get("plan") {
        Some(value) => section(src, value, PLAN_KEYS, "[plan]", &mut out)
            .and_then(|v| {
                raw::decode::<RawPlan>(src, v, "[plan]")
                    .map_err(|d| out.push(d))
                    .ok()
            })
            .unwrap_or_default(),
        None => RawPlan::default(),
    };
    let plan_params = raw::params(src, &plan.params, "[plan]", &mut out);

    let fleet = match choice {
        FleetChoice::Given(fleet) => {
            // Still read the plan's own [fleet] for unknown keys and types: it is part of
            // the file even when --fleet overrides it.
            if let Some(value) = root.get("fleet") {
                fleet_config::from_value(src, value, base_dir(path), &mut out);
            }
            fleet
        }
        FleetChoice::Inline => root.get("fleet").and_then(|value| {
            let fleet = fleet_config::from_value(src, value, base_dir(path), &mut out)?;
            out.extend(fleet.problems());
            Some(fleet)
        }),
    };

    let tables = task_tables(src, root.get("task"), &mut out);
    // Names as written, also for tasks that failed to decode, so that an `after` naming
    // one of them is not reported as a second, misleading problem.
    let names: Vec<Option<String>> = tables
        .iter()
        .map(|t| {
            t.get_ref()
                .get("name")
                .and_then(|v| v.get_ref().as_str())
                .map(str::to_owned)
        })
        .collect();
    let mut index_of: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, name) in names.iter().enumerate() {
        if let Some(name) = name {
            index_of.entry(name.as_str()).or_insert(i);
        }
    }

    let lines: Vec<usize> = tables
        .iter()
        .map(|t| match t.get_ref().get_key_value("name") {
            Some((key, _)) => src.span_line(&key.span()),
            None => src.span_line(&t.span()),
        })
        .collect();

    let mut tasks = Vec::new();
    for (index, table) in tables.iter().enumerate() {
        let subject = match &names[index] {
            Some(name) => format!("task \"{name}\""),
            None => format!("task #{}", index + 1),
        };
        let key_lines = raw::key_lines(src, table.get_ref());
        raw::check_keys(src, table.get_ref(), TASK_KEYS, &subject, &mut out);
        let known = Spanned::new(
            table.span(),
            DeValue::Table(raw::known_only(table.get_ref(), TASK_KEYS)),
        );
        match raw::decode::<RawTask>(src, known, &subject) {
            Ok(rt) => {
                let ctx = TaskContext {
                    src,
                    index,
                    subject: &subject,
                    index_of: &index_of,
                    lines: &lines,
                    fleet: fleet.as_ref(),
                };
                tasks.push(ctx.task(rt, key_lines, &plan_params, &mut out));
            }
            Err(d) => out.push(d),
        }
    }
    if tables.is_empty() && root.get("task").is_none() {
        out.push(Diagnostic {
            path: Some(path.to_owned()),
            line: None,
            subject: None,
            message: "the plan has no tasks: add a [[task]] with a name and a job, e.g.\n  \
                      [[task]]\n  name = \"stage-customers\"\n  job = \"ETL - Stage Customers\""
                .into(),
        });
    }

    let max_parallel = plan.max_parallel.as_ref().and_then(|m| {
        let value = *m.get_ref();
        if value >= 1 {
            return usize::try_from(value).ok();
        }
        out.push(src.diag(
            &m.span(),
            key_subject("[plan]", "max_parallel"),
            format!("max_parallel = {value} would never start a task: use 1 or more, or leave it out for no cap"),
        ));
        None
    });
    let timeout = plan
        .timeout
        .as_ref()
        .and_then(|t| parse_timeout(src, t, &key_subject("[plan]", "timeout"), &mut out));
    let name = match &plan.name {
        Some(n) if n.get_ref().trim().is_empty() => {
            out.push(src.diag(
                &n.span(),
                key_subject("[plan]", "name"),
                "the plan name is empty: give it a name, or leave the key out to use the file name",
            ));
            String::new()
        }
        Some(n) => n.get_ref().clone(),
        None => path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "plan".into()),
    };

    // Only with every task decoded (a dropped task would shift the indices). Other problems
    // (a missing `after` target, a bad duration) don't hide a cycle: `after` holds only
    // resolved targets, so a cycle among them is real and reported in the same pass.
    let mut graph = graph::Graph::default();
    if tasks.len() == tables.len() {
        let after: Vec<Vec<usize>> = tasks.iter().map(|t| t.after.clone()).collect();
        match graph::build(&after) {
            Ok(g) => graph = g,
            Err(cycles) => out.extend(cycles.iter().map(|c| cycle_error(src, &tasks, c))),
        }
    }
    if !out.is_empty() {
        return Err(PlanError::invalid(out));
    }
    Ok(Plan {
        name,
        max_parallel,
        timeout,
        fail_fast: plan.fail_fast,
        params: plan_params,
        tasks,
        fleet,
        path: path.to_owned(),
        dependants: graph.dependants,
        order: graph.order,
    })
}

fn base_dir(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new(""))
}

fn syntax_error(src: Source<'_>, e: &toml::de::Error) -> Diagnostic {
    let message = format!("not valid TOML: {}", e.message().trim_end());
    match e.span() {
        Some(span) => src.diag(&span, None, message),
        None => Diagnostic {
            path: Some(src.path.to_owned()),
            line: src.line_of_unplaced(e),
            subject: None,
            message,
        },
    }
}

/// A `[plan]`-like value: must be a table; returns it without its unknown keys (reported).
fn section<'i>(
    src: Source<'_>,
    value: &Spanned<DeValue<'i>>,
    allowed: &[&str],
    subject: &str,
    out: &mut Vec<Diagnostic>,
) -> Option<Spanned<DeValue<'i>>> {
    let Some(table) = value.get_ref().as_table() else {
        out.push(src.diag(
            &value.span(),
            subject.to_owned(),
            format!(
                "expected a table, found {}: write it as a {subject} section",
                value.get_ref().type_str()
            ),
        ));
        return None;
    };
    raw::check_keys(src, table, allowed, subject, out);
    Some(Spanned::new(
        value.span(),
        DeValue::Table(raw::known_only(table, allowed)),
    ))
}

/// The `[[task]]` tables, reporting a `task` that is not an array of tables.
fn task_tables<'i>(
    src: Source<'_>,
    value: Option<&Spanned<DeValue<'i>>>,
    out: &mut Vec<Diagnostic>,
) -> Vec<Spanned<DeTable<'i>>> {
    let Some(value) = value else {
        return Vec::new();
    };
    let hint = "write each task as a [[task]] table (two brackets): a plan holds a list of tasks";
    let Some(items) = value.get_ref().as_array() else {
        out.push(src.diag(
            &value.span(),
            "key `task`".to_owned(),
            format!(
                "expected a list of tables, found {}: {hint}",
                value.get_ref().type_str()
            ),
        ));
        return Vec::new();
    };
    let mut tables = Vec::new();
    for item in items {
        match item.get_ref().as_table() {
            Some(t) => tables.push(Spanned::new(item.span(), t.clone())),
            None => out.push(src.diag(
                &item.span(),
                "key `task`".to_owned(),
                format!(
                    "expected a table, found {}: {hint}",
                    item.get_ref().type_str()
                ),
            )),
        }
    }
    tables
}

/// Parses a timeout; zero is refused because it would stop the work at once.
pub(super) fn parse_timeout(
    src: Source<'_>,
    text: &Spanned<String>,
    subject: &str,
    out: &mut Vec<Diagnostic>,
) -> Option<std::time::Duration> {
    match duration::parse(text.get_ref()) {
        Ok(d) if d.is_zero() => {
            out.push(src.diag(&text.span(), subject.to_owned(), "a timeout of 0 would stop at once: give a positive duration, or leave the key out for no timeout"));
            None
        }
        Ok(d) => Some(d),
        Err(message) => {
            out.push(src.diag(&text.span(), subject.to_owned(), message));
            None
        }
    }
}

fn cycle_error(src: Source<'_>, tasks: &[Task], cycle: &[usize]) -> Diagnostic {
    let path: Vec<String> = cycle
        .iter()
        .map(|&i| format!("\"{}\"", tasks[i].name))
        .collect();
    let first = &tasks[cycle[0]];
    Diagnostic {
        path: Some(src.path.to_owned()),
        line: Some(first.line_of("after")),
        subject: Some(format!("task \"{}\" key `after`", first.name)),
        message: format!(
            "dependency cycle: {} (each waits for the next, so none can start); remove one of these `after` entries",
            path.join(" → ")
        ),
    }
}
