//! Oracle Cloud's instance metadata service, version 2: `GET
//! /opc/v2/instance/` with `Authorization: Bearer Oracle` (v2 refuses
//! requests without it) answers a JSON document whose
//! `metadata.user_data` is the user-data in base64.

use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::{http, text};

pub fn fetch(base: &str, deadline: Instant) -> (String, Result<Option<Vec<u8>>>) {
    let url = format!("{}/opc/v2/instance/", base.trim_end_matches('/'));
    let got = http::get(&url, &[("Authorization", "Bearer Oracle")], deadline)
        .and_then(http::Response::json)
        .and_then(|doc| {
            let Some(doc) = doc else { return Ok(None) };
            match doc.pointer("/metadata/user_data") {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(b64)) => {
                    text::base64(b64.as_bytes(), seeds::yaml::MAX_BYTES)
                        .context("metadata.user_data")
                        .map(|d| Some(d).filter(|d| !d.is_empty()))
                }
                Some(_) => bail!("metadata.user_data is not a string"),
            }
        });
    (url, got)
}
