//! GCE's metadata server: `/computeMetadata/v1/instance/attributes/user-data`
//! with `Metadata-Flavor: Google` (the server refuses requests without it).

use std::time::Instant;

use anyhow::Result;

use super::http;

pub fn fetch(base: &str, deadline: Instant) -> (String, Result<Option<Vec<u8>>>) {
    let url = format!(
        "{}/computeMetadata/v1/instance/attributes/user-data",
        base.trim_end_matches('/')
    );
    let got = http::get(&url, &[("Metadata-Flavor", "Google")], deadline)
        .and_then(http::Response::user_data);
    (url, got)
}
