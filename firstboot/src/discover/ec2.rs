//! EC2's instance metadata service (and every EC2-compatible one:
//! OpenStack, plain KVM hosts that serve it): a session token first
//! (IMDSv2, `PUT /latest/api/token`); without one, a plain GET (IMDSv1) of
//! `/latest/user-data`. A service that cannot be reached at all is not
//! asked twice.

use std::time::Instant;

use anyhow::Result;

use super::http::{self, Request};

pub fn fetch(base: &str, deadline: Instant) -> (String, Result<Option<Vec<u8>>>) {
    let base = base.trim_end_matches('/');
    let url = format!("{base}/latest/user-data");
    let token = match http::send(
        &Request {
            method: "PUT",
            url: &format!("{base}/latest/api/token"),
            headers: &[("X-aws-ec2-metadata-token-ttl-seconds", "60")],
            body: None,
        },
        deadline,
    ) {
        Ok(r) if r.status == 200 && !r.body.is_empty() && r.body.len() < 1024 => {
            Some(String::from_utf8_lossy(&r.body).trim().to_string())
        }
        Ok(_) => None,
        Err(e) => return (url, Err(e)),
    };
    // A token is a header value: nothing but printable ASCII goes on the wire.
    let token = token.filter(|t| t.bytes().all(|b| b.is_ascii_graphic()));
    let headers: Vec<(&str, &str)> = token
        .as_deref()
        .map(|t| ("X-aws-ec2-metadata-token", t))
        .into_iter()
        .collect();
    let got = http::get(&url, &headers, deadline).and_then(http::Response::user_data);
    (url, got)
}
