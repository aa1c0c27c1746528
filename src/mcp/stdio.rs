//! The stdio transport: one JSON-RPC message per line on stdin and stdout, in front of
//! rmcp's service loop.
//!
//! rmcp's own line transport drops what it cannot read without a word (a line that is
//! not JSON, a number out of range, a line over its 16 MiB limit) and answers a batch
//! with a bare "Invalid request", so a client waits for its own timeout. This one owns
//! the edge of the wire: every line gets an answer. A line that does not parse, or is
//! over [`MAX_LINE`], gets -32700 (with the request's id when the start of the line
//! shows it); a batch array is run when the session negotiated 2025-03-26 (the one MCP
//! version with JSON-RPC batches) and answered as one array, and otherwise refused with
//! an error per request saying why; a message that is JSON-RPC but not a readable MCP
//! message gets -32602 or -32600. A plain `tools/call` takes the fast path
//! (`stdio_fast.rs`: the call is run and answered without rmcp's message parsing and
//! service loop). Everything else goes to rmcp unchanged. It must not hold a line's text
//! in a log: only ids, codes and messages.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use rmcp::RoleServer;
use rmcp::model::{
    ClientJsonRpcMessage, ClientNotification, ClientRequest, JsonRpcMessage, ServerJsonRpcMessage,
    ServerResult,
};
use rmcp::transport::Transport;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncWrite, AsyncWriteExt as _, BufReader};

use crate::telemetry::rpc_errors;

#[path = "stdio_fast.rs"]
mod fast;
pub(crate) use fast::Fast;

/// The longest line read, as rmcp's limit: 16 MiB.
pub(crate) const MAX_LINE: usize = 16 * 1024 * 1024;
/// How much of an over-long line is kept to find its id.
const HEAD: usize = 4096;
/// The protocol version that has JSON-RPC batches (added in it, removed in 2025-06-18).
const BATCH_VERSION: &str = "2025-03-26";

/// What the reader and writer halves share.
#[derive(Debug, Default)]
struct Session {
    /// The id of the `initialize` request, until its answer is seen.
    initialize: Option<Value>,
    /// The protocol version the session negotiated (from the `initialize` answer).
    protocol: Option<String>,
    /// Batches whose requests are still being answered, oldest first.
    batches: Vec<Batch>,
}

/// One batch of a 2025-03-26 session: the ids it still waits for, the answers so far.
#[derive(Debug)]
struct Batch {
    waiting: HashSet<String>,
    answers: Vec<Value>,
}

/// The transport over a reader and a writer (stdin and stdout in `serve`).
pub(crate) struct LineTransport<R, W> {
    reader: BufReader<R>,
    /// The line being read. It survives a cancelled read (rmcp polls `receive` in a
    /// `select!`), so the next call resumes it; it is cleared once handled.
    line: Vec<u8>,
    /// The line being read is over [`MAX_LINE`]: only its head is kept.
    oversized: bool,
    writer: Arc<tokio::sync::Mutex<W>>,
    session: Arc<Mutex<Session>>,
    /// Messages of a batch, handed to rmcp one at a time.
    queue: VecDeque<ClientJsonRpcMessage>,
    /// The `tools/call` fast path's calls and the session's handler.
    fast: Arc<Fast>,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> LineTransport<R, W> {
    pub(crate) fn new(reader: R, writer: W) -> Self {
        Self {
            reader: BufReader::new(reader),
            line: Vec::new(),
            oversized: false,
            writer: Arc::new(tokio::sync::Mutex::new(writer)),
            session: Arc::new(Mutex::new(Session::default())),
            queue: VecDeque::new(),
            fast: Arc::default(),
        }
    }

    /// The fast path's share of the session, which the handler joins at `initialize`.
    pub(crate) fn fast(&self) -> Arc<Fast> {
        Arc::clone(&self.fast)
    }
}

/// One read of a line.
enum Read {
    Line,
    /// Over [`MAX_LINE`]: dropped, its first bytes kept in `line`.
    Oversized,
    Eof,
}

impl<R: AsyncRead + Unpin, W> LineTransport<R, W> {
    /// Reads up to the end of a line into `self.line` (without its newline), never
    /// holding more than [`MAX_LINE`] bytes of it. Cancellation-safe: `fill_buf` takes
    /// nothing, and what is taken is in `self.line` before the next await.
    async fn read_line(&mut self) -> std::io::Result<Read> {
        loop {
            let available = self.reader.fill_buf().await?;
            if available.is_empty() {
                // A last line without a newline is still a message.
                return Ok(if self.oversized {
                    Read::Oversized
                } else if self.line.is_empty() {
                    Read::Eof
                } else {
                    Read::Line
                });
            }
            let newline = available.iter().position(|b| *b == b'\n');
            let chunk = available
                .get(..newline.unwrap_or(available.len()))
                .unwrap_or_default();
            if self.oversized || self.line.len() + chunk.len() > MAX_LINE {
                // Keep the head only: it may show the request's id.
                let room = HEAD.saturating_sub(self.line.len()).min(chunk.len());
                self.line
                    .extend_from_slice(chunk.get(..room).unwrap_or_default());
                self.line.truncate(HEAD);
                self.oversized = true;
            } else {
                self.line.extend_from_slice(chunk);
            }
            let used = newline.map_or(available.len(), |i| i + 1);
            self.reader.consume(used);
            if newline.is_some() {
                return Ok(if self.oversized {
                    Read::Oversized
                } else {
                    Read::Line
                });
            }
        }
    }
}

impl<R, W> LineTransport<R, W>
where
    W: AsyncWrite + Unpin + Send + 'static,
{
    /// Writes `value` as a line from a task of its own: `receive` may be cancelled at
    /// any await, and a write cut in half would corrupt the stream.
    fn answer(&self, value: Value) {
        let writer = Arc::clone(&self.writer);
        tokio::spawn(async move {
            if let Err(e) = write_line(&writer, &value).await {
                tracing::warn!(error = %e, "cannot write an error answer to stdout");
            }
        });
    }

    /// Handles the line in `self.line`; returns what rmcp gets, if anything.
    fn handle(&mut self, read: &Read) -> Option<ClientJsonRpcMessage> {
        if matches!(read, Read::Oversized) {
            let msg = format!(
                "parse error: the message is over the limit of {MAX_LINE} bytes (16 MiB) for \
                 one line; it was not read"
            );
            self.answer(error(sniff_id(&self.line), -32700, &msg));
            return None;
        }
        let line = trim(&self.line);
        if line.is_empty() {
            return None;
        }
        let fast = {
            let s = self.lock();
            s.batches.is_empty() && s.protocol.as_deref().is_some_and(fast::legacy)
        };
        if fast && self.fast.take(line, &self.writer) {
            return None;
        }
        match serde_json::from_slice::<ClientJsonRpcMessage>(line) {
            Ok(msg) => {
                self.note(&msg);
                Some(msg)
            }
            Err(e) => {
                let line = line.to_vec();
                self.unreadable(&line, &e)
            }
        }
    }

    /// A line rmcp cannot read as a message: a parse error, a batch, or a message of the
    /// wrong shape. Returns what rmcp gets now, if anything.
    fn unreadable(&mut self, line: &[u8], why: &serde_json::Error) -> Option<ClientJsonRpcMessage> {
        match serde_json::from_slice::<Value>(line) {
            Err(e) => {
                let msg = format!(
                    "parse error: the line is not JSON that mcpd can read ({e}); send one \
                     JSON-RPC message per line"
                );
                self.answer(error(sniff_id(line), -32700, &msg));
                None
            }
            Ok(Value::Array(items)) => {
                self.batch(items);
                self.queue.pop_front()
            }
            Ok(one) => {
                if let Some(answer) = refusal(&one, why) {
                    self.answer(answer);
                }
                None
            }
        }
    }

    /// Notes the id of an `initialize` request, to read the version its answer agrees.
    /// Cancels a call on the fast path that `notifications/cancelled` names (rmcp gets
    /// the notification too).
    fn note(&self, msg: &ClientJsonRpcMessage) {
        if let JsonRpcMessage::Request(r) = msg
            && matches!(r.request, ClientRequest::InitializeRequest(_))
        {
            self.lock().initialize = serde_json::to_value(&r.id).ok();
        }
        if let JsonRpcMessage::Notification(n) = msg
            && let ClientNotification::CancelledNotification(c) = &n.notification
            && let Some(id) = &c.params.request_id
        {
            self.fast.cancel(id);
        }
    }

    /// A batch array: run on 2025-03-26, refused on every other version.
    fn batch(&mut self, items: Vec<Value>) {
        if items.is_empty() {
            self.answer(error(None, -32600, "invalid request: an empty batch"));
            return;
        }
        let protocol = self.lock().protocol.clone();
        if protocol.as_deref() != Some(BATCH_VERSION) {
            let version = protocol.as_deref().unwrap_or("not negotiated yet");
            let why = format!(
                "JSON-RPC batches are not part of this session's MCP protocol version ({version}; \
                 only {BATCH_VERSION} has them): send each message on its own line"
            );
            let answers: Vec<Value> = items
                .iter()
                .filter_map(|m| m.get("id"))
                .map(|id| error(Some(id.clone()), -32600, &why))
                .collect();
            self.answer(if answers.is_empty() {
                error(None, -32600, &why)
            } else {
                Value::Array(answers)
            });
            return;
        }
        let mut batch = Batch {
            waiting: HashSet::new(),
            answers: Vec::new(),
        };
        for item in items {
            match serde_json::from_str::<ClientJsonRpcMessage>(&item.to_string()) {
                Ok(msg) => {
                    if let JsonRpcMessage::Request(r) = &msg {
                        let id = serde_json::to_value(&r.id).unwrap_or_default();
                        batch.waiting.insert(id_key(&id));
                    }
                    self.note(&msg);
                    self.queue.push_back(msg);
                }
                Err(e) => batch.answers.extend(refusal(&item, &e)),
            }
        }
        if batch.waiting.is_empty() {
            // Only notifications and refusals: nothing more will come for it.
            if !batch.answers.is_empty() {
                self.answer(Value::Array(batch.answers));
            }
        } else {
            self.lock().batches.push(batch);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Session> {
        self.session.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<R, W> Transport<RoleServer> for LineTransport<R, W>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    type Error = std::io::Error;

    fn send(
        &mut self,
        item: ServerJsonRpcMessage,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let writer = Arc::clone(&self.writer);
        let session = Arc::clone(&self.session);
        async move {
            let id = match &item {
                JsonRpcMessage::Response(r) => Some(serde_json::to_value(&r.id)?),
                JsonRpcMessage::Error(e) => e.id.as_ref().map(serde_json::to_value).transpose()?,
                _ => None,
            };
            let batch = {
                let mut s = session.lock().unwrap_or_else(PoisonError::into_inner);
                if let JsonRpcMessage::Response(r) = &item
                    && let ServerResult::InitializeResult(init) = &r.result
                    && id.is_some()
                    && s.initialize == id
                {
                    s.initialize = None;
                    s.protocol = Some(init.protocol_version.as_str().to_owned());
                }
                match id {
                    Some(id) if s.in_batch(&id) => {
                        Some(s.collect(&id, serde_json::to_value(&item)?))
                    }
                    _ => None,
                }
            };
            match batch {
                // Its batch is complete: the answers go out as one array.
                Some(Some(answers)) => write_line(&writer, &answers).await,
                // Its batch still waits for others.
                Some(None) => Ok(()),
                None => write_line(&writer, &item).await,
            }
        }
    }

    async fn receive(&mut self) -> Option<ClientJsonRpcMessage> {
        loop {
            if let Some(msg) = self.queue.pop_front() {
                return Some(msg);
            }
            let read = match self.read_line().await {
                Ok(Read::Eof) => {
                    // The calls in flight on the fast path are answered first, as rmcp
                    // answers its own before closing.
                    self.fast.drain().await;
                    return None;
                }
                Ok(read) => read,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read stdin; the session ends");
                    return None;
                }
            };
            // No await from here on: the whole line is handled, then forgotten.
            let msg = self.handle(&read);
            self.line.clear();
            self.oversized = false;
            if let Some(msg) = msg {
                return Some(msg);
            }
        }
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        self.writer.lock().await.shutdown().await
    }
}

impl Session {
    /// Whether an answer with this id belongs to a batch still being answered.
    fn in_batch(&self, id: &Value) -> bool {
        let key = id_key(id);
        self.batches.iter().any(|b| b.waiting.contains(&key))
    }

    /// Adds an answer to its batch; returns the batch's array once it is complete.
    fn collect(&mut self, id: &Value, answer: Value) -> Option<Value> {
        let key = id_key(id);
        let at = self.batches.iter().position(|b| b.waiting.contains(&key))?;
        let batch = self.batches.get_mut(at)?;
        batch.waiting.remove(&key);
        batch.answers.push(answer);
        if !batch.waiting.is_empty() {
            return None;
        }
        let done = self.batches.remove(at);
        Some(Value::Array(done.answers))
    }
}

/// The answer to a JSON value that is not a message rmcp reads (`why`): -32600 naming
/// the envelope's fault, else (a well-formed request) -32602 for a standard method whose
/// params do not fit it, -32601 for another; nothing for a notification (one MCP does
/// not have is ignored, as rmcp does).
fn refusal(value: &Value, why: &serde_json::Error) -> Option<Value> {
    let id = value.get("id").cloned();
    let method = value.get("method");
    if id.is_none() && method.is_some_and(Value::is_string) {
        return None;
    }
    let fault = if !value.is_object() {
        Some("a message must be a JSON object".to_owned())
    } else if value.get("jsonrpc") != Some(&json!("2.0")) {
        Some("'jsonrpc' must be \"2.0\"".to_owned())
    } else if !id
        .as_ref()
        .is_none_or(|i| i.is_string() || i.is_i64() || i.is_u64())
    {
        Some("'id' must be a string or an integer".to_owned())
    } else if method.is_some_and(|m| !m.is_string()) {
        Some("'method' must be a string".to_owned())
    } else {
        None
    };
    let (code, msg) = match (fault, method.and_then(Value::as_str)) {
        (None, Some(m)) => {
            let err = super::errors::unreadable_request(m, value.get("params"));
            (i64::from(err.code.0), err.message.into_owned())
        }
        (fault, _) => (
            -32600,
            format!(
                "invalid request: {}",
                fault.unwrap_or_else(|| format!("not a JSON-RPC message of MCP ({why})"))
            ),
        ),
    };
    // An id that is not one cannot be echoed back.
    let id = id.filter(|i| i.is_string() || i.is_i64() || i.is_u64());
    Some(error(id, code, &msg))
}

/// A JSON-RPC error answer, logged as mcpd's one line for it.
fn error(id: Option<Value>, code: i64, message: &str) -> Value {
    let shown = id.as_ref().map(|i| match i {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    });
    rpc_errors::log(shown.as_deref(), code, message);
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

async fn write_line<W: AsyncWrite + Unpin>(
    writer: &tokio::sync::Mutex<W>,
    value: &impl serde::Serialize,
) -> std::io::Result<()> {
    write_bytes(writer, serde_json::to_vec(value)?).await
}

/// Writes one message, already serialised, as a line.
async fn write_bytes<W: AsyncWrite + Unpin>(
    writer: &tokio::sync::Mutex<W>,
    mut bytes: Vec<u8>,
) -> std::io::Result<()> {
    bytes.push(b'\n');
    let mut w = writer.lock().await;
    w.write_all(&bytes).await?;
    w.flush().await
}

/// A line without its carriage return and a UTF-8 byte order mark.
fn trim(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
    line.trim_ascii()
}

/// An id as a set key (numbers and strings never collide: strings keep their quotes).
fn id_key(id: &Value) -> String {
    id.to_string()
}

/// The `id` of a request whose line cannot be read whole, when the line starts with it
/// (`{"jsonrpc": "2.0", "id": 7, ...`, the order clients write): a number or a string.
fn sniff_id(head: &[u8]) -> Option<Value> {
    let text = String::from_utf8_lossy(head.get(..HEAD.min(head.len())).unwrap_or_default());
    let mut rest = text.trim_start().strip_prefix('{')?;
    // At most the "jsonrpc" and "method" members before it.
    for _ in 0..3 {
        rest = rest.trim_start();
        let (key, after) = string_token(rest)?;
        let after = after.trim_start().strip_prefix(':')?.trim_start();
        if key == "id" {
            return id_token(after);
        }
        let (_, after) = string_token(after)?;
        rest = after.trim_start().strip_prefix(',')?;
    }
    None
}

/// A JSON string at the start of `s` (no escapes), and what follows it.
fn string_token(s: &str) -> Option<(&str, &str)> {
    let body = s.strip_prefix('"')?;
    let end = body.find(['"', '\\'])?;
    body.get(end..)?.starts_with('"').then(|| {
        (
            body.get(..end).unwrap_or_default(),
            body.get(end + 1..).unwrap_or_default(),
        )
    })
}

/// An id token: a string without escapes, or an integer.
fn id_token(s: &str) -> Option<Value> {
    if let Some((id, _)) = string_token(s) {
        return Some(Value::from(id));
    }
    let digits: String = s
        .chars()
        .enumerate()
        .take_while(|(i, c)| c.is_ascii_digit() || (*i == 0 && *c == '-'))
        .map(|(_, c)| c)
        .collect();
    let after = s.get(digits.len()..)?.trim_start();
    if !(after.starts_with(',') || after.starts_with('}')) {
        return None;
    }
    digits.parse::<i64>().ok().map(Value::from)
}

#[cfg(test)]
#[path = "stdio_tests.rs"]
mod tests;
