//! Connections to the SQL Server: settings built once from `[sqlagent]`, a password that
//! never prints, and a `Conn` that (re)connects lazily and classifies errors.
use std::time::Duration;

use tiberius::{AuthMethod, Client, Config, EncryptionLevel, Row, ToSql};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

use super::SqlAgentConfig;

/// Application name: identifies the sidecar's sessions in `sys.dm_exec_sessions`.
pub const APP_NAME: &str = "agentfleet-sidecar";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// A password: never logged, never printed.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// Everything needed to open a connection (cheap to clone).
#[derive(Clone, Debug)]
pub struct Settings {
    database: String,
    host: String,
    port: u16,
    encrypt: bool,
    trust_server_certificate: bool,
    auth: Auth,
}

#[derive(Clone, Debug)]
enum Auth {
    Sql {
        user: String,
        password: Secret,
    },
    /// A Windows account by name and password: NTLM (tiberius's `winauth` on Windows,
    /// `sspi-rs` on Unix). What SSISDB needs from a sidecar on Linux.
    Windows {
        user: String,
        password: Secret,
    },
    #[cfg(windows)]
    Integrated,
}

impl Settings {
    /// Reads the password (from the environment variable or file named in the config).
    pub fn from_config(cfg: &SqlAgentConfig) -> Result<Self, String> {
        let (host, port) = parse_server(&cfg.server)?;
        let auth = match cfg.auth.as_str() {
            "sql" => {
                let user = cfg
                    .user
                    .clone()
                    .filter(|u| !u.is_empty())
                    .ok_or("[sqlagent] auth = \"sql\" needs `user`")?;
                Auth::Sql {
                    user,
                    password: read_password(cfg)?,
                }
            }
            "windows" => match cfg.user.clone().filter(|u| !u.is_empty()) {
                Some(user) if user.contains('\\') || user.contains('@') => Auth::Windows {
                    user,
                    password: read_password(cfg)?,
                },
                Some(user) => {
                    return Err(format!(
                        "auth = \"windows\" with user = \"{user}\": write the account as 'DOMAIN\\name' (or name@domain)"
                    ));
                }
                #[cfg(windows)]
                None => Auth::Integrated,
                #[cfg(not(windows))]
                None => {
                    return Err(
                        "auth = \"windows\" without `user` (integrated) is only available when \
                         the sidecar runs on Windows; on Linux give user = 'DOMAIN\\name' and \
                         password_env or password_file (NTLM)"
                            .into(),
                    );
                }
            },
            other => {
                return Err(format!(
                    "[sqlagent] auth = \"{other}\": use \"sql\" or \"windows\""
                ));
            }
        };
        Ok(Self {
            database: "msdb".into(),
            host,
            port,
            encrypt: cfg.encrypt,
            trust_server_certificate: cfg.trust_server_certificate,
            auth,
        })
    }

    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The server and the login on it: two logins on one server see (and may stop)
    /// different catalog executions, so each gets a catalog poller of its own.
    pub fn login_key(&self) -> String {
        let login = match &self.auth {
            Auth::Sql { user, .. } => format!("sql {user}"),
            Auth::Windows { user, .. } => format!("windows {user}"),
            #[cfg(windows)]
            Auth::Integrated => "integrated".to_string(),
        };
        format!("{} as {login}", self.address())
    }

    /// "windows" or "sql": SSISDB's writing procedures refuse SQL logins (27123).
    pub fn auth_kind(&self) -> &'static str {
        match self.auth {
            Auth::Sql { .. } => "sql",
            _ => "windows",
        }
    }

    /// The same login, logging in to another database (SSISDB for the catalog).
    pub fn with_database(mut self, database: &str) -> Self {
        self.database = database.into();
        self
    }

    /// The same login on another instance (an Agent SSIS step's `/SERVER`).
    pub fn on_server(&self, server: &str) -> Result<Self, String> {
        let (host, port) = parse_server(server)?;
        Ok(Self {
            host,
            port,
            ..self.clone()
        })
    }

    /// Whether `server` (as an Agent step's `/SERVER` names it) is this one.
    pub fn is_server(&self, server: &str) -> bool {
        match parse_server(server) {
            Ok((h, p)) => h.eq_ignore_ascii_case(&self.host) && p == self.port,
            Err(_) => false,
        }
    }

    fn tiberius_config(&self) -> Config {
        let mut c = Config::new();
        c.host(&self.host);
        c.port(self.port);
        c.database(&self.database);
        c.application_name(APP_NAME);
        c.encryption(if self.encrypt {
            EncryptionLevel::Required
        } else {
            EncryptionLevel::Off
        });
        if self.trust_server_certificate {
            c.trust_cert();
        }
        c.command_timeout(Some(COMMAND_TIMEOUT));
        match &self.auth {
            Auth::Sql { user, password } => {
                c.authentication(AuthMethod::sql_server(user, password.expose()))
            }
            Auth::Windows { user, password } => {
                c.authentication(AuthMethod::windows(user, password.expose()))
            }
            #[cfg(windows)]
            Auth::Integrated => c.authentication(AuthMethod::Integrated),
        }
        c
    }

    /// Opens one connection.
    pub async fn connect(&self) -> Result<Client<Compat<TcpStream>>, SqlError> {
        let fut = async {
            let tcp = TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|e| {
                    SqlError::Connection(format!("failed to reach {}: {e}", self.address()))
                })?;
            let _ = tcp.set_nodelay(true);
            Client::connect(self.tiberius_config(), tcp.compat_write())
                .await
                .map_err(|e| match SqlError::from(e) {
                    SqlError::Server {
                        number, message, ..
                    } => SqlError::Login { number, message },
                    other => other,
                })
        };
        tokio::time::timeout(CONNECT_TIMEOUT, fut)
            .await
            .unwrap_or_else(|_| {
                Err(SqlError::Connection(format!(
                    "timed out connecting to {}",
                    self.address()
                )))
            })
    }
}

/// "tcp:host,port", "host,port", "host:port" or "host" (port 1433). Named instances need
/// the SQL Browser, which this build does not use: give the instance's port instead.
pub fn parse_server(server: &str) -> Result<(String, u16), String> {
    let s = server.trim();
    let s = s.strip_prefix("tcp:").unwrap_or(s);
    if s.contains('\\') {
        return Err(format!(
            "[sqlagent] server = \"{server}\": named instances are not resolved; write \"host,port\" \
             with the instance's TCP port"
        ));
    }
    let (host, port) = match s
        .rsplit_once(',')
        .or_else(|| s.rsplit_once(':').filter(|(h, _)| !h.contains(':')))
    {
        Some((h, p)) => (
            h.trim(),
            p.trim()
                .parse::<u16>()
                .map_err(|_| format!("[sqlagent] server = \"{server}\": bad port"))?,
        ),
        None => (s, 1433),
    };
    let host = match host {
        "." | "(local)" => "localhost",
        h => h,
    };
    if host.is_empty() {
        return Err(format!("[sqlagent] server = \"{server}\": no host"));
    }
    Ok((host.to_string(), port))
}

fn read_password(cfg: &SqlAgentConfig) -> Result<Secret, String> {
    if let Some(var) = &cfg.password_env {
        return std::env::var(var).map(Secret).map_err(|_| {
            format!("[sqlagent] password_env: environment variable `{var}` is not set")
        });
    }
    if let Some(path) = &cfg.password_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("[sqlagent] password_file `{}`: {e}", path.display()))?;
        return Ok(Secret(text.lines().next().unwrap_or_default().to_string()));
    }
    Err("this login needs `password_env` or `password_file`".into())
}

/// A failed round trip, classified by what the caller can do about it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SqlError {
    /// The server raised an error; the connection is still usable.
    #[error("SQL Server error {number} (severity {class}): {message}")]
    Server {
        number: i32,
        class: u8,
        message: String,
    },
    /// The login was refused (wrong password, unknown login, no access to msdb).
    #[error("login refused (error {number}): {message}")]
    Login { number: i32, message: String },
    /// The connection broke or timed out: a reply may have been lost.
    #[error("{0}")]
    Connection(String),
    #[error("{0}")]
    Other(String),
}

impl From<tiberius::error::Error> for SqlError {
    fn from(e: tiberius::error::Error) -> Self {
        use tiberius::error::Error as E;
        match e {
            E::Server(t) => SqlError::Server {
                number: t.code() as i32,
                class: t.class(),
                message: t.message().to_string(),
            },
            E::Io { .. } | E::Tls(_) | E::Protocol(_) | E::Routing { .. } => {
                SqlError::Connection(format!("connection to SQL Server failed: {e}"))
            }
            other => SqlError::Other(other.to_string()),
        }
    }
}

/// One lazily (re)opened connection.
pub struct Conn {
    settings: Settings,
    client: Option<Client<Compat<TcpStream>>>,
}

impl Conn {
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            client: None,
        }
    }

    /// Runs one query and collects all its result sets. A broken connection is dropped, so
    /// the next call reconnects (callers pace retries with a backoff).
    pub async fn query(
        &mut self,
        sql: &str,
        params: &[&dyn ToSql],
    ) -> Result<Vec<Vec<Row>>, SqlError> {
        if self.client.is_none() {
            self.client = Some(self.settings.connect().await?);
        }
        let client = self.client.as_mut().expect("connected above");
        let result = async { client.query(sql, params).await?.into_results().await }.await;
        match result {
            Ok(sets) => Ok(sets),
            Err(e) => {
                let e = SqlError::from(e);
                if !matches!(e, SqlError::Server { .. }) {
                    self.client = None;
                }
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_server_forms() {
        assert_eq!(
            parse_server("tcp:localhost,1433").unwrap(),
            ("localhost".into(), 1433)
        );
        assert_eq!(parse_server("sql1,14330").unwrap(), ("sql1".into(), 14330));
        assert_eq!(parse_server("sql1:2000").unwrap(), ("sql1".into(), 2000));
        assert_eq!(parse_server("sql1").unwrap(), ("sql1".into(), 1433));
        assert_eq!(parse_server(".").unwrap(), ("localhost".into(), 1433));
        assert!(parse_server("sql1\\INST").is_err());
        assert!(parse_server("sql1,x").is_err());
    }

    #[test]
    fn secret_never_prints() {
        let s = Secret("hunter2".into());
        assert_eq!(format!("{s:?}"), "***");
        let settings = Settings {
            database: "msdb".into(),
            host: "h".into(),
            port: 1,
            encrypt: true,
            trust_server_certificate: false,
            auth: Auth::Sql {
                user: "u".into(),
                password: s,
            },
        };
        assert!(!format!("{settings:?}").contains("hunter2"));
    }
}
