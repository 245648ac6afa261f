//! The walk over the document: every key of the model checked and typed,
//! every problem collected with its position and path ([`Checker`]).

use super::*;

/// Known string keys whose values are multi-line text (tabs and newlines
/// allowed); every other known string is one line.
pub(super) const MULTILINE: &[&str] = &[
    "appliance.ssl.key",
    "appliance.ssl.cert",
    "appliance.ssl.letsencrypt.directory_ca",
    "appliance.dkim.key",
    "appliance.backup.encrypt",
    "appliance.extra.states",
    "ecs.settings",
    "ecs.vault_encrypt",
    "ecs.vault_sign",
];

pub(super) fn is_multiline(path: &str) -> bool {
    MULTILINE.contains(&path)
        || (path.starts_with("appliance.extra.files[") && path.ends_with("].contents"))
}

/// Walks the document, collecting problems; builds the typed model.
pub(super) struct Checker<'t> {
    /// The source, to tell how an integer was written.
    pub(super) text: &'t str,
    pub(super) errors: Vec<Problem>,
    pub(super) warnings: Vec<Problem>,
    /// When set, every key path the model knows in the maps it visits
    /// (the reference test of [`super::effects`] compares them with the
    /// table).
    pub(super) known: Option<std::collections::BTreeSet<String>>,
}

/// The top-level keys the model reads; any other is cloud-init's, kept and
/// passed through without a word.
pub(super) const TOP_LEVEL: &[&str] = &[
    "ssh_authorized_keys",
    "ssh_deprecated_keys",
    "disable_root",
    "appliance",
    "ecs",
];

/// A map being checked: its entries, position and path, and the keys the
/// model knows (the rest are reported as unknown when `warn_unknown`).
pub(super) struct MapCtx<'a> {
    pub(super) node: Option<&'a Node>,
    pub(super) path: String,
}

impl<'a> MapCtx<'a> {
    pub(super) fn get(&self, key: &str) -> Option<&'a Node> {
        self.node.and_then(|n| n.get(key))
    }

    pub(super) fn child(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    pub(super) fn pos(&self) -> Option<Pos> {
        self.node.map(|n| n.pos)
    }
}

pub(super) fn is_secret(path: &str) -> bool {
    secret_root(path).is_some()
}

impl Checker<'_> {
    pub(super) fn error(&mut self, pos: Option<Pos>, path: &str, message: impl Into<String>) {
        self.errors.push(Problem {
            pos,
            path: path.to_string(),
            message: message.into(),
        });
    }

    pub(super) fn warn(&mut self, pos: Option<Pos>, path: &str, message: impl Into<String>) {
        self.warnings.push(Problem {
            pos,
            path: path.to_string(),
            message: message.into(),
        });
    }

    /// The map at `key` of `parent` (absent or null → an empty context).
    pub(super) fn map<'a>(&mut self, parent: &MapCtx<'a>, key: &str, known: &[&str]) -> MapCtx<'a> {
        let path = parent.child(key);
        let node = match parent.get(key) {
            None => None,
            Some(n) if n.value == Value::Null => None,
            Some(n) => self.as_map(n, &path, known),
        };
        MapCtx { node, path }
    }

    pub(super) fn as_map<'a>(
        &mut self,
        n: &'a Node,
        path: &str,
        known: &[&str],
    ) -> Option<&'a Node> {
        match &n.value {
            Value::Map(entries) => {
                if let Some(set) = &mut self.known {
                    set.extend(known.iter().map(|k| format!("{path}.{k}")));
                }
                for (k, _) in entries {
                    let name = k.key_string();
                    if !known.contains(&name.as_ref()) {
                        self.warn(
                            Some(k.pos),
                            &format!("{path}.{}", yaml::printable(&name)),
                            "unknown key (kept and passed through; check the spelling)",
                        );
                    }
                }
                Some(n)
            }
            _ => {
                self.error(
                    Some(n.pos),
                    path,
                    format!("must be a map, got {}", n.type_name()),
                );
                None
            }
        }
    }

    pub(super) fn bool(&mut self, parent: &MapCtx, key: &str, default: bool) -> bool {
        let path = parent.child(key);
        match parent.get(key) {
            None => default,
            Some(n) => match &n.value {
                Value::Null => default,
                Value::Bool(b) => *b,
                Value::Str(s) => {
                    self.error(
                        Some(n.pos),
                        &path,
                        format!("{} is not a boolean (use true or false)", quoted(s)),
                    );
                    default
                }
                _ => {
                    self.error(
                        Some(n.pos),
                        &path,
                        format!("must be true or false, got {}", n.type_name()),
                    );
                    default
                }
            },
        }
    }

    /// An optional string. Null counts as absent.
    pub(super) fn string(&mut self, parent: &MapCtx, key: &str) -> Option<String> {
        let path = parent.child(key);
        let n = parent.get(key)?;
        self.string_node(n, &path)
    }

    pub(super) fn string_node(&mut self, n: &Node, path: &str) -> Option<String> {
        match &n.value {
            Value::Null => None,
            Value::Str(s) => {
                // Other control characters are refused for every string
                // (see `control_characters`); known keys that are not text
                // are one line.
                // (An ssh key's own check says more about a line break.)
                if !is_multiline(path) && !path.starts_with("ssh_") && s.contains(['\n', '\t']) {
                    self.error(
                        Some(n.pos),
                        path,
                        "contains a line break or tab: it must be one line",
                    );
                }
                Some(s.clone())
            }
            other => {
                let hint = if is_secret(path) {
                    String::new()
                } else {
                    match other {
                        Value::Bool(_) | Value::Int(_) | Value::Float(_) | Value::Timestamp(_) => {
                            " (put it in quotes to keep it as text)".to_string()
                        }
                        _ => String::new(),
                    }
                };
                self.error(
                    Some(n.pos),
                    path,
                    format!("must be a string, got {}{hint}", n.type_name()),
                );
                None
            }
        }
    }

    pub(super) fn secret(&mut self, parent: &MapCtx, key: &str) -> Option<Secret<String>> {
        self.string(parent, key).map(Secret::new)
    }

    /// A required string: missing or null is an error.
    pub(super) fn required(&mut self, parent: &MapCtx, key: &str, what: &str) -> Option<String> {
        let path = parent.child(key);
        match parent.get(key) {
            None => {
                if parent.node.is_some() {
                    self.error(parent.pos(), &path, format!("is required ({what})"));
                }
                None
            }
            Some(n) if n.value == Value::Null => {
                self.error(
                    Some(n.pos),
                    &path,
                    format!("is empty; it is required ({what})"),
                );
                None
            }
            Some(n) => self.string_node(n, &path),
        }
    }

    pub(super) fn string_list(&mut self, parent: &MapCtx, key: &str) -> Vec<String> {
        let path = parent.child(key);
        let Some(n) = parent.get(key) else {
            return Vec::new();
        };
        match &n.value {
            Value::Null => Vec::new(),
            Value::Seq(items) => items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| self.string_node(item, &format!("{path}[{i}]")))
                .collect(),
            _ => {
                self.error(
                    Some(n.pos),
                    &path,
                    format!("must be a list of strings, got {}", n.type_name()),
                );
                Vec::new()
            }
        }
    }

    pub(super) fn size(&mut self, n: &Node, path: &str, allow_rest: bool) -> Option<VolumePlan> {
        let text = match &n.value {
            Value::Str(s) => s.clone(),
            Value::Int(i) => i.to_string(),
            _ => {
                self.error(
                    Some(n.pos),
                    path,
                    format!("must be a size ({SIZE_HINT}), got {}", n.type_name()),
                );
                return None;
            }
        };
        if allow_rest && text == "rest" {
            return Some(VolumePlan::Rest);
        }
        match parse_size_checked(&text) {
            Ok(0) => {
                self.error(Some(n.pos), path, "must be larger than zero");
                None
            }
            Ok(bytes) if bytes < MIN_SIZE => {
                self.error(
                    Some(n.pos),
                    path,
                    format!(
                        "{} is below the smallest size, {}M",
                        quoted(&text),
                        MIN_SIZE >> 20
                    ),
                );
                None
            }
            Ok(bytes) => Some(VolumePlan::Size(bytes)),
            Err(SizeError::TooLarge) => {
                self.error(
                    Some(n.pos),
                    path,
                    format!("{} is too large (2^64 bytes or more)", quoted(&text)),
                );
                None
            }
            Err(SizeError::NotASize) => {
                let hint = if allow_rest {
                    format!("{SIZE_HINT}, or rest")
                } else {
                    SIZE_HINT.to_string()
                };
                self.error(
                    Some(n.pos),
                    path,
                    format!("{} is not a size ({hint})", quoted(&text)),
                );
                None
            }
        }
    }

    pub(super) fn env(&mut self, doc: Node, text: &str) -> Option<Env> {
        if !matches!(doc.value, Value::Map(_)) {
            self.error(
                Some(doc.pos),
                "",
                format!(
                    "the top level must be a map with `appliance` and `ecs`, got {}",
                    doc.type_name()
                ),
            );
            return None;
        }
        if !text.starts_with("#cloud-config") {
            self.warn(
                Some(Pos { line: 1, col: 1 }),
                "",
                "the first line is not `#cloud-config`: cloud-init will not read this env as \
                 cloud-config user-data",
            );
        }
        let top = MapCtx {
            node: Some(&doc),
            path: String::new(),
        };
        if let Some(set) = &mut self.known {
            set.extend(TOP_LEVEL.iter().map(|k| k.to_string()));
        }
        let ssh_authorized_keys = self.ssh_keys(&top, "ssh_authorized_keys");
        let ssh_deprecated_keys = self.ssh_keys(&top, "ssh_deprecated_keys");
        let disable_root = top
            .get("disable_root")
            .map(|_| self.bool(&top, "disable_root", false));
        for (key, what) in [
            ("appliance", "the host side"),
            ("ecs", "the application side"),
        ] {
            match top.get(key) {
                None => self.error(Some(doc.pos), key, format!("is required (a map: {what})")),
                Some(n) if n.value == Value::Null => self.error(
                    Some(n.pos),
                    key,
                    format!("is empty; it is required (a map: {what})"),
                ),
                Some(_) => {}
            }
        }
        let appliance = self.appliance(&top);
        let ecs = self.ecs(&top);
        for tree in ["ecs", "appliance"] {
            if let Some(t) = doc.get(tree) {
                self.control_characters(t, tree);
            }
        }
        // The units source the flattened `ecs` and `appliance` trees.
        if let Err(errs) = flatten(&doc, &Trees::appliance(), "") {
            for e in errs {
                self.error(Some(e.pos), &e.path, e.message);
            }
        }
        Some(Env {
            ssh_authorized_keys,
            ssh_deprecated_keys,
            disable_root,
            appliance: appliance?,
            ecs: ecs?,
            warnings: Vec::new(),
            doc: Document(doc),
        })
    }

    pub(super) fn appliance(&mut self, top: &MapCtx) -> Option<Appliance> {
        let a = self.map(
            top,
            "appliance",
            &[
                "domain",
                "standby",
                "allowed_hosts",
                "ssl",
                "sentry",
                "metric",
                "git",
                "extra",
                "update",
                "dkim",
                "backup",
                "storage",
            ],
        );
        let domain = self.required(
            &a,
            "domain",
            "the host name, web server name and mail domain",
        );
        if let (Some(d), Some(n)) = (&domain, a.get("domain")) {
            if let Err(why) = check_hostname(d) {
                self.error(
                    Some(n.pos),
                    "appliance.domain",
                    format!("{} {why}", quoted(d)),
                );
            }
        }
        let standby = self.bool(&a, "standby", false);
        let allowed_hosts = self.string(&a, "allowed_hosts");

        let ssl_map = self.map(
            &a,
            "ssl",
            &["letsencrypt", "client_certs_mandatory", "key", "cert"],
        );
        let le = self.map(
            &ssl_map,
            "letsencrypt",
            &["enabled", "directory", "directory_ca"],
        );
        let directory = self.string(&le, "directory");
        if let (Some(d), Some(n)) = (&directory, le.get("directory")) {
            if let Err(why) = check_acme_directory(d) {
                self.error(
                    Some(n.pos),
                    "appliance.ssl.letsencrypt.directory",
                    format!("{} {why}", quoted(d)),
                );
            }
        }
        let directory_ca = self.string(&le, "directory_ca");
        if let (Some(ca), Some(n)) = (&directory_ca, le.get("directory_ca")) {
            if !ca.trim_start().starts_with("-----BEGIN CERTIFICATE-----") {
                self.error(
                    Some(n.pos),
                    "appliance.ssl.letsencrypt.directory_ca",
                    "is not a PEM certificate (-----BEGIN CERTIFICATE-----)",
                );
            }
        }
        let ssl = Ssl {
            letsencrypt_enabled: self.bool(&le, "enabled", true),
            letsencrypt_directory: directory.unwrap_or_else(|| LETSENCRYPT_DIRECTORY.into()),
            letsencrypt_directory_ca: directory_ca,
            client_certs_mandatory: self.bool(&ssl_map, "client_certs_mandatory", false),
            key: self.secret(&ssl_map, "key"),
            cert: self.string(&ssl_map, "cert"),
        };
        if ssl.key.is_some() != ssl.cert.is_some() {
            self.error(
                ssl_map.pos(),
                "appliance.ssl",
                "`key` and `cert` go together: give both or neither",
            );
        }
        let sentry = self.map(&a, "sentry", &["dsn"]);
        let sentry_dsn = self.secret(&sentry, "dsn");
        if let Some(dsn) = &sentry_dsn {
            if let Err(why) = check_sentry_dsn(dsn.expose()) {
                let pos = sentry.get("dsn").map(|n| n.pos);
                self.error(pos, "appliance.sentry.dsn", format!("the DSN {why}"));
            }
        }

        let m = self.map(&a, "metric", &["exporter", "server", "gui", "pghero"]);
        let metric = Metric {
            exporter: self.bool(&m, "exporter", false),
            server: self.bool(&m, "server", false),
            gui: self.bool(&m, "gui", false),
            pghero: self.bool(&m, "pghero", false),
        };
        let git = self.git(&a, APPLIANCE_GIT_SOURCE);
        let extra = self.extra(&a);

        let u = self.map(&a, "update", &["automatic", "oncalendar"]);
        let oncalendar = self.string(&u, "oncalendar");
        if let (Some(c), Some(n)) = (&oncalendar, u.get("oncalendar")) {
            if let Err(why) = crate::calendar::check(c) {
                self.error(
                    Some(n.pos),
                    "appliance.update.oncalendar",
                    format!("{} is not a systemd calendar expression ({why})", quoted(c)),
                );
            }
        }
        let update = Update {
            automatic: self.bool(&u, "automatic", true),
            oncalendar: oncalendar.unwrap_or_else(|| DEFAULT_ONCALENDAR.to_string()),
        };
        let dkim = self.map(&a, "dkim", &["key"]);
        let dkim_key = self.secret(&dkim, "key");

        let b = self.map(&a, "backup", &["url", "options", "mount", "encrypt"]);
        let mount_map = self.map(&b, "mount", &["type", "source", "target", "options"]);
        let mount = mount_map.node.is_some().then(|| BackupMount {
            fstype: self.string(&mount_map, "type"),
            source: self.string(&mount_map, "source"),
            target: self.string(&mount_map, "target"),
            options: self.secret(&mount_map, "options"),
        });
        let backup = Backup {
            url: self.secret(&b, "url"),
            options: self.string(&b, "options"),
            mount,
            encrypt: self.secret(&b, "encrypt"),
        };
        let storage = self.storage(&a);
        a.node?;
        Some(Appliance {
            domain: domain?,
            standby,
            allowed_hosts,
            ssl,
            sentry_dsn,
            metric,
            git,
            extra,
            update,
            dkim_key,
            backup,
            storage,
        })
    }

    pub(super) fn git(&mut self, parent: &MapCtx, default_source: &str) -> Git {
        let g = self.map(parent, "git", &["branch", "source", "commitid"]);
        let branch = self.git_arg(&g, "branch");
        let source = self.git_arg(&g, "source");
        let commitid = self.git_arg(&g, "commitid");
        Git {
            branch: branch.unwrap_or_else(|| "master".into()),
            source: source.unwrap_or_else(|| default_source.into()),
            commitid: commitid.filter(|s| !s.is_empty()),
        }
    }

    /// A string that becomes an argument of `git`: never an option.
    pub(super) fn git_arg(&mut self, parent: &MapCtx, key: &str) -> Option<String> {
        let v = self.string(parent, key)?;
        if v.starts_with('-') {
            self.error(
                parent.get(key).map(|n| n.pos),
                &parent.child(key),
                format!(
                    "{} starts with `-`: git would take it as an option",
                    quoted(&v)
                ),
            );
        }
        Some(v)
    }

    /// `ssh_authorized_keys` and `ssh_deprecated_keys`: lists of OpenSSH
    /// public key lines.
    pub(super) fn ssh_keys(&mut self, top: &MapCtx, key: &str) -> Vec<String> {
        let keys = self.string_list(top, key);
        if let Some(Value::Seq(items)) = top.get(key).map(|n| &n.value) {
            for (i, (k, item)) in keys.iter().zip(items).enumerate() {
                if let Err(why) = check_ssh_key(k) {
                    self.error(Some(item.pos), &format!("{key}[{i}]"), why);
                }
            }
        }
        keys
    }

    /// Refuses control characters (tab and newline aside) in the strings
    /// and keys of a tree that is flattened into `/run/active-env.env`.
    pub(super) fn control_characters(&mut self, n: &Node, path: &str) {
        match &n.value {
            Value::Str(s) => {
                if let Some((i, c)) = s
                    .chars()
                    .enumerate()
                    .find(|(_, c)| c.is_control() && *c != '\n' && *c != '\t')
                {
                    let message = if is_secret(path) {
                        "contains a control character (not shown: it is secret); only tab and \
                         newline may be in text"
                            .to_string()
                    } else {
                        format!(
                            "contains the control character U+{:04X} at character {}; only tab \
                             and newline may be in text",
                            c as u32,
                            i + 1
                        )
                    };
                    let shown = secret_root(path).unwrap_or(path).to_string();
                    self.error(Some(n.pos), &shown, message);
                }
            }
            Value::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.control_characters(item, &format!("{path}[{i}]"));
                }
            }
            Value::Map(entries) => {
                for (k, v) in entries {
                    // A key's control characters make a name the shell
                    // cannot source: the flattener reports those.
                    let key = k.key_string();
                    self.control_characters(v, &format!("{path}.{}", yaml::printable(&key)));
                }
            }
            _ => {}
        }
    }

    pub(super) fn extra(&mut self, a: &MapCtx) -> Extra {
        let e = self.map(a, "extra", &["files", "packages", "states"]);
        let mut files = Vec::new();
        if let Some(n) = e.get("files") {
            match &n.value {
                Value::Null => {}
                Value::Seq(items) => {
                    let mut seen: HashMap<String, (usize, usize)> = HashMap::new();
                    for (i, item) in items.iter().enumerate() {
                        let path = format!("appliance.extra.files[{i}]");
                        if let Some(f) = self.extra_file(item, &path) {
                            if let Some((j, line)) = seen.get(&f.path) {
                                let pos = item.get("path").map(|p| p.pos);
                                self.error(
                                    pos,
                                    &format!("{path}.path"),
                                    format!(
                                        "{} is also the path of files[{j}] (line {line})",
                                        quoted(&f.path)
                                    ),
                                );
                            } else {
                                let line = item.get("path").map_or(0, |p| p.pos.line);
                                seen.insert(f.path.clone(), (i, line));
                            }
                            files.push(f);
                        }
                    }
                }
                _ => self.error(
                    Some(n.pos),
                    "appliance.extra.files",
                    format!(
                        "must be a list of {{path, contents, owner, permissions}}, got {}",
                        n.type_name()
                    ),
                ),
            }
        }
        let packages = self.string_list(&e, "packages");
        if let Some(Value::Seq(items)) = e.get("packages").map(|n| &n.value) {
            for (i, (p, item)) in packages.iter().zip(items).enumerate() {
                if !is_package_name(p) {
                    self.error(
                        Some(item.pos),
                        &format!("appliance.extra.packages[{i}]"),
                        format!("{} is not a Debian/Ubuntu package name", quoted(p)),
                    );
                }
            }
        }
        Extra {
            files,
            packages,
            states: self.string(&e, "states"),
        }
    }

    pub(super) fn extra_file(&mut self, n: &Node, path: &str) -> Option<ExtraFile> {
        let node = self.as_map(n, path, &["path", "contents", "owner", "permissions"])?;
        let f = MapCtx {
            node: Some(node),
            path: path.to_string(),
        };
        let file_path = self.required(&f, "path", "the absolute path of the file");
        if let (Some(p), Some(pn)) = (&file_path, f.get("path")) {
            if let Err(why) = check_file_path(p) {
                self.error(
                    Some(pn.pos),
                    &f.child("path"),
                    format!("{} {why}", quoted(p)),
                );
            }
        }
        let contents = self.string(&f, "contents").unwrap_or_default();
        let owner = self.string(&f, "owner");
        if let (Some(o), Some(on)) = (&owner, f.get("owner")) {
            if let Err(why) = check_owner(o) {
                self.error(
                    Some(on.pos),
                    &f.child("owner"),
                    format!("{} {why}", quoted(o)),
                );
            }
        }
        let permissions = match f.get("permissions") {
            None => None,
            Some(pn) => {
                let written = source_token(self.text, pn.pos);
                match check_mode(&pn.value, written) {
                    Ok(mode) => mode,
                    Err(why) => {
                        self.error(
                            Some(pn.pos),
                            &f.child("permissions"),
                            format!("is not a file mode: {why}"),
                        );
                        None
                    }
                }
            }
        };
        Some(ExtraFile {
            path: file_path?,
            contents: Secret::new(contents),
            owner,
            permissions,
        })
    }

    pub(super) fn storage(&mut self, a: &MapCtx) -> Storage {
        let s = self.map(
            a,
            "storage",
            &["ignore", "grow_root", "root_size", "data", "volatile"],
        );
        let ig = self.map(&s, "ignore", &["data", "volatile"]);
        let mut st = Storage {
            ignore_data: self.bool(&ig, "data", false),
            ignore_volatile: self.bool(&ig, "volatile", false),
            grow_root: self.bool(&s, "grow_root", true),
            ..Storage::default()
        };
        if let Some(n) = s.get("root_size").filter(|n| n.value != Value::Null) {
            if let Some(VolumePlan::Size(b)) = self.size(n, "appliance.storage.root_size", false) {
                st.root_size = Some(b);
            }
        }
        for (name, ignored) in [("data", st.ignore_data), ("volatile", st.ignore_volatile)] {
            let v = self.map(&s, name, &["size", "device"]);
            let Some(vn) = v.node else { continue };
            let plan = match (v.get("size"), v.get("device")) {
                (Some(_), Some(_)) | (None, None) => {
                    self.error(
                        Some(vn.pos),
                        &v.path,
                        "needs exactly one of `size` (e.g. 50G or rest) or `device` (e.g. /dev/vdb)",
                    );
                    None
                }
                (Some(size), None) => self.size(size, &v.child("size"), true),
                (None, Some(dev)) => {
                    let p = self.string_node(dev, &v.child("device"));
                    match p {
                        Some(p) => match check_device(&p) {
                            Ok(()) => Some(VolumePlan::Device(PathBuf::from(p))),
                            Err(why) => {
                                self.error(
                                    Some(dev.pos),
                                    &v.child("device"),
                                    format!("{} {why}", quoted(&p)),
                                );
                                None
                            }
                        },
                        None => None,
                    }
                }
            };
            if ignored && plan.is_some() {
                self.warn(
                    Some(vn.pos),
                    &v.path,
                    format!("is not used because `storage.ignore.{name}` is true"),
                );
            }
            match name {
                "data" => st.data = plan,
                _ => st.volatile = plan,
            }
        }
        if st.data == Some(VolumePlan::Rest) && st.volatile == Some(VolumePlan::Rest) {
            self.error(
                s.pos(),
                "appliance.storage",
                "only one of `data` and `volatile` can take the `rest` of the disk",
            );
        }
        if let (Some(VolumePlan::Device(a)), Some(VolumePlan::Device(b))) = (&st.data, &st.volatile)
        {
            if a == b {
                self.error(
                    s.pos(),
                    "appliance.storage",
                    format!("`data` and `volatile` cannot both use {}", a.display()),
                );
            }
        }
        st
    }

    pub(super) fn ecs(&mut self, top: &MapCtx) -> Option<Ecs> {
        let e = self.map(
            top,
            "ecs",
            &[
                "settings",
                "vault_encrypt",
                "vault_sign",
                "git",
                "docs",
                "database",
                "userswitcher",
            ],
        );
        let settings = self.required(&e, "settings", "the application's Python settings");
        let vault_encrypt = self.required(&e, "vault_encrypt", "an armored GPG private key");
        let vault_sign = self.required(&e, "vault_sign", "an armored GPG private key");
        let git = self.git(&e, ECS_GIT_SOURCE);
        let docs = self.map(&e, "docs", &["git"]);
        let docs_git = self.map(&docs, "git", &["source", "branch"]);
        let docs_git_source = self.git_arg(&docs_git, "source");
        let docs_git_branch = self.git_arg(&docs_git, "branch");
        let database = self.string(&e, "database").unwrap_or_else(|| "ecs".into());
        if let Some(n) = e.get("database") {
            if !is_identifier(&database) {
                self.error(
                    Some(n.pos),
                    "ecs.database",
                    format!(
                        "{} is not a database name (letters, digits and `_`, at most 63)",
                        quoted(&database)
                    ),
                );
            }
        }
        let us = self.map(&e, "userswitcher", &["enabled"]);
        let userswitcher_enabled = self.bool(&us, "enabled", false);
        e.node?;
        Some(Ecs {
            settings: Secret::new(settings?),
            vault_encrypt: Secret::new(vault_encrypt?),
            vault_sign: Secret::new(vault_sign?),
            git,
            docs_git_source,
            docs_git_branch,
            database,
            userswitcher_enabled,
        })
    }
}
