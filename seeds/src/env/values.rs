//! Checks of single values the agent acts on as root: host names, package
//! names, owners, file paths and modes, ssh keys, devices, identifiers.

use super::*;

/// A value quoted for a message (only ever used for non-secret keys).
pub(super) fn quoted(s: &str) -> String {
    let short: String = s.chars().take(60).collect();
    let ell = if s.chars().count() > 60 { "…" } else { "" };
    format!("{:?}", format!("{short}{ell}"))
}

/// A DNS host name (RFC 1123): labels of letters, digits and inner hyphens.
pub(super) fn check_hostname(d: &str) -> Result<(), &'static str> {
    if d.is_empty() || d.len() > 253 {
        return Err("is not a host name (1 to 253 characters)");
    }
    if d.parse::<std::net::IpAddr>().is_ok() {
        return Err("is an IP address: the domain must be a host name (e.g. ecs.example.org)");
    }
    let last = d.trim_end_matches('.').rsplit('.').next().unwrap_or("");
    if !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()) {
        return Err("is not a host name (its last label is all digits, like an IP address)");
    }
    for label in d.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("is not a host name (empty or overlong label)");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            || label.starts_with('-')
            || label.ends_with('-')
        {
            return Err("is not a host name (use letters, digits, `-` and `.`)");
        }
    }
    Ok(())
}

/// Checks a Sentry DSN, `SCHEME://KEY[:SECRET]@HOST[:PORT]/[PATH/]PROJECT`
/// (http or https, a numeric project id), the shape `sentry-report` parses.
/// The error never repeats the DSN (it carries the key).
pub(super) fn check_sentry_dsn(dsn: &str) -> Result<(), &'static str> {
    let rest = dsn
        .strip_prefix("https://")
        .or_else(|| dsn.strip_prefix("http://"))
        .ok_or("must start with https:// or http://")?;
    let (key, rest) = rest
        .split_once('@')
        .ok_or("has no key (KEY@ before the host)")?;
    let public = key.split(':').next().unwrap_or("");
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !token(public) || key.split(':').count() > 2 || !key.split(':').all(token) {
        return Err("has a key that is not letters, digits, - and _");
    }
    let (host, path) = rest
        .split_once('/')
        .ok_or("has no project (/PROJECT after the host)")?;
    let name = match host.rsplit_once(':') {
        Some((h, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    let ip = name.parse::<std::net::Ipv4Addr>().is_ok();
    if !ip && check_hostname(name).is_err() {
        return Err("has a host that is not a host name, IPv4 address or HOST:PORT");
    }
    let project = path.rsplit('/').next().unwrap_or("");
    if project.is_empty() || !project.bytes().all(|b| b.is_ascii_digit()) {
        return Err("must end in the numeric project id (.../PROJECT)");
    }
    if path
        .bytes()
        .any(|b| !(b.is_ascii_alphanumeric() || b"-_./".contains(&b)))
    {
        return Err("has a path with characters other than letters, digits, -, _, . and /");
    }
    Ok(())
}

pub(super) fn is_package_name(p: &str) -> bool {
    p.len() >= 2
        && p.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && p.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
}

/// `user:group` or `user`; names, or numeric ids that fit `uid_t`/`gid_t`
/// (not 4294967295, which is `(uid_t)-1`, "no change", to chown).
pub(super) fn check_owner(o: &str) -> Result<(), String> {
    let part = |s: &str, what: &str| -> Result<(), String> {
        if s.is_empty()
            || s.len() > 32
            || s.starts_with('-')
            || !s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
        {
            return Err(
                "is not `user:group` or `user` (names of letters, digits, `_`, `-`, `.`)"
                    .to_string(),
            );
        }
        if s.bytes().all(|b| b.is_ascii_digit()) && s.parse::<u32>().map_or(true, |n| n == u32::MAX)
        {
            return Err(format!(
                "has the {what} id {s}, which does not fit a {what} id (at most {})",
                u32::MAX - 1
            ));
        }
        Ok(())
    };
    match o.split_once(':') {
        Some((u, g)) => part(u, "user").and_then(|_| part(g, "group")),
        None => part(o, "user"),
    }
}

/// The agent's own files, and the kernel's: an extra file may not be there.
pub(super) const RESERVED_PATHS: &[(&str, &str)] = &[
    ("/proc", "is under /proc: the agent writes no kernel files"),
    ("/sys", "is under /sys: the agent writes no kernel files"),
    ("/dev", "is under /dev: the agent writes no device files"),
    (
        "/run/active-env.",
        "is the active env the agent publishes (/run/active-env.*)",
    ),
    (
        "/run/appliance-failed",
        "is the agent's failure report (/run/appliance-failed)",
    ),
    (
        "/run/ecs-firstboot.",
        "is the agent's hand-off file (/run/ecs-firstboot.*)",
    ),
];

/// Linux's PATH_MAX, counting the terminating NUL.
pub(super) const PATH_MAX: usize = 4096;
/// Linux's NAME_MAX.
pub(super) const NAME_MAX: usize = 255;

/// An `extra.files` path: absolute, normalised, of a size Linux takes, and
/// not a kernel, device or agent file.
pub(super) fn check_file_path(p: &str) -> Result<(), String> {
    if p.chars().any(char::is_control) {
        return Err("contains a control character".into());
    }
    if !p.starts_with('/') {
        return Err("must be an absolute file path (starting with /)".into());
    }
    if p.len() >= PATH_MAX {
        return Err(format!(
            "is longer than PATH_MAX ({} bytes at most)",
            PATH_MAX - 1
        ));
    }
    if p.ends_with('/') {
        return Err("ends with `/`: it must name a file".into());
    }
    for c in p[1..].split('/') {
        match c {
            "" => return Err("is not normalised (it has `//`)".into()),
            "." => return Err("is not normalised (it has a `.` component)".into()),
            ".." => return Err("is not normalised (it has a `..` component)".into()),
            c if c.len() > NAME_MAX => {
                return Err(format!(
                    "has a component longer than NAME_MAX ({NAME_MAX} bytes)"
                ))
            }
            _ => {}
        }
    }
    // /var/run is a symlink to /run.
    let p = match p.strip_prefix("/var/run") {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => format!("/run{rest}"),
        _ => p.to_string(),
    };
    for (reserved, why) in RESERVED_PATHS {
        let under = match reserved.strip_suffix('.') {
            // A prefix of file names: /run/active-env.*
            Some(_) => p.starts_with(reserved),
            None => {
                p == *reserved
                    || p.strip_prefix(reserved)
                        .is_some_and(|rest| rest.starts_with('/'))
            }
        };
        if under {
            return Err((*why).to_string());
        }
    }
    Ok(())
}

/// The source text of the scalar at `pos` (after an anchor or a tag), to
/// tell `0644` from `644`, which YAML 1.1 resolves to different numbers.
pub(super) fn source_token(text: &str, pos: Pos) -> Option<&str> {
    let line = text.split('\n').nth(pos.line.checked_sub(1)?)?;
    let start = line.char_indices().nth(pos.col.checked_sub(1)?)?.0;
    let mut rest = &line[start..];
    while rest.starts_with(['&', '!']) {
        let end = rest.find([' ', '\t']).unwrap_or(rest.len());
        rest = rest[end..].trim_start_matches([' ', '\t']);
    }
    let end = rest
        .find(|c: char| c.is_whitespace() || ",]}#".contains(c))
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

/// `permissions`: an octal mode of at most 07777, neither setuid nor
/// setgid; `written` is how an integer was written.
pub(super) fn check_mode(v: &Value, written: Option<&str>) -> Result<Option<u32>, String> {
    let mode = match v {
        Value::Null => return Ok(None),
        Value::Int(i) => {
            let digits = written
                .unwrap_or("")
                .trim_matches(['"', '\''])
                .trim_start_matches(['+', '-'])
                .replace('_', "");
            let radix_literal = digits == "0"
                || digits.starts_with("0x")
                || digits.starts_with("0b")
                || (digits.starts_with('0') && digits.bytes().all(|b| (b'0'..=b'7').contains(&b)));
            if !radix_literal {
                let decimal = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
                return Err(
                    if decimal && digits.len() <= 4 && digits.bytes().all(|b| b < b'8') {
                        format!(
                            "{digits} unquoted is the decimal number {digits} (mode 0{:o}); \
                             write 0{digits} or '{digits}'",
                            i
                        )
                    } else if decimal {
                        format!(
                            "{digits} unquoted is a decimal number; write the mode in octal, \
                             e.g. 0644 or '0644'"
                        )
                    } else {
                        "it is not written in octal; write it as 0644 or '0644'".to_string()
                    },
                );
            }
            u32::try_from(*i).map_err(|_| "write it in octal, e.g. 0644 or \"0600\"")?
        }
        Value::Str(s) if !s.is_empty() && s.bytes().all(|b| (b'0'..=b'7').contains(&b)) => {
            u32::from_str_radix(s, 8).map_err(|_| "it is larger than 07777")?
        }
        _ => return Err("write it in octal, e.g. 0644 or \"0600\"".into()),
    };
    if mode > 0o7777 {
        return Err(format!(
            "0{mode:o} is larger than 07777 (a mode has permission, setuid, setgid and sticky \
             bits only)"
        ));
    }
    if mode & 0o6000 != 0 {
        let which = match mode & 0o6000 {
            0o4000 => "setuid (04000)",
            0o2000 => "setgid (02000)",
            _ => "setuid and setgid (06000)",
        };
        return Err(format!(
            "0{mode:o} sets {which}: an extra file may not be setuid or setgid"
        ));
    }
    Ok(Some(mode))
}

/// Key types `authorized_keys` takes as plain public keys.
pub(super) const SSH_KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ssh-dss",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// One OpenSSH public key line: `type base64 [comment]`, a known type, the
/// base64 decoding to a key blob that starts with the same type; no options
/// and no line break (which would add a line to `authorized_keys`).
pub(super) fn check_ssh_key(k: &str) -> Result<(), String> {
    if k.contains(['\n', '\r']) {
        return Err("contains a line break: an entry is one public key line".into());
    }
    if k.chars().any(char::is_control) {
        return Err("contains a control character".into());
    }
    let hint = "is not an OpenSSH public key line (`type base64 [comment]`, e.g. ssh-ed25519 AAAA... user@host)";
    let k = k.trim_matches([' ', '\t']);
    let Some((ty, rest)) = k.split_once([' ', '\t']) else {
        return Err(hint.into());
    };
    if !SSH_KEY_TYPES.contains(&ty) {
        if ty.contains(['=', ',', '"']) || SSH_KEY_TYPES.iter().any(|t| rest.contains(t)) {
            return Err(format!(
                "{hint}: it starts with options; give the key alone"
            ));
        }
        return Err(format!(
            "`{}` is not a known key type ({})",
            yaml::printable(&ty.chars().take(40).collect::<String>()),
            SSH_KEY_TYPES.join(", ")
        ));
    }
    let rest = rest.trim_start_matches([' ', '\t']);
    let b64 = rest.split([' ', '\t']).next().unwrap_or("");
    let blob = crate::base64::decode_key(b64.as_bytes())
        .ok()
        .filter(|b| !b.is_empty())
        .ok_or_else(|| format!("{hint}: the key is not base64"))?;
    let embedded = blob
        .get(..4)
        .map(|l| u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize)
        .and_then(|n| blob.get(4..4usize.checked_add(n)?));
    match embedded {
        Some(t) if t == ty.as_bytes() => Ok(()),
        Some(t) if t.len() <= 64 && t.iter().all(|b| b.is_ascii_graphic()) => Err(format!(
            "says `{ty}` but the key is a `{}` key",
            String::from_utf8_lossy(t)
        )),
        _ => Err(format!("{hint}: the base64 is not a `{ty}` key")),
    }
}

/// A `device:` value: a disk's path under /dev, as written (no spaces).
pub(super) fn check_device(p: &str) -> Result<(), String> {
    let hint = "(e.g. /dev/vdb, /dev/nvme1n1 or /dev/disk/by-id/...)";
    if p.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "has spaces or control characters: it must be a disk's path {hint}"
        ));
    }
    let Some(rel) = p.strip_prefix("/dev/").filter(|r| !r.is_empty()) else {
        return Err(format!("is not a device path {hint}"));
    };
    if rel.ends_with('/')
        || rel
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(format!("is not a normalised device path {hint}"));
    }
    let num = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let letters = |s: &str| (1..=3).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_lowercase());
    let parts: Vec<&str> = rel.split('/').collect();
    let disk = match parts.as_slice() {
        [name] => {
            ["sd", "vd", "xvd", "hd"]
                .iter()
                .any(|pre| name.strip_prefix(pre).is_some_and(letters))
                || name
                    .strip_prefix("nvme")
                    .and_then(|r| r.split_once('n'))
                    .is_some_and(|(c, n)| num(c) && num(n))
                || ["mmcblk", "md", "dm-", "loop"]
                    .iter()
                    .any(|pre| name.strip_prefix(pre).is_some_and(num))
        }
        ["mapper", name] => !name.is_empty() && *name != "control",
        ["disk", by, _] => by.starts_with("by-"),
        _ => false,
    };
    if disk {
        Ok(())
    } else {
        Err(format!("does not name a disk {hint}"))
    }
}

pub(super) fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}
