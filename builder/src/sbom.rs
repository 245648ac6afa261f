//! The image's software bill of materials, `NAME.spdx.json`: SPDX 2.3 in
//! its JSON form (the format the osbuild/image-builder family writes), made
//! from what the build already knows (the manifest's packages and layers),
//! so it costs no second look at the tree.
//!
//! - the image itself (its sha256), described by the document;
//! - every installed Debian/Ubuntu package: name, version, architecture
//!   (in its purl), source package, the archive's download location and
//!   the `.deb`'s sha256 where the build's indexes list that version, the
//!   licence where the copyright file states one in machine-readable form
//!   (see [`crate::rootfs::Package`]); `NOASSERTION` where unknown;
//! - imgbuild (version, commit, sha256 of the running program) and its
//!   programs in the tree (the agent), and the layers (their cache keys);
//! - relationships: the document DESCRIBES the image; the image CONTAINS
//!   the packages, layers and programs; imgbuild GENERATES the image.
//!
//! Deterministic: the creation time is the build's SOURCE_DATE_EPOCH and
//! the namespace is derived from the image's sha256, so two builds of the
//! same image write the same bytes. Written by hand with serde_json: the
//! SPDX crates on crates.io parse documents but are not made for writing
//! 2.3 JSON.

use serde_json::{json, Value};

use crate::rootfs::{BuiltLayer, Package};

/// What the document names beside the packages.
pub struct Subject<'a> {
    /// The image's file name.
    pub image: &'a str,
    pub image_sha256: &'a str,
    pub source_date_epoch: i64,
    /// `ubuntu`, `debian` (os-release `ID`), for the purls.
    pub distro: &'a str,
    /// os-release `VERSION_CODENAME`, e.g. `noble`.
    pub codename: &'a str,
    pub layers: &'a [BuiltLayer],
    pub packages: &'a [Package],
    /// imgbuild's version (with its commit) and the running program's sha256.
    pub imgbuild_version: &'a str,
    pub imgbuild_sha256: Option<&'a str>,
}

const NOASSERTION: &str = "NOASSERTION";

/// imgbuild's version and the commit it was built from (as `--version`).
pub const IMGBUILD_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("IMGBUILD_GIT_COMMIT"),
    ")"
);

/// An SPDXID made of the characters SPDX allows (`[A-Za-z0-9.-]`), unique
/// by its index.
fn spdx_id(kind: &str, i: usize, name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("SPDXRef-{kind}-{i}-{clean}")
}

/// Percent-encodes what a purl component may not carry verbatim.
fn purl_escape(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b".-_~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn sha256(v: &str) -> Value {
    json!([{"algorithm": "SHA256", "checksumValue": v}])
}

/// `YYYY-MM-DDThh:mm:ssZ` of seconds since the epoch (UTC).
pub fn iso8601(epoch: i64) -> String {
    let days = epoch.div_euclid(86_400);
    let secs = epoch.rem_euclid(86_400);
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// The SPDX 2.3 document.
pub fn document(s: &Subject) -> Value {
    let image_id = "SPDXRef-Image";
    let tool_id = "SPDXRef-imgbuild";
    let mut packages = vec![
        json!({
            "SPDXID": image_id,
            "name": s.image,
            "downloadLocation": NOASSERTION,
            "filesAnalyzed": false,
            "checksums": sha256(s.image_sha256),
            "primaryPackagePurpose": "OPERATING-SYSTEM",
            "licenseConcluded": NOASSERTION,
            "licenseDeclared": NOASSERTION,
            "copyrightText": NOASSERTION,
        }),
        {
            let mut p = json!({
                "SPDXID": tool_id,
                "name": "imgbuild",
                "versionInfo": s.imgbuild_version,
                "downloadLocation": NOASSERTION,
                "filesAnalyzed": false,
                "primaryPackagePurpose": "APPLICATION",
                "licenseConcluded": NOASSERTION,
                "licenseDeclared": NOASSERTION,
                "copyrightText": NOASSERTION,
            });
            if let Some(sha) = s.imgbuild_sha256 {
                p["checksums"] = sha256(sha);
            }
            p
        },
    ];
    let mut relationships = vec![
        json!({"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES", "relatedSpdxElement": image_id}),
        json!({"spdxElementId": tool_id, "relationshipType": "GENERATES", "relatedSpdxElement": image_id}),
    ];
    let contains = |id: &str, relationships: &mut Vec<Value>| {
        relationships.push(json!({"spdxElementId": image_id, "relationshipType": "CONTAINS", "relatedSpdxElement": id}));
    };
    for (i, l) in s.layers.iter().enumerate() {
        let id = spdx_id("Layer", i, &l.name);
        packages.push(json!({
            "SPDXID": id,
            "name": l.name,
            "versionInfo": l.key,
            "downloadLocation": NOASSERTION,
            "filesAnalyzed": false,
            "comment": "an imgbuild layer; the version is its cache key",
            "licenseConcluded": NOASSERTION,
            "licenseDeclared": NOASSERTION,
            "copyrightText": NOASSERTION,
        }));
        contains(&id, &mut relationships);
        for (j, b) in l.binaries.iter().enumerate() {
            let bid = spdx_id("Program", i * 100 + j, &b.name);
            packages.push(json!({
                "SPDXID": bid,
                "name": b.name,
                "versionInfo": s.imgbuild_version,
                "downloadLocation": NOASSERTION,
                "filesAnalyzed": false,
                "checksums": sha256(&b.sha256),
                "primaryPackagePurpose": "APPLICATION",
                "comment": format!("installed at {} by layer {}", b.path, l.name),
                "licenseConcluded": NOASSERTION,
                "licenseDeclared": NOASSERTION,
                "copyrightText": NOASSERTION,
            }));
            contains(&bid, &mut relationships);
            relationships.push(json!({"spdxElementId": tool_id, "relationshipType": "GENERATES", "relatedSpdxElement": bid}));
        }
    }
    for (i, p) in s.packages.iter().enumerate() {
        let id = spdx_id("Package", i, &p.name);
        let mut v = json!({
            "SPDXID": id,
            "name": p.name,
            "versionInfo": p.version,
            "downloadLocation": p.download.as_deref().unwrap_or(NOASSERTION),
            "filesAnalyzed": false,
            "supplier": NOASSERTION,
            "licenseConcluded": NOASSERTION,
            "licenseDeclared": p.license.as_deref().unwrap_or(NOASSERTION),
            "copyrightText": NOASSERTION,
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": format!(
                    "pkg:deb/{}/{}@{}?arch={}&distro={}",
                    purl_escape(s.distro),
                    purl_escape(&p.name),
                    purl_escape(&p.version),
                    purl_escape(&p.arch),
                    purl_escape(s.codename),
                ),
            }],
        });
        if !p.source.is_empty() {
            v["sourceInfo"] = json!(format!(
                "built from the source package {} {}",
                p.source, p.source_version
            ));
        }
        if let Some(sha) = &p.sha256 {
            v["checksums"] = sha256(sha);
        }
        packages.push(v);
        contains(&id, &mut relationships);
    }
    json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": s.image,
        "documentNamespace": format!("https://imgbuild.invalid/spdx/{}/{}", purl_escape(s.image), s.image_sha256),
        "creationInfo": {
            "created": iso8601(s.source_date_epoch),
            "creators": [format!("Tool: imgbuild-{}", s.imgbuild_version)],
        },
        "packages": packages,
        "relationships": relationships,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn ids_and_purls() {
        assert_eq!(
            spdx_id("Package", 3, "libstdc++6"),
            "SPDXRef-Package-3-libstdc--6"
        );
        assert_eq!(purl_escape("1:2.3+dfsg-1"), "1%3A2.3%2Bdfsg-1");
        let pkgs = vec![Package {
            name: "libc6".into(),
            version: "2.39-0ubuntu8".into(),
            arch: "amd64".into(),
            source: "glibc".into(),
            source_version: "2.39-0ubuntu8".into(),
            license: Some("LGPL-2.1-or-later".into()),
            download: None,
            sha256: Some("ab".into()),
        }];
        let d = document(&Subject {
            image: "ecs.qcow2",
            image_sha256: "00",
            source_date_epoch: 0,
            distro: "ubuntu",
            codename: "noble",
            layers: &[],
            packages: &pkgs,
            imgbuild_version: "0.1.0",
            imgbuild_sha256: None,
        });
        let p = &d["packages"][2];
        assert_eq!(p["downloadLocation"], "NOASSERTION");
        assert_eq!(p["licenseDeclared"], "LGPL-2.1-or-later");
        assert_eq!(
            p["externalRefs"][0]["referenceLocator"],
            "pkg:deb/ubuntu/libc6@2.39-0ubuntu8?arch=amd64&distro=noble"
        );
        assert_eq!(d["relationships"].as_array().unwrap().len(), 3);
    }
}
