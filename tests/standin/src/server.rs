//! Listener and per-connection state machine:
//! peek → (strict TLS) → PRELOGIN → (wrapped TLS) → LOGIN7 → requests until EOF.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::agent::Caller;
use crate::dispatch::{self, ConnInfo, Request};
use crate::response::{self, Chunk, Flavour, Reply};
use crate::tds::packet::{self, Message, STATUS_EOM, kind};
use crate::tds::tokens::{self, ServerMessage, done};
use crate::tds::{login, ntlm, prelogin, rpc, tls};
use crate::{CapturedRequest, FailMode, Shared};

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub(crate) async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    loop {
        let (sock, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
        };
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(sock, shared, shutdown).await {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
        });
    }
}

fn unexpected(m: &Message) -> anyhow::Error {
    anyhow::anyhow!("unexpected packet type 0x{:02X}", m.kind)
}

async fn read_required<S: AsyncRead + Unpin>(s: &mut S) -> anyhow::Result<Message> {
    packet::read_message(s)
        .await?
        .ok_or_else(|| anyhow::anyhow!("client closed the connection"))
}

/// Handles PRELOGIN and any TLS, returning the stream to speak TDS on.
async fn negotiate(sock: TcpStream, shared: &Shared) -> anyhow::Result<Box<dyn Io>> {
    let mut first = [0u8; 1];
    sock.peek(&mut first).await?;
    if first[0] == 0x16 {
        // TDS 8.0 strict: TLS first, then PRELOGIN inside it (its answer is ignored by tiberius).
        let t = shared
            .tls
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("TDS 8.0 strict client but TLS is off"))?;
        let mut s = tokio_rustls::TlsAcceptor::from(t.strict.clone())
            .accept(sock)
            .await?;
        let m = read_required(&mut s).await?;
        if m.kind != kind::PRELOGIN {
            return Err(unexpected(&m));
        }
        let resp = prelogin::encode_response(prelogin::ENCRYPT_ON);
        s.write_all(&packet::frame(kind::RESPONSE, &resp, 4096, 0))
            .await?;
        s.flush().await?;
        return Ok(Box::new(s));
    }
    let mut sock = sock;
    let m = read_required(&mut sock).await?;
    if m.kind != kind::PRELOGIN {
        return Err(unexpected(&m));
    }
    let client = prelogin::parse(&m.payload)?;
    let answer = prelogin::answer_encryption(client.encryption, shared.tls.is_some());
    let resp = prelogin::encode_response(answer);
    sock.write_all(&packet::frame(kind::RESPONSE, &resp, 4096, 0))
        .await?;
    match (answer, &shared.tls) {
        (prelogin::ENCRYPT_ON, Some(t)) => {
            // TLS 1.2 handshake inside 0x12 packets, then raw TLS.
            let wrapped = tls::PreloginWrapped::new(sock);
            let mut s = tokio_rustls::TlsAcceptor::from(t.wrapped.clone())
                .accept(wrapped)
                .await?;
            s.get_mut().0.set_passthrough();
            Ok(Box::new(s))
        }
        _ => Ok(Box::new(sock)),
    }
}

async fn connection(
    sock: TcpStream,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    sock.set_nodelay(true)?;
    let mut drop_rx = shared.drop_tx.subscribe();
    let mut stream = tokio::select! {
        s = negotiate(sock, &shared) => s?,
        _ = shutdown.cancelled() => return Ok(()),
    };
    let m = read_required(&mut stream).await?;
    if m.kind != kind::LOGIN7 {
        return Err(unexpected(&m));
    }
    let l = login::parse(&m.payload)?;
    let spid = shared.next_spid.fetch_add(1, Ordering::Relaxed);
    let (account, name) = if l.integrated {
        windows_login(&mut stream, &shared, &l, spid).await?
    } else {
        // A Windows principal has no SQL Server password: SQL authentication fails for it.
        let account = shared
            .jobs
            .logins
            .iter()
            .find(|a| a.user == l.user && !a.windows);
        (account.filter(|a| a.password == l.password), l.user.clone())
    };
    let Some(account) = account else {
        tracing::info!(user = %name, "login failed");
        let out = packet::frame(kind::RESPONSE, &login::encode_failure(&name), 4096, spid);
        stream.write_all(&out).await?;
        stream.flush().await?;
        let _ = stream.shutdown().await;
        return Ok(());
    };
    let packet_size = login::negotiated_packet_size(l.packet_size);
    let database = if l.database.is_empty() {
        "msdb"
    } else {
        l.database.as_str()
    };
    let out = packet::frame(
        kind::RESPONSE,
        &login::encode_success(database, packet_size),
        packet_size,
        spid,
    );
    stream.write_all(&out).await?;
    stream.flush().await?;
    tracing::debug!(user = %l.user, app = %l.app_name, spid, "logged in");

    let info = ConnInfo {
        caller: Caller::from_login(account),
        app_name: l.app_name.clone(),
        spid,
        database: database.to_string(),
    };
    let (mut rd, wr) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel::<Message>(8);
    // A dedicated reader keeps reads cancel-safe while a reply waits for ATTENTION.
    let reader = tokio::spawn(async move {
        while let Ok(Some(m)) = packet::read_message(&mut rd).await {
            if tx.send(m).await.is_err() {
                break;
            }
        }
    });
    let mut w = Writer {
        io: wr,
        packet_size,
        spid,
        next_id: 0,
    };
    let result = async {
        loop {
            let m = tokio::select! {
                m = rx.recv() => match m { Some(m) => m, None => return Ok(()) },
                _ = drop_rx.changed() => return Ok(()),
                _ = shutdown.cancelled() => return Ok(()),
            };
            match m.kind {
                kind::ATTENTION => w.attention_ack().await?,
                kind::SQL_BATCH | kind::RPC => {
                    if !request(&shared, &info, &m, &mut w, &mut rx, &mut drop_rx).await? {
                        return Ok(());
                    }
                }
                kind::TRANSACTION_MANAGER => {
                    let mut b = Vec::new();
                    tokens::put_done(tokens::DONE, done::FINAL, 0, 0, &mut b);
                    w.send(&b, STATUS_EOM).await?;
                }
                other => anyhow::bail!("unexpected packet type 0x{other:02X} after login"),
            }
        }
    }
    .await;
    reader.abort();
    let _ = w.io.shutdown().await;
    result
}

/// NTLM inside the login: answers LOGIN7's NEGOTIATE with a CHALLENGE (SSPI token), reads
/// the AUTHENTICATE and verifies it against a Windows login of the jobs file. Returns the
/// account (`None`: login failed) and the name the client authenticated as.
async fn windows_login<'a, S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    shared: &'a Shared,
    l: &login::Login7,
    spid: u16,
) -> anyhow::Result<(Option<&'a crate::config::LoginConfig>, String)> {
    if !ntlm::is_negotiate(&l.sspi) {
        // Kerberos/SPNEGO (tiberius's Integrated on Windows or GSSAPI) is not simulated.
        return Ok((None, String::new()));
    }
    let mut server_challenge = [0u8; 8];
    server_challenge.copy_from_slice(&uuid::Uuid::new_v4().as_bytes()[..8]);
    let mut b = Vec::new();
    tokens::put_sspi(&ntlm::challenge(server_challenge, "STANDIN"), &mut b);
    stream
        .write_all(&packet::frame(kind::RESPONSE, &b, 4096, spid))
        .await?;
    stream.flush().await?;
    let m = read_required(stream).await?;
    if m.kind != kind::SSPI && m.kind != kind::LOGIN7 {
        return Err(unexpected(&m));
    }
    let auth = ntlm::parse_authenticate(&m.payload)?;
    let name = auth.login_name();
    let account = shared.jobs.logins.iter().find(|a| {
        a.windows
            && a.user.eq_ignore_ascii_case(&name)
            && ntlm::verify(&auth, server_challenge, &a.password)
    });
    Ok((account, name))
}

struct Writer<W> {
    io: W,
    packet_size: usize,
    spid: u16,
    next_id: u8,
}

impl<W: AsyncWrite + Unpin> Writer<W> {
    async fn send(&mut self, payload: &[u8], last_status: u8) -> std::io::Result<()> {
        let mut out = Vec::with_capacity(payload.len() + 64);
        packet::frame_into(
            kind::RESPONSE,
            payload,
            self.packet_size,
            self.spid,
            last_status,
            &mut self.next_id,
            &mut out,
        );
        self.io.write_all(&out).await?;
        self.io.flush().await
    }

    async fn attention_ack(&mut self) -> std::io::Result<()> {
        let mut b = Vec::new();
        tokens::put_done(tokens::DONE, done::ATTN, 0, 0, &mut b);
        self.send(&b, STATUS_EOM).await
    }
}

/// Decodes, dispatches and answers one request. Returns false when the connection must close.
async fn request<W: AsyncWrite + Unpin>(
    shared: &Shared,
    info: &ConnInfo,
    m: &Message,
    w: &mut Writer<W>,
    rx: &mut mpsc::Receiver<Message>,
    drop_rx: &mut tokio::sync::watch::Receiver<u64>,
) -> anyhow::Result<bool> {
    let (flavour, decoded) = if m.kind == kind::SQL_BATCH {
        (
            Flavour::Batch,
            rpc::parse_batch(&m.payload).map(Request::batch),
        )
    } else {
        (
            Flavour::Rpc,
            rpc::parse_rpc(&m.payload).map(Request::from_rpc),
        )
    };
    let reply = match decoded {
        Err(e) => Reply::error(ServerMessage::new(
            50000,
            16,
            format!("sqlagent-standin: could not decode the request: {e}"),
        )),
        Ok(req) => {
            tracing::debug!(
                spid = info.spid,
                marker = req.marker(),
                procedure = req.procedure.as_deref(),
                "request"
            );
            shared.capture(CapturedRequest {
                login: info.caller.login.clone(),
                app_name: info.app_name.clone(),
                marker: req.marker().map(str::to_string),
                sql: req.text.clone(),
                params: req.params.clone(),
            });
            match shared.take_failure() {
                Some(FailMode::Disconnect) => return Ok(false),
                Some(FailMode::Error(e)) => Reply::error(e),
                None if !dispatch::wait_history_lock(&shared.agent, &req).await => {
                    dispatch::lock_timeout_reply(&shared.agent, info, &req)
                }
                None => dispatch::handle(&shared.agent, info, &req),
            }
        }
    };
    let mut pending: Vec<u8> = Vec::new();
    for chunk in response::encode(&reply, flavour) {
        let wait = match chunk {
            Chunk::Tokens(t) => {
                pending.extend(t);
                continue;
            }
            Chunk::Disconnect => {
                if !pending.is_empty() {
                    w.send(&pending, 0x00).await?;
                }
                return Ok(false);
            }
            Chunk::Pause(d) => Some(d),
            Chunk::Hold => None,
        };
        // Send what is ready without EOM, then wait; an ATTENTION ends the reply.
        if !pending.is_empty() {
            w.send(&std::mem::take(&mut pending), 0x00).await?;
        }
        let sleep = async {
            match wait {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = sleep => {}
            _ = drop_rx.changed() => return Ok(false),
            next = rx.recv() => match next {
                Some(n) if n.kind == kind::ATTENTION => {
                    w.attention_ack().await?;
                    return Ok(true);
                }
                Some(n) => anyhow::bail!("packet type 0x{:02X} while a reply was open", n.kind),
                None => return Ok(false),
            },
        }
    }
    w.send(&pending, STATUS_EOM).await?;
    Ok(true)
}
