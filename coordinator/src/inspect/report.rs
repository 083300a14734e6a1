//! `coordinator report RUN [--out FILE]` and `show RUN --timeline`: a run's timeline from
//! the store, as a self-contained HTML page or as text lanes.
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use super::{emit, open, store_error};
use crate::cli::{ReportArgs, ShowArgs};
use crate::error::{CliError, exit};
use crate::timeline;

/// Width of the text timeline when it is not drawn on a terminal (and `COLUMNS` is unset).
const DEFAULT_WIDTH: usize = 100;

/// Writes the report of `args.run` and prints its path on stderr.
pub async fn report(home: Option<&Path>, args: ReportArgs) -> Result<i32, CliError> {
    let home = home.map(Path::to_owned);
    tokio::task::spawn_blocking(move || {
        let path = write_report(home.as_deref(), &args.run, args.out.as_deref())?;
        eprintln!("report written to {}", path.display());
        Ok(exit::OK)
    })
    .await
    .map_err(|e| CliError::failed(format!("report: {e}")))?
}

/// Writes the report of the run `spec` names to `out`, by default `HOME/reports/RUN.html`
/// (the store's private directory: the page holds job output). Returns the file's path.
pub fn write_report(
    home: Option<&Path>,
    spec: &str,
    out: Option<&Path>,
) -> Result<PathBuf, CliError> {
    let store = open(home)?;
    let run = store.resolve_run(spec).map_err(store_error)?;
    let timeline =
        timeline::build(&store, &run.run_id, agentfleet_common::now_ms()).map_err(store_error)?;
    let page = timeline::html::render(&timeline);
    let path = match out {
        Some(out) => out.to_owned(),
        None => {
            let home = crate::store::home_dir(home).map_err(store_error)?;
            let dir = home.join("reports");
            agentfleet_common::private::create_dir(&dir, false).map_err(|e| {
                CliError::failed(format!("failed to create {}: {e}", dir.display()))
            })?;
            dir.join(format!("{}.html", run.run_id))
        }
    };
    let failed =
        |e: std::io::Error| CliError::failed(format!("failed to write {}: {e}", path.display()));
    agentfleet_common::private::create_file(&path).map_err(failed)?;
    std::fs::write(&path, page).map_err(failed)?;
    Ok(std::path::absolute(&path).unwrap_or(path))
}

/// `show RUN --timeline`: the lanes in the terminal's width; colour only on a terminal
/// and without `NO_COLOR`.
pub fn show_timeline(home: Option<&Path>, args: &ShowArgs) -> Result<i32, CliError> {
    let store = open(home)?;
    let run = store.resolve_run(&args.run).map_err(store_error)?;
    let timeline =
        timeline::build(&store, &run.run_id, agentfleet_common::now_ms()).map_err(store_error)?;
    let terminal = std::io::stdout().is_terminal();
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let width = terminal
        .then(|| {
            console::Term::stdout()
                .size_checked()
                .map(|(_, cols)| usize::from(cols))
        })
        .flatten()
        .or_else(|| std::env::var("COLUMNS").ok()?.parse().ok())
        .unwrap_or(DEFAULT_WIDTH);
    let text = timeline::text::render(&timeline, width, terminal && !no_color);
    emit(|out| out.write_all(text.as_bytes()))
}
