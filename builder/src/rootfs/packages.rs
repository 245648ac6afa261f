//! The packages installed in a tree, with what the SBOM says of each: the
//! source package, the licence where the package's `copyright` file states
//! it in the machine-readable format (DEP-5), and the `.deb`'s download
//! location and sha256 from the archive's `Packages` indexes the build
//! fetched (the apt lists in the cache).
//!
//! Debian's licence short names are not SPDX identifiers; [`spdx_license`]
//! maps the common ones and gives up (no assertion) on anything else,
//! rather than guess. No crate parses DEP-5 with that mapping, so it is
//! written here; it reads only the header fields it needs.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};

use super::*;

/// An installed package of the tree (`dpkg-query`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub arch: String,
    /// The source package and its version (the same as the binary's for
    /// most).
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub source_version: String,
    /// An SPDX licence expression, when the copyright file states one that
    /// maps to SPDX identifiers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
    /// Where the archive serves the `.deb`, and its sha256, when the
    /// build's indexes list this version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// `Filename` and `SHA256` of every (package, version, architecture) in a
/// set of `Packages` indexes, with the mirror each came from.
#[derive(Debug, Default)]
pub struct AptIndex {
    debs: HashMap<(String, String, String), (String, String)>,
}

impl AptIndex {
    /// Reads the `*_Packages` files of an apt lists directory; `mirrors`
    /// are the archive URLs the build used (a list file's name is its URL
    /// without the scheme, `/` as `_`). Unreadable or foreign files are
    /// skipped: the index only ever adds facts.
    pub fn load(lists: &Path, mirrors: &[&str]) -> AptIndex {
        let mut index = AptIndex::default();
        let Ok(dir) = fs::read_dir(lists) else {
            return index;
        };
        let mut files: Vec<PathBuf> = dir
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.ends_with("_Packages"))
            })
            .collect();
        files.sort();
        for f in files {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            let Some(mirror) = mirrors.iter().find(|m| {
                let stem = m
                    .split_once("://")
                    .map_or(**m, |(_, rest)| rest)
                    .trim_end_matches('/')
                    .replace('/', "_");
                name.starts_with(&format!("{stem}_dists_"))
            }) else {
                continue;
            };
            if let Ok(file) = fs::File::open(&f) {
                index.add(BufReader::new(file), mirror.trim_end_matches('/'));
            }
        }
        index
    }

    /// Adds the stanzas of one `Packages` file served by `mirror`.
    fn add(&mut self, r: impl BufRead, mirror: &str) {
        let mut cur: [Option<String>; 5] = Default::default();
        let flush = |cur: &mut [Option<String>; 5], debs: &mut HashMap<_, _>| {
            if let [Some(p), Some(v), Some(a), Some(f), Some(s)] = std::mem::take(cur) {
                debs.entry((p, v, a))
                    .or_insert((format!("{mirror}/{f}"), s));
            }
        };
        for line in r.lines() {
            let Ok(line) = line else { break };
            if line.is_empty() {
                flush(&mut cur, &mut self.debs);
                continue;
            }
            for (i, k) in [
                "Package: ",
                "Version: ",
                "Architecture: ",
                "Filename: ",
                "SHA256: ",
            ]
            .iter()
            .enumerate()
            {
                if let Some(v) = line.strip_prefix(k) {
                    cur[i] = Some(v.trim().to_string());
                }
            }
        }
        flush(&mut cur, &mut self.debs);
    }

    fn get(&self, p: &Package) -> Option<&(String, String)> {
        self.debs
            .get(&(p.name.clone(), p.version.clone(), p.arch.clone()))
    }
}

/// The packages installed in the tree at `root`, sorted by name, with
/// their licences and (from `index`) download locations.
pub fn installed_packages(root: &Path, index: &AptIndex) -> anyhow::Result<Vec<Package>> {
    let admindir = root.join("var/lib/dpkg");
    let out = cmd::run(&mut cmd::command(
        "dpkg-query",
        [
            format!("--admindir={}", admindir.display()),
            "-W".into(),
            "-f=${db:Status-Abbrev}\t${Package}\t${Version}\t${Architecture}\t${source:Package}\t${source:Version}\n".into(),
        ],
    ))
    .context("listing the tree's packages")?;
    let mut pkgs: Vec<Package> = out
        .text()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f.len() == 6 && f[0].starts_with("ii")).then(|| Package {
                name: f[1].to_string(),
                version: f[2].to_string(),
                arch: f[3].to_string(),
                source: f[4].to_string(),
                source_version: f[5].to_string(),
                license: None,
                download: None,
                sha256: None,
            })
        })
        .collect();
    for p in &mut pkgs {
        p.license = package_license(root, &p.name);
        if let Some((url, sha)) = index.get(p) {
            p.download = Some(url.clone());
            p.sha256 = Some(sha.clone());
        }
    }
    pkgs.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(pkgs)
}

/// The licence of `/usr/share/doc/NAME/copyright` in the tree (reached
/// inside the tree only), as SPDX.
fn package_license(root: &Path, name: &str) -> Option<String> {
    let rel = PathBuf::from("usr/share/doc").join(name).join("copyright");
    let path = resolve_in_root(root, &rel).ok()?;
    let meta = fs::symlink_metadata(&path).ok()?;
    if !meta.is_file() || meta.len() > 4 << 20 {
        return None;
    }
    dep5_license(&fs::read_to_string(&path).ok()?)
}

/// The licence a DEP-5 copyright file gives its `Files: *` paragraph (or,
/// without one, the header's `License:`), as an SPDX expression; `None` for
/// a file in another format or a licence with no SPDX identifier here.
pub fn dep5_license(text: &str) -> Option<String> {
    let first = text.lines().next()?;
    if !first.starts_with("Format:") || !first.contains("copyright-format") {
        return None;
    }
    let mut header_license = None;
    for (i, para) in text.split("\n\n").enumerate() {
        let field = |k: &str| {
            para.lines()
                .find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_string()))
        };
        let license = field("License:");
        if i == 0 {
            header_license = license;
            continue;
        }
        if field("Files:").is_some_and(|f| f.split_whitespace().any(|g| g == "*")) {
            return license.as_deref().and_then(spdx_license);
        }
    }
    header_license.as_deref().and_then(spdx_license)
}

/// A Debian licence expression (`GPL-2+ or Artistic`, `LGPL-2.1+ and
/// BSD-3-clause`, `Expat`) as SPDX, when every name in it maps.
pub fn spdx_license(debian: &str) -> Option<String> {
    let mut out = Vec::new();
    for word in debian.split_whitespace() {
        match word.to_ascii_lowercase().trim_end_matches(',') {
            "or" => out.push("OR".to_string()),
            "and" => out.push("AND".to_string()),
            w => out.push(spdx_id(w)?.to_string()),
        }
    }
    let ok = !out.is_empty()
        && out.iter().enumerate().all(|(i, t)| {
            let op = t == "OR" || t == "AND";
            op == (i % 2 == 1)
        })
        && out.len() % 2 == 1;
    ok.then(|| out.join(" "))
}

fn spdx_id(debian: &str) -> Option<&'static str> {
    Some(match debian {
        "gpl-1+" => "GPL-1.0-or-later",
        "gpl-2" => "GPL-2.0-only",
        "gpl-2+" => "GPL-2.0-or-later",
        "gpl-3" => "GPL-3.0-only",
        "gpl-3+" => "GPL-3.0-or-later",
        "lgpl-2" => "LGPL-2.0-only",
        "lgpl-2+" => "LGPL-2.0-or-later",
        "lgpl-2.1" => "LGPL-2.1-only",
        "lgpl-2.1+" => "LGPL-2.1-or-later",
        "lgpl-3" => "LGPL-3.0-only",
        "lgpl-3+" => "LGPL-3.0-or-later",
        "agpl-3" => "AGPL-3.0-only",
        "agpl-3+" => "AGPL-3.0-or-later",
        "apache-2.0" => "Apache-2.0",
        "artistic" | "artistic-1.0" => "Artistic-1.0",
        "artistic-2.0" => "Artistic-2.0",
        "bsd-2-clause" => "BSD-2-Clause",
        "bsd-3-clause" => "BSD-3-Clause",
        "bsd-4-clause" => "BSD-4-Clause",
        "expat" | "mit" => "MIT",
        "isc" => "ISC",
        "mpl-1.1" => "MPL-1.1",
        "mpl-2.0" => "MPL-2.0",
        "zlib" => "Zlib",
        "cc0-1.0" => "CC0-1.0",
        "psf-2" => "PSF-2.0",
        "openssl" => "OpenSSL",
        "bsl-1.0" => "BSL-1.0",
        "unicode-dfs-2016" => "Unicode-DFS-2016",
        "curl" => "curl",
        "gfdl-1.2+" => "GFDL-1.2-or-later",
        "gfdl-1.3+" => "GFDL-1.3-or-later",
        "postgresql" => "PostgreSQL",
        "python-2.0" => "Python-2.0",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn licences() {
        assert_eq!(spdx_license("GPL-2+"), Some("GPL-2.0-or-later".into()));
        assert_eq!(
            spdx_license("GPL-1+ or Artistic"),
            Some("GPL-1.0-or-later OR Artistic-1.0".into())
        );
        assert_eq!(
            spdx_license("Expat and BSD-3-clause"),
            Some("MIT AND BSD-3-Clause".into())
        );
        assert_eq!(spdx_license("public-domain"), None);
        assert_eq!(spdx_license("GPL-2+ or"), None);
        assert_eq!(spdx_license(""), None);
        let dep5 = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\nUpstream-Name: x\n\nFiles: debian/*\nLicense: GPL-3+\n\nFiles: *\nCopyright: someone\nLicense: LGPL-2.1+\n continued text\n\nLicense: LGPL-2.1+\n text\n";
        assert_eq!(dep5_license(dep5), Some("LGPL-2.1-or-later".into()));
        assert_eq!(dep5_license("This is free software.\n"), None);
    }

    #[test]
    fn index() {
        let mut i = AptIndex::default();
        i.add(
            "Package: a\nArchitecture: amd64\nVersion: 1:2.0-1\nFilename: pool/main/a/a/a_2.0-1_amd64.deb\nSHA256: abc\n\nPackage: b\nVersion: 1\nArchitecture: all\n"
                .as_bytes(),
            "http://archive.ubuntu.com/ubuntu",
        );
        let p = |n: &str, v: &str, a: &str| Package {
            name: n.into(),
            version: v.into(),
            arch: a.into(),
            source: n.into(),
            source_version: v.into(),
            license: None,
            download: None,
            sha256: None,
        };
        assert_eq!(
            i.get(&p("a", "1:2.0-1", "amd64")),
            Some(&(
                "http://archive.ubuntu.com/ubuntu/pool/main/a/a/a_2.0-1_amd64.deb".into(),
                "abc".into()
            ))
        );
        assert_eq!(i.get(&p("a", "2.0-1", "amd64")), None);
        assert_eq!(i.get(&p("b", "1", "all")), None, "no Filename: not listed");
    }
}
