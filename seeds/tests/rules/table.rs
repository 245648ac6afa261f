// The env rules as a table: each bad env, where its problem is
// (`LINE:COL: key.path`) and what the message says. Shared by the model's
// test (seeds/tests/env_rules.rs) and the CLI's (builder/tests/env_rules_cli.rs,
// which `include!`s this file), so every rule is proved in both places.
//
// Every secret in these envs contains `hunter2` (and no other value does):
// no message may contain it, in any case.

/// The secret marker; no message may contain it (compared case-insensitively).
pub const SECRET_MARKER: &str = "hunter2";

/// One bad env.
pub struct Case {
    pub name: &'static str,
    pub env: Vec<u8>,
    /// `LINE:COL: key.path:` that one of the problems starts with.
    pub at: &'static str,
    /// Part of that problem's message.
    pub says: &'static str,
}

/// A good env (lines 1-9): secrets on lines 5, 7, 8 and 9.
pub const BASE: &str = "#cloud-config
ssh_authorized_keys: [\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleKeyReplaceMe admin@example\"]
appliance:
  domain: ecs.example.org
  backup: {url: 'ssh://u:hunter2-SECRET@h/x'}
ecs:
  settings: \"SECRET_KEY = 'hunter2-SECRET'\"
  vault_encrypt: hunter2-SECRET-enc
  vault_sign: hunter2-SECRET-sign
";

/// BASE with `lines` inserted as line 5 onwards (inside `appliance`).
pub fn with(lines: &str) -> Vec<u8> {
    BASE.replace(
        "  domain: ecs.example.org\n",
        &format!("  domain: ecs.example.org\n{lines}"),
    )
    .into_bytes()
}

/// BASE with one text replaced.
pub fn replaced(from: &str, to: &str) -> Vec<u8> {
    assert!(BASE.contains(from), "{from}");
    BASE.replacen(from, to, 1).into_bytes()
}

/// One `extra.files` entry (line 5) with these fields.
pub fn file(fields: &str) -> Vec<u8> {
    with(&format!("  extra: {{files: [{{{fields}}}]}}\n"))
}

fn case(name: &'static str, env: Vec<u8>, at: &'static str, says: &'static str) -> Case {
    Case {
        name,
        env,
        at,
        says,
    }
}

/// An ed25519 key blob's base64 under another type's name.
const ED25519_B64: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIExampleKeyReplaceMe";

pub fn cases() -> Vec<Case> {
    let mut string_bomb = String::from("#cloud-config\nbig: &big \"");
    string_bomb.push_str(&"x".repeat(1 << 20));
    string_bomb.push_str("\"\nappliance:\n  domain: a.b\n  l: [");
    string_bomb.push_str(&vec!["*big"; 3000].join(", "));
    string_bomb.push_str("]\necs: {settings: a, vault_encrypt: b, vault_sign: c}\n");
    let long_key = "k".repeat(1 << 20);
    let children: Vec<String> = (0..12).map(|i| format!("c{i}: 1")).collect();
    // An explicit key: an implicit one is at most 1024 characters.
    let flat_bomb = with(&format!(
        "  ? {long_key}\n  : {{{}}}\n",
        children.join(", ")
    ));
    let long_path = format!("/{}", vec!["d"; 2100].join("/"));
    let long_path: &'static str = Box::leak(long_path.into_boxed_str());
    vec![
        // Limits count bytes.
        case(
            "string-alias-bomb",
            string_bomb.into_bytes(),
            "5:91: appliance.l[14]:",
            "more than 16 MiB of text): refusing a possible alias bomb",
        ),
        case(
            "flattened-too-large",
            flat_bomb,
            "6:48: appliance.kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk…:",
            "the flattened env would be larger than 16 MiB",
        ),
        // Secrets: written as maps, tagged, with control characters.
        case(
            "secret-map-settings",
            replaced(
                "settings: \"SECRET_KEY = 'hunter2-SECRET'\"",
                "settings: {'KEY=hunter2': 1}",
            ),
            "7:29: ecs.settings:",
            "a key in it makes a variable name a shell cannot source (not shown",
        ),
        case(
            "secret-map-duplicate-key",
            replaced(
                "settings: \"SECRET_KEY = 'hunter2-SECRET'\"",
                "settings: {'KEY=hunter2': 1, 'KEY=hunter2': 2}",
            ),
            "7:32: ecs.settings:",
            "a key in it appears twice (first at line 7; not shown",
        ),
        case(
            "secret-map-collision",
            replaced(
                "settings: \"SECRET_KEY = 'hunter2-SECRET'\"",
                "settings: {hunter2_x: 1, HUNTER2_X: 2}",
            ),
            "7:25: ecs.settings:",
            "a key in it collides with a key in `ecs.settings`",
        ),
        case(
            "secret-map-collides-outside",
            replaced(
                "settings: \"SECRET_KEY = 'hunter2-SECRET'\"",
                "settings: {x: hunter2}\n  settings_x: 1",
            ),
            "8:15: ecs.settings_x:",
            "it collides with a key in `ecs.settings` (line 7)",
        ),
        case(
            "secret-map-backup-url",
            replaced(
                "url: 'ssh://u:hunter2-SECRET@h/x'",
                "url: {'pw=hunter2': 1, 'pw=hunter2': 2}",
            ),
            "5:35: appliance.backup.url:",
            "a key in it appears twice",
        ),
        case(
            "secret-map-file-contents",
            file("path: /etc/x, contents: {'hunter2=1': 1}"),
            "5:44: appliance.extra.files[0].contents:",
            "must be a string, got a map",
        ),
        case(
            "secret-map-file-contents-duplicate",
            file("path: /etc/x, contents: {'hunter2=1': 1, 'hunter2=1': 2}"),
            "5:61: appliance.extra.files[0].contents:",
            "a key in it appears twice",
        ),
        case(
            "secret-tag",
            replaced("vault_sign: hunter2", "vault_sign: !hunter2-SECRET hunter2"),
            "9:15: ecs.vault_sign:",
            "unsupported tag (not shown: it is on a secret)",
        ),
        case(
            "secret-tag-on-a-map",
            replaced(
                "vault_sign: hunter2-SECRET-sign",
                "vault_sign: !hunter2 {a: 1}",
            ),
            "9:15: ecs.vault_sign:",
            "unsupported tag (not shown: it is on a secret)",
        ),
        case(
            "secret-tag-on-a-key",
            replaced(
                "settings: \"SECRET_KEY = 'hunter2-SECRET'\"",
                "settings: {!hunter2 k: 1}",
            ),
            "7:14: ecs.settings:",
            "unsupported tag (not shown",
        ),
        case(
            "secret-control-character",
            replaced(
                "vault_sign: hunter2-SECRET-sign",
                "vault_sign: \"hunter2\\x1b[2J\"",
            ),
            "9:15: ecs.vault_sign:",
            "contains a control character (not shown: it is secret)",
        ),
        // Modes.
        case(
            "mode-decimal",
            file("path: /etc/x, permissions: 644"),
            "5:47: appliance.extra.files[0].permissions:",
            "644 unquoted is the decimal number 644 (mode 01204); write 0644 or '644'",
        ),
        case(
            "mode-decimal-large",
            file("path: /etc/x, permissions: 99999"),
            "5:47: appliance.extra.files[0].permissions:",
            "is a decimal number; write the mode in octal",
        ),
        case(
            "mode-decimal-tagged",
            file("path: /etc/x, permissions: !!int \"644\""),
            "5:47: appliance.extra.files[0].permissions:",
            "644 unquoted is the decimal number 644",
        ),
        case(
            "mode-sexagesimal",
            file("path: /etc/x, permissions: 1:30"),
            "5:47: appliance.extra.files[0].permissions:",
            "it is not written in octal",
        ),
        case(
            "mode-above-07777",
            file("path: /etc/x, permissions: '17777'"),
            "5:47: appliance.extra.files[0].permissions:",
            "017777 is larger than 07777",
        ),
        case(
            "mode-above-07777-octal",
            file("path: /etc/x, permissions: 0100644"),
            "5:47: appliance.extra.files[0].permissions:",
            "0100644 is larger than 07777",
        ),
        case(
            "mode-setuid",
            file("path: /etc/x, permissions: 04755"),
            "5:47: appliance.extra.files[0].permissions:",
            "04755 sets setuid (04000)",
        ),
        case(
            "mode-setgid",
            file("path: /etc/x, permissions: '2755'"),
            "5:47: appliance.extra.files[0].permissions:",
            "02755 sets setgid (02000)",
        ),
        // ssh keys.
        case(
            "ssh-key-newline",
            replaced(
                "AAAAIExampleKeyReplaceMe admin@example\"",
                "AAAAIExampleKeyReplaceMe a\\ncommand=\\\"sh\\\" ssh-rsa AAAA b\"",
            ),
            "2:23: ssh_authorized_keys[0]:",
            "contains a line break: an entry is one public key line",
        ),
        case(
            "ssh-key-options",
            BASE.replacen("[\"ssh-ed25519", "['command=\"sh\" ssh-ed25519", 1)
                .replacen("admin@example\"]", "admin@example']", 1)
                .into_bytes(),
            "2:23: ssh_authorized_keys[0]:",
            "it starts with options; give the key alone",
        ),
        case(
            "ssh-key-unknown-type",
            replaced("[\"ssh-ed25519 AAAA", "[\"ssh-foo AAAA"),
            "2:23: ssh_authorized_keys[0]:",
            "`ssh-foo` is not a known key type",
        ),
        case(
            "ssh-key-not-base64",
            replaced(ED25519_B64, "AAAA*not-base64*"),
            "2:23: ssh_authorized_keys[0]:",
            "the key is not base64",
        ),
        case(
            "ssh-key-type-mismatch",
            replaced("\"ssh-ed25519 AAAA", "\"ssh-rsa AAAA"),
            "2:23: ssh_authorized_keys[0]:",
            "says `ssh-rsa` but the key is a `ssh-ed25519` key",
        ),
        case(
            "ssh-key-truncated",
            replaced(ED25519_B64, "AAAAC3Nza"),
            "2:23: ssh_authorized_keys[0]:",
            "not an OpenSSH public key line",
        ),
        case(
            "ssh-key-one-word",
            replaced(
                &format!("ssh-ed25519 {ED25519_B64} admin@example"),
                "ssh-ed25519",
            ),
            "2:23: ssh_authorized_keys[0]:",
            "is not an OpenSSH public key line",
        ),
        case(
            "ssh-deprecated-key",
            with("  x: 1\n")
                .into_iter()
                .chain(b"ssh_deprecated_keys: [\"ssh-rsa AAAA\"]\n".iter().copied())
                .collect(),
            "11:23: ssh_deprecated_keys[0]:",
            "the base64 is not a `ssh-rsa` key",
        ),
        // Control characters in what reaches /run/active-env.env.
        case(
            "control-nul-in-value",
            with("  allowed_hosts: \"a\\0b\"\n"),
            "5:18: appliance.allowed_hosts:",
            "contains the control character U+0000 at character 2",
        ),
        case(
            "control-escape-in-unknown-key-value",
            with("  colour: \"\\e[31mred\"\n"),
            "5:11: appliance.colour:",
            "contains the control character U+001B at character 1",
        ),
        case(
            "control-in-settings-text",
            replaced("SECRET_KEY = 'hunter2-SECRET'", "hunter2\\r"),
            "7:13: ecs.settings:",
            "contains a control character (not shown: it is secret)",
        ),
        case(
            "newline-in-one-line-value",
            with("  git: {branch: \"main\\nx\"}\n"),
            "5:17: appliance.git.branch:",
            "contains a line break or tab: it must be one line",
        ),
        case(
            "control-in-key",
            with("  \"a\\eb\": 1\n"),
            "5:11: appliance.a\\u{1b}b:",
            "which a shell cannot source",
        ),
        // extra.files paths and owners.
        case(
            "path-proc",
            file("path: /proc/sys/kernel/core_pattern"),
            "5:26: appliance.extra.files[0].path:",
            "is under /proc",
        ),
        case(
            "path-sys",
            file("path: /sys/kernel/x"),
            "5:26: appliance.extra.files[0].path:",
            "is under /sys",
        ),
        case(
            "path-dev",
            file("path: /dev/sda"),
            "5:26: appliance.extra.files[0].path:",
            "is under /dev",
        ),
        case(
            "path-active-env",
            file("path: /run/active-env.env"),
            "5:26: appliance.extra.files[0].path:",
            "is the active env the agent publishes",
        ),
        case(
            "path-active-env-via-var-run",
            file("path: /var/run/active-env.yml"),
            "5:26: appliance.extra.files[0].path:",
            "is the active env the agent publishes",
        ),
        case(
            "path-appliance-failed",
            file("path: /run/appliance-failed"),
            "5:26: appliance.extra.files[0].path:",
            "is the agent's failure report",
        ),
        case(
            "path-dot",
            file("path: /etc/./x"),
            "5:26: appliance.extra.files[0].path:",
            "is not normalised (it has a `.` component)",
        ),
        case(
            "path-double-slash",
            file("path: //etc/x"),
            "5:26: appliance.extra.files[0].path:",
            "is not normalised (it has `//`)",
        ),
        case(
            "path-dotdot",
            file("path: /etc/../x"),
            "5:26: appliance.extra.files[0].path:",
            "is not normalised (it has a `..` component)",
        ),
        case(
            "path-trailing-slash",
            file("path: /etc/x/"),
            "5:26: appliance.extra.files[0].path:",
            "ends with `/`",
        ),
        case(
            "path-over-path-max",
            file(&format!("path: {long_path}")),
            "5:26: appliance.extra.files[0].path:",
            "is longer than PATH_MAX",
        ),
        case(
            "path-control-character",
            file("path: \"/etc/x\\ty\""),
            "5:26: appliance.extra.files[0].path:",
            "contains a control character",
        ),
        case(
            "path-duplicate",
            with("  extra: {files: [{path: /etc/x}, {path: /etc/x}]}\n"),
            "5:42: appliance.extra.files[1].path:",
            "\"/etc/x\" is also the path of files[0] (line 5)",
        ),
        case(
            "owner-uid-too-large",
            file("path: /etc/x, owner: '99999999999:0'"),
            "5:41: appliance.extra.files[0].owner:",
            "has the user id 99999999999, which does not fit",
        ),
        case(
            "owner-gid-minus-one",
            file("path: /etc/x, owner: 'app:4294967295'"),
            "5:41: appliance.extra.files[0].owner:",
            "has the group id 4294967295, which does not fit",
        ),
        case(
            "owner-dash",
            file("path: /etc/x, owner: '-1'"),
            "5:41: appliance.extra.files[0].owner:",
            "is not `user:group` or `user`",
        ),
        // Storage.
        case(
            "device-dev-null",
            with("  storage: {data: {device: /dev/null}}\n"),
            "5:28: appliance.storage.data.device:",
            "\"/dev/null\" does not name a disk",
        ),
        case(
            "device-trailing-space",
            with("  storage: {data: {device: '/dev/vdb '}}\n"),
            "5:28: appliance.storage.data.device:",
            "has spaces or control characters",
        ),
        case(
            "device-not-normalised",
            with("  storage: {data: {device: /dev/../etc/passwd}}\n"),
            "5:28: appliance.storage.data.device:",
            "is not a normalised device path",
        ),
        case(
            "device-outside-dev",
            with("  storage: {volatile: {device: /tmp/disk}}\n"),
            "5:32: appliance.storage.volatile.device:",
            "is not a device path",
        ),
        case(
            "size-below-minimum",
            with("  storage: {data: {size: 1M}}\n"),
            "5:26: appliance.storage.data.size:",
            "\"1M\" is below the smallest size, 16M",
        ),
        case(
            "size-too-large",
            with("  storage: {data: {size: 99999999T}}\n"),
            "5:26: appliance.storage.data.size:",
            "\"99999999T\" is too large",
        ),
        case(
            "root-size-too-large",
            with("  storage: {root_size: 99999999999999999999999G}\n"),
            "5:24: appliance.storage.root_size:",
            "is too large",
        ),
        // git, the update timer, the domain.
        case(
            "git-source-option",
            with("  git: {source: '-uhunter' }\n"),
            "5:17: appliance.git.source:",
            "starts with `-`: git would take it as an option",
        ),
        case(
            "ecs-git-branch-option",
            replaced(
                "  vault_sign: hunter2-SECRET-sign\n",
                "  vault_sign: hunter2-SECRET-sign\n  git: {branch: --upload-pack=x}\n",
            ),
            "10:17: ecs.git.branch:",
            "starts with `-`",
        ),
        case(
            "ecs-docs-git-source-option",
            replaced(
                "  vault_sign: hunter2-SECRET-sign\n",
                "  vault_sign: hunter2-SECRET-sign\n  docs: {git: {source: -x}}\n",
            ),
            "10:24: ecs.docs.git.source:",
            "starts with `-`",
        ),
        case(
            "oncalendar-not-calendar",
            with("  update: {oncalendar: every day}\n"),
            "5:24: appliance.update.oncalendar:",
            "\"every day\" is not a systemd calendar expression",
        ),
        case(
            "oncalendar-bad-hour",
            with("  update: {oncalendar: '*-*-* 25:00'}\n"),
            "5:24: appliance.update.oncalendar:",
            "the hour 25 is not in 0..23",
        ),
        case(
            "domain-ipv4",
            replaced("domain: ecs.example.org", "domain: 10.0.0.1"),
            "4:11: appliance.domain:",
            "\"10.0.0.1\" is an IP address",
        ),
        case(
            "domain-ipv6",
            replaced("domain: ecs.example.org", "domain: '::1'"),
            "4:11: appliance.domain:",
            "is an IP address",
        ),
    ]
}
