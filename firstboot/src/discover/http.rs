//! The metadata services' HTTP: plain `http://` on a link-local address,
//! one request per connection (HTTP/1.0); no TLS, redirects, keep-alive or
//! chunking is needed. A few dozen lines over [`std::net::TcpStream`] with
//! one deadline over name resolution, connect, send and receive do it,
//! which a general client crate would not do without a runtime or a
//! resolver of its own, and they add no dependency to the image.
//!
//! Every answer is hostile input: at most [`MAX_ANSWER`] bytes are ever
//! held (a longer body, or a `Content-Length` above it, is refused before
//! it is read), and no error message quotes the body (user-data may hold
//! secrets). A failure to reach the service at all (no route, refused,
//! silent) is an [`Unreachable`] error, so the caller asks no other path of
//! the same host. No route at all (the network not configured yet: the
//! agent starts before DHCP may be done) is tried again every 250 ms until
//! the deadline.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};

/// The largest answer read (headers and body): an env's limit plus room
/// for base64 (4/3) and the headers.
pub const MAX_ANSWER: usize = seeds::yaml::MAX_BYTES / 3 * 4 + 65536;

/// How long to wait before connecting again when there is no route.
const RETRY: std::time::Duration = std::time::Duration::from_millis(250);

/// A connect error that a network still coming up gives: no route to the
/// network or host, or no address of ours to send from yet.
fn no_route_yet(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENETUNREACH | libc::EHOSTUNREACH | libc::EADDRNOTAVAIL)
    )
}

/// The service did not answer at all (no connection, or silence until the
/// deadline).
#[derive(Debug)]
pub struct Unreachable(pub String);

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unreachable {}

/// Whether `e` says the host did not answer.
pub fn is_unreachable(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<Unreachable>().is_some())
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// The `Content-Type` header's media type, lower case, without
    /// parameters (empty when absent).
    pub content_type: String,
    pub body: Vec<u8>,
}

/// A request.
pub struct Request<'a> {
    pub method: &'a str,
    pub url: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    /// Body and its content type (POST).
    pub body: Option<(&'a str, &'a [u8])>,
}

/// A GET of `url` with `headers`, finished by `deadline`.
pub fn get(url: &str, headers: &[(&str, &str)], deadline: Instant) -> Result<Response> {
    send(
        &Request {
            method: "GET",
            url,
            headers,
            body: None,
        },
        deadline,
    )
}

/// One HTTP/1.0 request to a plain `http://` URL, finished by `deadline`.
pub fn send(r: &Request, deadline: Instant) -> Result<Response> {
    let rest = r
        .url
        .strip_prefix("http://")
        .with_context(|| format!("{}: only http:// is supported", r.url))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = resolve(authority, deadline)?;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| anyhow!(Unreachable("timed out".into())))
    };
    // No route yet (DHCP still running: the agent starts early) is asked
    // again until the deadline; a refusal is final.
    let mut conn = loop {
        match TcpStream::connect_timeout(&addr, left()?) {
            Ok(c) => break c,
            Err(e) if no_route_yet(&e) && left().is_ok_and(|d| d > RETRY) => {
                std::thread::sleep(RETRY)
            }
            Err(e) => bail!(Unreachable(format!("connecting: {e}"))),
        }
    };
    conn.set_write_timeout(Some(left()?))?;
    let mut req = format!("{} {path} HTTP/1.0\r\nHost: {authority}\r\n", r.method);
    for (k, v) in r.headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    match r.body {
        Some((ctype, body)) => req.push_str(&format!(
            "Content-Type: {ctype}\r\nContent-Length: {}\r\n",
            body.len()
        )),
        None if r.method != "GET" => req.push_str("Content-Length: 0\r\n"),
        None => {}
    }
    req.push_str("\r\n");
    let mut out = req.into_bytes();
    if let Some((_, body)) = r.body {
        out.extend_from_slice(body);
    }
    conn.write_all(&out).context("sending the request")?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    let mut expected: Option<usize> = None;
    loop {
        conn.set_read_timeout(Some(left()?))?;
        let n = match conn.read(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if raw.is_empty() {
                    bail!(Unreachable("timed out".into()));
                }
                bail!("timed out reading the answer");
            }
            Err(e) => return Err(e).context("reading the answer"),
        };
        if n == 0 {
            break;
        }
        let room = (MAX_ANSWER + 1).saturating_sub(raw.len());
        raw.extend_from_slice(&buf[..n.min(room)]);
        if raw.len() > MAX_ANSWER {
            bail!("answer larger than {} KiB; refused", MAX_ANSWER >> 10);
        }
        if expected.is_none() {
            expected = declared_length(&raw)?;
        }
        if expected.is_some_and(|n| raw.len() >= n) {
            break;
        }
    }
    parse_answer(&raw).context("reading the answer")
}

/// Once the headers are in: the whole answer's length if they declare a
/// `Content-Length`; an error if that is over the limit.
fn declared_length(raw: &[u8]) -> Result<Option<usize>> {
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&raw[..end]);
    for l in head.split("\r\n").skip(1) {
        if let Some((k, v)) = l.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                let n: usize = v.trim().parse().context("bad Content-Length")?;
                if n > MAX_ANSWER {
                    bail!(
                        "answer of {n} bytes, larger than {} KiB; refused",
                        MAX_ANSWER >> 10
                    );
                }
                return Ok(Some(end + 4 + n));
            }
        }
    }
    Ok(Some(usize::MAX))
}

/// `host[:port]` as an address; a name is resolved within the deadline
/// (a resolver that hangs is left behind on its thread).
pub fn resolve(authority: &str, deadline: Instant) -> Result<SocketAddr> {
    if let Ok(a) = authority.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Ok(ip) = authority.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 80));
    }
    let hostport = match authority.rsplit_once(':') {
        Some((_, p)) if p.parse::<u16>().is_ok() => authority.to_string(),
        _ => format!("{authority}:80"),
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let name = hostport.clone();
    std::thread::spawn(move || {
        let _ = tx.send(name.to_socket_addrs().map(|mut a| a.next()));
    });
    let wait = deadline.saturating_duration_since(Instant::now());
    match rx.recv_timeout(wait) {
        Ok(Ok(Some(a))) => Ok(a),
        Ok(Ok(None)) => bail!(Unreachable(format!("{hostport} has no address"))),
        Ok(Err(e)) => bail!(Unreachable(format!("resolving {hostport}: {e}"))),
        Err(_) => bail!(Unreachable(format!("resolving {hostport}: timed out"))),
    }
}

pub fn parse_answer(raw: &[u8]) -> Result<Response> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers")?;
    let head = std::str::from_utf8(&raw[..end]).context("headers are not text")?;
    let mut lines = head.split("\r\n");
    let mut status_line = lines.next().unwrap_or_default().split_whitespace();
    if !status_line
        .next()
        .unwrap_or_default()
        .starts_with("HTTP/1.")
    {
        bail!("not an HTTP answer");
    }
    let status: u16 = status_line
        .next()
        .and_then(|s| s.parse().ok())
        .context("no status code")?;
    let mut body = raw[end + 4..].to_vec();
    let mut content_type = String::new();
    for l in lines {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let k = k.trim();
        if k.eq_ignore_ascii_case("content-length") {
            let n: usize = v.trim().parse().context("bad Content-Length")?;
            if body.len() < n {
                bail!("answer cut short ({} of {n} bytes)", body.len());
            }
            body.truncate(n);
        } else if k.eq_ignore_ascii_case("transfer-encoding") {
            bail!("unexpected Transfer-Encoding in an HTTP/1.0 answer");
        } else if k.eq_ignore_ascii_case("content-type") {
            content_type = v
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase();
        }
    }
    Ok(Response {
        status,
        content_type,
        body,
    })
}

impl Response {
    /// The body as user-data: 200 with content (none if only white space),
    /// 404 none, anything else an error. An HTML page (a proxy's or portal's
    /// answer, never user-data) is refused.
    pub fn user_data(self) -> Result<Option<Vec<u8>>> {
        match self.status {
            200 if self.content_type == "text/html" => {
                bail!("answer is an HTML page (Content-Type: text/html), not user-data")
            }
            200 if self.body.iter().all(u8::is_ascii_whitespace) => Ok(None),
            200 => Ok(Some(self.body)),
            404 => Ok(None),
            s => bail!("HTTP status {s}"),
        }
    }

    /// The body as a JSON document: 200 with `Content-Type:
    /// application/json`; 404: none.
    pub fn json(self) -> Result<Option<serde_json::Value>> {
        match self.status {
            200 if self.content_type != "application/json" => bail!(
                "answer has Content-Type {:?}, not application/json",
                self.content_type
            ),
            200 => serde_json::from_slice(&self.body)
                .map(Some)
                // serde_json's message names a position, never the content.
                .map_err(|e| anyhow!("answer is not valid JSON: {e}")),
            404 => Ok(None),
            s => bail!("HTTP status {s}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_missing_route_is_tried_again() {
        let e = |n| io::Error::from_raw_os_error(n);
        assert!(no_route_yet(&e(libc::ENETUNREACH)));
        assert!(no_route_yet(&e(libc::EHOSTUNREACH)));
        assert!(!no_route_yet(&e(libc::ECONNREFUSED)));
        assert!(!no_route_yet(&io::Error::from(io::ErrorKind::TimedOut)));
    }

    #[test]
    fn no_route_waits_for_the_deadline() {
        // In a network namespace of its own only `lo` exists, and it is
        // down: every address is unreachable, as before DHCP.
        if !crate::testutil::root_or_skip("a network namespace") {
            return;
        }
        let me = std::env::current_exe().unwrap();
        let out = std::process::Command::new("unshare")
            .args(["-n", "--"])
            .arg(me)
            .args([
                "--exact",
                "discover::http::tests::inner_no_route",
                "--include-ignored",
                "--nocapture",
            ])
            .output()
            .expect("unshare (util-linux) runs");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("NO-ROUTE-OK"),
            "{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for l in text.lines().filter(|l| l.starts_with("no network")) {
            eprintln!("{l}");
        }
    }

    #[test]
    #[ignore = "run inside a network namespace by no_route_waits_for_the_deadline"]
    fn inner_no_route() {
        let t = Instant::now();
        let e = get(
            "http://169.254.169.254/x",
            &[],
            t + std::time::Duration::from_millis(1500),
        )
        .unwrap_err();
        let took = t.elapsed();
        assert!(is_unreachable(&e), "{e:#}");
        assert!(
            took >= std::time::Duration::from_millis(1200),
            "gave up after {took:?}: {e:#}"
        );
        println!("NO-ROUTE-OK {took:?} {e:#}");

        // The whole metadata phase with the real addresses on a machine
        // without a network: EC2 waits its 3 s for a route, OpenStack on
        // the same host is not asked, GCE's name does not resolve.
        let root = tempfile::tempdir().unwrap();
        let mut s = crate::discover::Sources::under(root.path());
        s.urls = crate::discover::Urls::real();
        let t = Instant::now();
        let msg = format!("{:#}", crate::discover::find(&s).unwrap_err());
        let took = t.elapsed();
        println!(
            "no network, real addresses: {:.2} s: {msg}",
            took.as_secs_f64()
        );
        assert!(took < std::time::Duration::from_secs(10), "{took:?}: {msg}");
        assert!(msg.contains("openstack metadata (not asked:"), "{msg}");
    }
}
