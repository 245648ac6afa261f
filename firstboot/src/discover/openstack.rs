//! OpenStack's metadata service over HTTP, for clouds that attach no
//! config drive: `/openstack/latest/user_data` (404 when the server was
//! started without user-data).

use std::time::Instant;

use anyhow::Result;

use super::http;

pub fn fetch(base: &str, deadline: Instant) -> (String, Result<Option<Vec<u8>>>) {
    let url = format!("{}/openstack/latest/user_data", base.trim_end_matches('/'));
    let got = http::get(&url, &[], deadline).and_then(http::Response::user_data);
    (url, got)
}
