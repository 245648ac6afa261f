//! Hetzner Cloud's metadata service: `/hetzner/v1/userdata`, the user-data
//! as given (an empty body when there is none).

use std::time::Instant;

use anyhow::Result;

use super::http;

pub fn fetch(base: &str, deadline: Instant) -> (String, Result<Option<Vec<u8>>>) {
    let url = format!("{}/hetzner/v1/userdata", base.trim_end_matches('/'));
    let got = http::get(&url, &[], deadline).and_then(http::Response::user_data);
    (url, got)
}
