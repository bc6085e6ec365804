//! A fault-injecting HTTP/1.1 proxy on loopback, to put in front of Azurite: every
//! request is read whole, then a rule decides its fate: forwarded (after an optional
//! delay), the connection closed before it is forwarded (the server never sees it),
//! or forwarded and the reply dropped (the server applied it, the client never
//! hears). A fixed per-request delay on top models a network round trip (the
//! benchmarks reuse it for that, with [`ProxyCounts::rounds`] for the requests in
//! sequence, [`ProxyCounts::cpu`] for the proxy's own CPU time, and
//! [`ProxyCounts::body_up`] / [`ProxyCounts::body_down`] for the bytes moved).
//!
//! One upstream connection per client connection; requests on it are handled in
//! order. Only what the Azure SDK sends is supported: bodies framed by
//! Content-Length or chunked, no Expect: 100-continue, no upgrades.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// A request as the rule sees it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path and query, as sent (`/devstoreaccount1/c/a.db?comp=lease`).
    pub target: String,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    /// Bytes of its body (the payload, without chunked framing).
    pub body_len: u64,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The query string holds `item` (`comp=lease`, `comp=blocklist`).
    pub fn query_has(&self, item: &str) -> bool {
        self.target
            .split_once('?')
            .is_some_and(|(_, q)| q.split('&').any(|kv| kv == item))
    }

    /// A lease request with `x-ms-lease-action: action` (`acquire`, `release`, ...).
    pub fn is_lease(&self, action: &str) -> bool {
        self.query_has("comp=lease") && self.header("x-ms-lease-action") == Some(action)
    }

    /// A read or write of the waiter mark (`<blob>.mb-waiting`): the store's clock
    /// reads it beside the commits while it keeps the lease warm, and a writer that
    /// found the lease held writes it. Not counted in [`ProxyCounts::rounds`],
    /// which measures the requests a commit waits for.
    pub fn is_waiter_mark(&self) -> bool {
        self.target
            .split('?')
            .next()
            .is_some_and(|path| path.ends_with(".mb-waiting"))
    }

    /// A request that changes the blob or its lease (anything but GET and HEAD).
    pub fn writes(&self) -> bool {
        !matches!(self.method.as_str(), "GET" | "HEAD")
    }
}

/// What happens to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Forward,
    /// Close the client connection before forwarding: the server never sees it.
    ResetBeforeForwarding,
    /// Forward, read the server's reply, then close the client connection instead
    /// of answering: the server applied it, the client cannot know.
    LoseReply,
    /// Wait this long, then forward.
    Slow(Duration),
}

type Rule = Box<dyn FnMut(&Request) -> Fate + Send>;

/// How many requests met each fate, and how they overlapped.
#[derive(Debug, Default)]
pub struct ProxyCounts {
    pub forwarded: AtomicU64,
    pub resets: AtomicU64,
    pub lost_replies: AtomicU64,
    pub slowed: AtomicU64,
    /// Requests read and not yet answered (or dropped).
    in_flight: AtomicU64,
    /// Requests in sequence: a request read while no other is in flight starts a new
    /// round; requests sent in parallel (the staged chunks) share one.
    rounds: AtomicU64,
    /// CPU time the proxy's threads spent handling requests, in nanoseconds.
    cpu_ns: AtomicU64,
    /// Bytes of the request bodies sent upstream (payload, without the heads and
    /// without chunked framing), and of the response bodies sent back to the client.
    pub body_up: AtomicU64,
    pub body_down: AtomicU64,
}

impl ProxyCounts {
    /// Rounds of requests so far (see the field's doc). Only meaningful with a delay
    /// set: at zero delay one of several parallel requests may finish before the next
    /// is read, and count as a round of its own.
    pub fn rounds(&self) -> u64 {
        self.rounds.load(Ordering::SeqCst)
    }

    /// The proxy's own CPU time so far (the process's CPU time includes it).
    pub fn cpu(&self) -> Duration {
        Duration::from_nanos(self.cpu_ns.load(Ordering::Relaxed))
    }

    /// Mark a request read: in flight until the returned guard drops.
    fn begin(&self) -> InFlight<'_> {
        if self.in_flight.fetch_add(1, Ordering::SeqCst) == 0 {
            self.rounds.fetch_add(1, Ordering::SeqCst);
        }
        InFlight(self)
    }
}

/// One request in flight (see [`ProxyCounts::begin`]).
struct InFlight<'a>(&'a ProxyCounts);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Random faults at fixed rates (a rule made by [`random_faults`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Rates {
    pub reset: f64,
    pub lose_reply: f64,
    pub slow: f64,
    pub slow_by: Duration,
}

/// A rule that draws each request's fate at `rates` (resets and lost replies only
/// for requests that write: a lost read reply is just a transient read error).
pub fn random_faults(rates: Rates) -> impl FnMut(&Request) -> Fate + Send {
    move |req: &Request| {
        let roll = fastrand::f64();
        if req.writes() && roll < rates.reset {
            Fate::ResetBeforeForwarding
        } else if req.writes() && roll < rates.reset + rates.lose_reply {
            Fate::LoseReply
        } else if fastrand::f64() < rates.slow {
            Fate::Slow(rates.slow_by)
        } else {
            Fate::Forward
        }
    }
}

/// The proxy; stops accepting when dropped (open connections finish their request).
pub struct HttpProxy {
    pub addr: SocketAddr,
    upstream: SocketAddr,
    rule: Arc<Mutex<Rule>>,
    delay: Arc<Mutex<Duration>>,
    pub counts: Arc<ProxyCounts>,
    stop: Arc<AtomicBool>,
}

impl HttpProxy {
    /// A proxy on a free loopback port forwarding to `upstream`, passing everything.
    pub fn start(upstream: SocketAddr) -> HttpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy port");
        let proxy = HttpProxy {
            addr: listener.local_addr().unwrap(),
            upstream,
            rule: Arc::new(Mutex::new(Box::new(|_: &Request| Fate::Forward))),
            delay: Arc::new(Mutex::new(Duration::ZERO)),
            counts: Arc::default(),
            stop: Arc::default(),
        };
        let (rule, delay, counts, stop) = (
            proxy.rule.clone(),
            proxy.delay.clone(),
            proxy.counts.clone(),
            proxy.stop.clone(),
        );
        thread::spawn(move || {
            for client in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let (rule, delay, counts) = (rule.clone(), delay.clone(), counts.clone());
                thread::spawn(move || {
                    let _ = serve(client, upstream, &rule, &delay, &counts);
                });
            }
        });
        proxy
    }

    /// Decide every request's fate with `rule` from now on.
    pub fn set_rule(&self, rule: impl FnMut(&Request) -> Fate + Send + 'static) {
        *self.rule.lock().unwrap() = Box::new(rule);
    }

    /// Forward everything again.
    pub fn pass_all(&self) {
        self.set_rule(|_| Fate::Forward);
    }

    /// Delay every request by `delay` before it is forwarded (besides its fate).
    pub fn set_delay(&self, delay: Duration) {
        *self.delay.lock().unwrap() = delay;
    }

    /// The upstream server this proxy forwards to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }
}

impl Drop for HttpProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Handle one client connection until it closes or a fault closes it.
fn serve(
    client: TcpStream,
    upstream_addr: SocketAddr,
    rule: &Mutex<Rule>,
    delay: &Mutex<Duration>,
    counts: &ProxyCounts,
) -> io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut client = client;
    let mut upstream: Option<(TcpStream, BufReader<TcpStream>)> = None;
    loop {
        // Waiting for a request costs no CPU, so the clock can run across it.
        let cpu = cpu_time::ThreadTime::now();
        let _cpu = AddOnDrop(&counts.cpu_ns, cpu);
        let Some((req, raw)) = read_request(&mut reader)? else {
            return Ok(());
        };
        let _in_flight = (!req.is_waiter_mark()).then(|| counts.begin());
        let fate = (rule.lock().unwrap())(&req);
        let pause = *delay.lock().unwrap();
        if !pause.is_zero() {
            thread::sleep(pause);
        }
        match fate {
            Fate::ResetBeforeForwarding => {
                counts.resets.fetch_add(1, Ordering::Relaxed);
                let _ = client.shutdown(Shutdown::Both);
                return Ok(());
            }
            Fate::Slow(by) => {
                counts.slowed.fetch_add(1, Ordering::Relaxed);
                thread::sleep(by);
            }
            Fate::Forward | Fate::LoseReply => {}
        }
        // Azurite (Node) closes a connection idle for 5 s: reconnect rather than send
        // into it, which would close the client's connection without a reply (a
        // client with many pooled connections then spends all its retries on them).
        if upstream.as_ref().is_some_and(|(s, _)| closed_by_peer(s)) {
            upstream = None;
        }
        if upstream.is_none() {
            let s = TcpStream::connect(upstream_addr)?;
            upstream = Some((s.try_clone()?, BufReader::new(s)));
        }
        let (up_write, up_read) = upstream.as_mut().unwrap();
        up_write.write_all(&raw)?;
        counts.body_up.fetch_add(req.body_len, Ordering::Relaxed);
        let (reply, reply_body) = read_response(up_read, req.method == "HEAD")?;
        if fate == Fate::LoseReply {
            counts.lost_replies.fetch_add(1, Ordering::Relaxed);
            let _ = client.shutdown(Shutdown::Both);
            return Ok(());
        }
        counts.forwarded.fetch_add(1, Ordering::Relaxed);
        counts.body_down.fetch_add(reply_body, Ordering::Relaxed);
        client.write_all(&reply)?;
    }
}

/// Whether the peer closed `s` (it is readable at end of stream, or failed), looked
/// at without blocking and without consuming anything.
fn closed_by_peer(s: &TcpStream) -> bool {
    if s.set_nonblocking(true).is_err() {
        return true;
    }
    let closed = match s.peek(&mut [0u8; 1]) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != io::ErrorKind::WouldBlock,
    };
    closed || s.set_nonblocking(false).is_err()
}

/// Adds the thread's CPU time since `.1` to the counter `.0` when dropped.
struct AddOnDrop<'a>(&'a AtomicU64, cpu_time::ThreadTime);

impl Drop for AddOnDrop<'_> {
    fn drop(&mut self) {
        let spent = self.1.elapsed().as_nanos() as u64;
        self.0.fetch_add(spent, Ordering::Relaxed);
    }
}

/// Read one request whole: the parsed head and the raw bytes. `None` at a clean EOF.
fn read_request(r: &mut BufReader<TcpStream>) -> io::Result<Option<(Request, Vec<u8>)>> {
    let mut raw = Vec::new();
    let Some(lines) = read_head(r, &mut raw)? else {
        return Ok(None);
    };
    let mut parts = lines[0].split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let headers = parse_headers(&lines[1..]);
    let body_len = read_body(r, &headers, &mut raw)?;
    Ok(Some((
        Request {
            method,
            target,
            headers,
            body_len,
        },
        raw,
    )))
}

/// Read one response whole, raw, with the bytes of its body. `head_only`: the reply
/// to a HEAD has no body.
fn read_response(r: &mut BufReader<TcpStream>, head_only: bool) -> io::Result<(Vec<u8>, u64)> {
    let mut raw = Vec::new();
    let lines = read_head(r, &mut raw)?
        .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "no reply"))?;
    let status: u16 = lines[0]
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = parse_headers(&lines[1..]);
    let mut body = 0;
    if !(head_only || status == 204 || status == 304 || (100..200).contains(&status)) {
        body = read_body(r, &headers, &mut raw)?;
    }
    Ok((raw, body))
}

/// Read a message head (up to the empty line) into `raw`; its lines without CRLF.
fn read_head(r: &mut BufReader<TcpStream>, raw: &mut Vec<u8>) -> io::Result<Option<Vec<String>>> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return if lines.is_empty() {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        raw.extend_from_slice(line.as_bytes());
        let trimmed = line.trim_end_matches(['\r', '\n']).to_string();
        if trimmed.is_empty() {
            return Ok(Some(lines));
        }
        lines.push(trimmed);
    }
}

fn parse_headers(lines: &[String]) -> Vec<(String, String)> {
    lines
        .iter()
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect()
}

/// Copy a body framed by Content-Length or chunked encoding into `raw`; the bytes
/// of its payload.
fn read_body(
    r: &mut BufReader<TcpStream>,
    headers: &[(String, String)],
    raw: &mut Vec<u8>,
) -> io::Result<u64> {
    let get = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v);
    if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut payload = 0;
        loop {
            let mut size_line = String::new();
            r.read_line(&mut size_line)?;
            raw.extend_from_slice(size_line.as_bytes());
            let size = usize::from_str_radix(size_line.trim().split(';').next().unwrap_or("0"), 16)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if size == 0 {
                // Trailers, then the empty line.
                while read_head_line(r, raw)? {}
                return Ok(payload);
            }
            payload += size as u64;
            let start = raw.len();
            raw.resize(start + size + 2, 0);
            r.read_exact(&mut raw[start..])?;
        }
    }
    let len: usize = get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let start = raw.len();
    raw.resize(start + len, 0);
    r.read_exact(&mut raw[start..])?;
    Ok(len as u64)
}

/// Copy one line into `raw`; false when it was the empty line.
fn read_head_line(r: &mut BufReader<TcpStream>, raw: &mut Vec<u8>) -> io::Result<bool> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    raw.extend_from_slice(line.as_bytes());
    Ok(!line.trim_end_matches(['\r', '\n']).is_empty())
}
