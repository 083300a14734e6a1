//! `validate()`: the rules the TOML types alone cannot express, reported with the file,
//! the line and the key, and what to do.
//!
//! Line numbers come from a second, lenient parse of the same text into `Spans`, a shadow
//! of the config that keeps only the positions of the keys the rules look at.
use std::collections::HashSet;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::{Origin, SidecarConfig};
use crate::backend::command::StepAction;

/// One thing wrong with the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line in the config file, when the value came from the file.
    pub line: Option<usize>,
    /// Where the value came from when not the file (e.g. `AGENTFLEET_LISTEN`).
    pub origin: Option<String>,
    /// The key, with the job and step it belongs to (e.g. `job "Nightly" step "load" on_success`).
    pub key: String,
    /// What is wrong and what to do.
    pub message: String,
}

pub(crate) fn render(path: &Path, problems: &[Problem]) -> String {
    let lines: Vec<String> = problems
        .iter()
        .map(|p| {
            let at = match (&p.origin, p.line) {
                (Some(origin), _) => origin.clone(),
                (None, Some(line)) => format!("{}:{line}", path.display()),
                (None, None) => path.display().to_string(),
            };
            format!("{at}: `{}`: {}", p.key, p.message)
        })
        .collect();
    if lines.len() == 1 {
        lines[0].clone()
    } else {
        format!(
            "the config has {} problems:\n{}",
            lines.len(),
            lines.join("\n")
        )
    }
}

/// 1-based line and column of a byte offset.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text.as_bytes()[..offset];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    (line, offset - line_start + 1)
}

type At = Option<Spanned<toml::Value>>;

/// Positions of the keys the rules look at (unknown keys are ignored here: the strict
/// parse has already refused them).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Spans {
    name: At,
    listen: At,
    slots: At,
    state_dir: At,
    insecure: At,
    tls: Option<TlsSpans>,
    #[serde(default)]
    job: Vec<JobSpans>,
    sqlagent: Option<ConnectionSpans>,
    ssis: Option<ConnectionSpans>,
    #[serde(default)]
    catalog_job: Vec<JobSpans>,
}

#[derive(Debug, Default, Deserialize)]
struct ConnectionSpans {
    auth: At,
}

#[derive(Debug, Default, Deserialize)]
struct TlsSpans {
    allow_clients: At,
    revoked: At,
}

#[derive(Debug, Default, Deserialize)]
struct JobSpans {
    name: At,
    params: At,
    #[serde(default)]
    step: Vec<StepSpans>,
}

#[derive(Debug, Default, Deserialize)]
struct StepSpans {
    name: At,
    run: At,
    on_success: At,
    on_failure: At,
}

impl Spans {
    pub(crate) fn parse(text: &str) -> Self {
        toml::from_str(text).unwrap_or_default()
    }
}

/// Where the layered settings came from.
#[derive(Debug, Default)]
pub(crate) struct Origins {
    pub listen: Origin,
    pub state_dir: Origin,
}

struct Report<'a> {
    text: &'a str,
    problems: Vec<Problem>,
}

impl Report<'_> {
    fn at(&mut self, at: &At, key: impl Into<String>, message: impl Into<String>) {
        let line = at.as_ref().map(|s| line_col(self.text, s.span().start).0);
        self.problems.push(Problem {
            line,
            origin: None,
            key: key.into(),
            message: message.into(),
        });
    }

    fn from(&mut self, origin: &Origin, at: &At, key: &str, message: String) {
        match origin {
            Origin::Env(name) | Origin::Flag(name) => self.problems.push(Problem {
                line: None,
                origin: Some((*name).to_owned()),
                key: key.to_owned(),
                message,
            }),
            Origin::File | Origin::Default => self.at(at, key, message),
        }
    }
}

/// Splits `host:port` (`[::1]:7443` for IPv6) into its host and port.
/// The socket path of `listen = "unix:PATH"` (insecure mode's only transport).
pub fn unix_socket_path(listen: &str) -> Option<std::path::PathBuf> {
    listen.strip_prefix("unix:").map(std::path::PathBuf::from)
}

pub(crate) fn split_listen(listen: &str) -> Option<(&str, u16)> {
    let (host, port) = listen.rsplit_once(':')?;
    let port = port.parse().ok()?;
    if host.is_empty() || (host.contains(':') && !host.starts_with('[')) {
        return None;
    }
    Some((host, port))
}

pub(crate) fn validate(
    config: &SidecarConfig,
    spans: &Spans,
    origins: &Origins,
    text: &str,
) -> Vec<Problem> {
    let mut r = Report {
        text,
        problems: Vec::new(),
    };
    if config.name.trim().is_empty() {
        r.at(&spans.name, "name", "set `name` to this sidecar's name (what plans and the coordinator call it), e.g. name = \"sql1\"");
    }
    let blame = match &origins.listen {
        Origin::Env(name) | Origin::Flag(name) => format!(" (set by {name})"),
        Origin::File | Origin::Default => String::new(),
    };
    match (unix_socket_path(&config.listen), split_listen(&config.listen)) {
        (Some(_), _) if !cfg!(unix) => r.from(
            &origins.listen,
            &spans.listen,
            "listen",
            format!("`{}`{blame}: Unix sockets exist on Unix only; listen on host:port with a [tls] section", config.listen),
        ),
        (Some(_), _) if !config.insecure => r.from(
            &origins.listen,
            &spans.listen,
            "listen",
            format!("`{}`{blame} is a Unix socket, which serves plaintext to local processes of this user only: set insecure = true to say so, or listen on host:port with a [tls] section", config.listen),
        ),
        (Some(path), _) if path.as_os_str().is_empty() || !path.is_absolute() => r.from(
            &origins.listen,
            &spans.listen,
            "listen",
            format!("`{}`{blame}: write an absolute socket path, e.g. \"unix:/run/agentfleet/sidecar.sock\"", config.listen),
        ),
        (Some(_), _) => {}
        (None, None) => r.from(
            &origins.listen,
            &spans.listen,
            "listen",
            format!("`{}` is not an address to listen on; write host:port, e.g. \"0.0.0.0:7443\" or \"127.0.0.1:7443\"", config.listen),
        ),
        // Plaintext without authentication over TCP would let any local process (and,
        // off loopback, anyone) start and stop jobs as the service account.
        (None, Some(_)) if config.insecure => r.at(
            &spans.insecure,
            "insecure",
            format!(
                "insecure = true is refused because listen is `{}`{blame}, a TCP address: plaintext without client certificates would let any process start and stop jobs as this service; add a [tls] section (see `coordinator pki`), or for a test setup listen on a Unix socket (listen = \"unix:/run/agentfleet/sidecar.sock\"), which only this user's processes may use",
                config.listen,
            ),
        ),
        (None, Some(_)) => {}
    }
    if config.slots == 0 {
        r.at(
            &spans.slots,
            "slots",
            "slots must be at least 1 (the number of executions at once)",
        );
    }
    if config.state_dir.as_os_str().is_empty() {
        r.from(
            &origins.state_dir,
            &spans.state_dir,
            "state_dir",
            "set state_dir (where the execution journal lives) in the file, pass --state-dir or set AGENTFLEET_STATE_DIR".into(),
        );
    }
    match &config.tls {
        None if !config.insecure => r.at(
            &None,
            "tls",
            "add a [tls] section with cert, key, client_ca and allow_clients (`coordinator pki` makes the files); only a test setup on a Unix socket may use insecure = true instead",
        ),
        Some(tls) if !config.insecure && tls.allow_clients.iter().all(|c| c.trim().is_empty()) => r.at(
            &spans.tls.as_ref().and_then(|t| t.allow_clients.clone()),
            "tls.allow_clients",
            "list the client certificate names allowed to call, e.g. allow_clients = [\"coordinator\"]; with none, nobody can",
        ),
        _ => {}
    }
    if let Some(tls) = &config.tls
        && tls.revoked.iter().any(|r| r.trim().is_empty())
    {
        r.at(
            &spans.tls.as_ref().and_then(|t| t.revoked.clone()),
            "tls.revoked",
            "an entry is empty; list certificate names or serial numbers (as `coordinator pki issue` printed them)",
        );
    }
    validate_jobs(config, spans, &mut r);
    for (key, message) in crate::backend::ssis::config::problems(
        &config.catalog_jobs,
        config.ssis.as_ref(),
        config.sqlagent.as_ref(),
    ) {
        let at = if key.ends_with(".auth") {
            let section = if key.starts_with("ssis") {
                &spans.ssis
            } else {
                &spans.sqlagent
            };
            section.as_ref().and_then(|s| s.auth.clone())
        } else {
            spans.catalog_job.first().and_then(|j| j.name.clone())
        };
        r.at(&at, key, message);
    }
    r.problems
}

fn validate_jobs(config: &SidecarConfig, spans: &Spans, r: &mut Report<'_>) {
    let mut job_names = HashSet::new();
    for (j, job) in config.jobs.iter().enumerate() {
        let before = r.problems.len();
        let js = spans.job.get(j);
        let job_at = js.and_then(|s| s.name.clone());
        let what = format!("job \"{}\"", job.name);
        if job.name.trim().is_empty() {
            r.at(&job_at, "job.name", "a [[job]] needs a non-empty name");
        } else if !job_names.insert(job.name.as_str()) {
            r.at(
                &job_at,
                format!("{what} name"),
                "another [[job]] has the same name; job names must be unique",
            );
        }
        let mut params = HashSet::new();
        let names = job.params.names();
        if let Err(e) = job.params.rules() {
            let params_at = js.and_then(|s| s.params.clone());
            r.at(&params_at, format!("{what} params"), e);
        }
        for p in &names {
            let valid = !p.is_empty()
                && !p.starts_with(|c: char| c.is_ascii_digit())
                && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            let params_at = js.and_then(|s| s.params.clone());
            if !valid {
                r.at(&params_at, format!("{what} params"), format!("`{p}` is not an environment variable name; use letters, digits and _ (e.g. BUSINESS_DATE)"));
            } else if !params.insert(p.as_str()) {
                r.at(
                    &params_at,
                    format!("{what} params"),
                    format!("`{p}` is listed twice"),
                );
            }
        }
        if job.steps.is_empty() {
            r.at(
                &job_at,
                format!("{what} step"),
                "the job has no steps; add at least one [[job.step]] with a name and `run`",
            );
            continue;
        }
        let mut step_names: Vec<&str> = Vec::new();
        for s in &job.steps {
            if !step_names.contains(&s.name.as_str()) {
                step_names.push(&s.name);
            }
        }
        let mut seen = HashSet::new();
        for (s, step) in job.steps.iter().enumerate() {
            let ss = js.and_then(|js| js.step.get(s));
            let field = |f: fn(&StepSpans) -> &At| ss.and_then(|ss| f(ss).clone());
            let key = |k: &str| format!("{what} step \"{}\" {k}", step.name);
            if step.name.trim().is_empty() {
                r.at(
                    &field(|s| &s.name),
                    key("name"),
                    "every step needs a non-empty name",
                );
            } else if !seen.insert(step.name.as_str()) {
                r.at(&field(|s| &s.name), key("name"), "another step of this job has the same name; step names must be unique within a job");
            }
            if step.run.first().is_none_or(|p| p.trim().is_empty()) {
                r.at(&field(|s| &s.run), key("run"), "`run` needs the program and its arguments, e.g. run = [\"dtexec\", \"/F\", \"package.dtsx\"]");
            }
            for (name, value, at) in [
                ("on_success", &step.on_success, field(|s| &s.on_success)),
                ("on_failure", &step.on_failure, field(|s| &s.on_failure)),
            ] {
                if let Some(value) = value
                    && let Err(message) = check_action(value, &step_names)
                {
                    r.at(&at, key(name), message);
                }
            }
        }
        // Backstop: the command backend's own rules, so the loader never accepts a job
        // the backend would refuse.
        if r.problems.len() == before
            && let Err(message) = job.validate()
        {
            r.at(&job_at, what.clone(), message);
        }
    }
}

/// An action that parses (the command backend's own parser) with an existing goto target.
fn check_action(value: &str, steps: &[&str]) -> Result<(), String> {
    match StepAction::parse(value)? {
        StepAction::Goto(target) if !steps.contains(&target.as_str()) => Err(format!(
            "goto target `{target}` is not a step of this job; steps are: {}",
            steps.join(", ")
        )),
        _ => Ok(()),
    }
}
