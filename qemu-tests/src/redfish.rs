//! A small HTTPS/1.1 client for keeld in the guest: one connection per request (`Connection:
//! close`), Basic authentication, JSON bodies. The guest's certificate is keeld's self-signed one,
//! made on the guest's first boot, so it is not verified (the connection only ever goes to
//! 127.0.0.1 inside the harness's private network namespace).

use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> Result<Value, String> {
        serde_json::from_slice(&self.body).map_err(|e| format!("HTTP {}: body is not JSON ({e}): {}", self.status, String::from_utf8_lossy(&self.body)))
    }
}

#[derive(Debug, Clone)]
pub struct Client {
    pub addr: SocketAddr,
    pub auth: Option<(String, String)>,
    pub timeout: Duration,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Self {
        Client { addr, auth: None, timeout: Duration::from_secs(30) }
    }

    pub fn with_auth(&self, user: &str, password: &str) -> Self {
        Client { auth: Some((user.into(), password.into())), ..self.clone() }
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    fn connect(&self) -> Result<openssl::ssl::SslStream<TcpStream>, String> {
        let tcp = TcpStream::connect_timeout(&self.addr, self.timeout.min(Duration::from_secs(5))).map_err(|e| format!("connect {}: {e}", self.addr))?;
        tcp.set_read_timeout(Some(self.timeout)).map_err(|e| e.to_string())?;
        tcp.set_write_timeout(Some(self.timeout)).map_err(|e| e.to_string())?;
        let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(|e| e.to_string())?;
        b.set_verify(SslVerifyMode::NONE);
        let conn = b.build().configure().map_err(|e| e.to_string())?.verify_hostname(false).use_server_name_indication(false);
        conn.connect("keel", tcp).map_err(|e| format!("TLS handshake with {}: {e}", self.addr))
    }

    fn head(&self, method: &str, path: &str) -> String {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAccept: application/json\r\nOData-Version: 4.0\r\n", self.addr);
        if let Some((u, p)) = &self.auth {
            use base64::Engine;
            req += &format!("Authorization: Basic {}\r\n", base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}")));
        }
        req
    }

    pub fn request(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Response, String> {
        let mut tls = self.connect()?;
        let payload = body.map(|v| v.to_string().into_bytes()).unwrap_or_default();
        let mut req = self.head(method, path);
        if body.is_some() {
            req += &format!("Content-Type: application/json\r\nContent-Length: {}\r\n", payload.len());
        }
        req += "\r\n";
        tls.write_all(req.as_bytes()).and_then(|_| tls.write_all(&payload)).map_err(|e| format!("{method} {path}: {e}"))?;
        read_response(tls, method, path)
    }

    /// POST a `multipart/form-data` body as Redfish's MultipartHttpPushUri wants it: the part
    /// `UpdateParameters` (JSON), then `UpdateFile` with `len` bytes streamed from `file`.
    pub fn push_multipart(&self, path: &str, params: &Value, filename: &str, file: &mut dyn Read, len: u64) -> Result<Response, String> {
        let mut tls = self.connect()?;
        let boundary = "keel-qemu-tests-boundary-7d1f0c";
        let head = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"UpdateParameters\"\r\nContent-Type: application/json\r\n\r\n{params}\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"UpdateFile\"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        );
        let tail = format!("\r\n--{boundary}--\r\n");
        let mut req = self.head("POST", path);
        req += &format!("Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\r\n", head.len() as u64 + len + tail.len() as u64);
        let err = |e: std::io::Error| format!("POST {path}: {e}");
        tls.write_all(req.as_bytes()).and_then(|_| tls.write_all(head.as_bytes())).map_err(err)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut left = len;
        while left > 0 {
            let n = file.read(&mut buf[..left.min(1 << 20) as usize]).map_err(err)?;
            if n == 0 {
                return Err(format!("POST {path}: the file ended {left} bytes early"));
            }
            // keeld may answer (and close) before the whole body is sent, e.g. a refusal.
            if let Err(e) = tls.write_all(&buf[..n]) {
                return read_response(tls, "POST", path).map_err(|r| format!("{r} (after a send error: {e})"));
            }
            left -= n as u64;
        }
        tls.write_all(tail.as_bytes()).map_err(err)?;
        read_response(tls, "POST", path)
    }

    /// Polls a task monitor (or task) until the task ends; returns the final Task.
    pub fn wait_task(&self, monitor: &str, timeout: Duration) -> Result<Value, String> {
        let t = std::time::Instant::now();
        loop {
            let r = self.get(monitor)?;
            let task = if r.status == 202 || r.status == 200 { r.json()? } else { return Err(format!("GET {monitor}: HTTP {}: {}", r.status, String::from_utf8_lossy(&r.body))) };
            let state = task["TaskState"].as_str().unwrap_or("");
            if !matches!(state, "New" | "Starting" | "Running" | "Pending" | "Stopping" | "Suspended" | "Service") {
                return Ok(task);
            }
            if t.elapsed() > timeout {
                return Err(format!("task {monitor} still {state} ({}%) after {timeout:?}", task["PercentComplete"]));
            }
            std::thread::sleep(Duration::from_secs(3));
        }
    }
}

fn read_response(mut tls: openssl::ssl::SslStream<TcpStream>, method: &str, path: &str) -> Result<Response, String> {
    let mut raw = Vec::new();
    // keeld closes after the response (Connection: close); a TLS close without close_notify
    // after a complete body is not an error for us.
    if let Err(e) = tls.read_to_end(&mut raw) {
        if raw.is_empty() {
            return Err(format!("{method} {path}: {e}"));
        }
    }
    parse_response(&raw).map_err(|e| format!("{method} {path}: {e}"))
}

impl Client {
    /// The server's certificate (PEM), e.g. as the CA bundle for a validator: keeld's self-signed
    /// certificate names 127.0.0.1.
    pub fn peer_cert_pem(&self) -> Result<Vec<u8>, String> {
        let tcp = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5)).map_err(|e| format!("connect {}: {e}", self.addr))?;
        tcp.set_read_timeout(Some(self.timeout)).map_err(|e| e.to_string())?;
        let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(|e| e.to_string())?;
        b.set_verify(SslVerifyMode::NONE);
        let conn = b.build().configure().map_err(|e| e.to_string())?.verify_hostname(false);
        let tls = conn.connect("keel", tcp).map_err(|e| format!("TLS handshake with {}: {e}", self.addr))?;
        let cert = tls.ssl().peer_certificate().ok_or("no server certificate")?;
        cert.to_pem().map_err(|e| e.to_string())
    }

    pub fn get(&self, path: &str) -> Result<Response, String> {
        self.request("GET", path, None)
    }

    /// GET that must answer 200 with JSON.
    pub fn get_json(&self, path: &str) -> Result<Value, String> {
        let r = self.get(path)?;
        if r.status != 200 {
            return Err(format!("GET {path}: HTTP {}: {}", r.status, String::from_utf8_lossy(&r.body)));
        }
        r.json()
    }

    /// Every member of a collection (following `Members@odata.nextLink`).
    pub fn members(&self, collection: &str) -> Result<Vec<Value>, String> {
        let mut out = Vec::new();
        let mut next = Some(collection.to_string());
        while let Some(path) = next.take() {
            let c = self.get_json(&path)?;
            for m in c["Members"].as_array().cloned().unwrap_or_default() {
                let id = m["@odata.id"].as_str().ok_or_else(|| format!("{path}: member without @odata.id"))?.to_string();
                out.push(self.get_json(&id)?);
            }
            next = c["Members@odata.nextLink"].as_str().map(String::from);
        }
        Ok(out)
    }
}

/// Status line, headers and body (Content-Length, chunked, or up to the close).
pub fn parse_response(raw: &[u8]) -> Result<Response, String> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or("no end of headers")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let (proto, code) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if !proto.starts_with("HTTP/1.") {
        return Err(format!("bad status line {status_line:?}"));
    }
    let status: u16 = code.parse().map_err(|_| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let rest = &raw[end + 4..];
    let find = |n: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(n)).map(|(_, v)| v.as_str());
    let body = if find("Transfer-Encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        dechunk(rest)?
    } else if let Some(len) = find("Content-Length") {
        let len: usize = len.parse().map_err(|_| "bad Content-Length")?;
        if rest.len() < len {
            return Err(format!("body cut short: {} of {len} bytes", rest.len()));
        }
        rest[..len].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Response { status, headers, body })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = data.windows(2).position(|w| w == b"\r\n").ok_or("chunk size line cut short")?;
        let size_text = std::str::from_utf8(&data[..eol]).map_err(|_| "bad chunk size")?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16).map_err(|_| format!("bad chunk size {size_text:?}"))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            return Err("chunk cut short".into());
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_body() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"a\":1}trailing").unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.json().unwrap()["a"], 1);
    }

    #[test]
    fn chunked_body() {
        let r = parse_response(b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"b\r\n4;x=y\r\n\":2}\r\n0\r\n\r\n").unwrap();
        assert_eq!(r.status, 201);
        assert_eq!(r.json().unwrap()["b"], 2);
    }

    #[test]
    fn truncated_and_garbage_are_errors() {
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort").is_err());
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
    }
}
