//! DigitalOcean's metadata service: `/metadata/v1/user-data`, the
//! user-data as given (404 when the droplet has none).

use std::time::Instant;

use anyhow::Result;

use super::http;

pub fn fetch(base: &str, deadline: Instant) -> (String, Result<Option<Vec<u8>>>) {
    let url = format!("{}/metadata/v1/user-data", base.trim_end_matches('/'));
    let got = http::get(&url, &[], deadline).and_then(http::Response::user_data);
    (url, got)
}
