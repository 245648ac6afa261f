//! Layer recipes: `NN-name/layer.yml`, parsed strictly and validated.
//!
//! A layer is a directory holding `layer.yml`, an optional `files/` overlay and
//! the scripts the recipe names. Layers apply in sorted order of their
//! directory names; layers given with `--layer DIR` stack on top in command
//! line order. Every field is documented in `docs/layers.md`; this module is
//! the one place that defines them.
//!
//! Every error names the recipe file and the field, e.g.
//! `layers/10-boot/layer.yml: scripts[0]: setup.sh: no such file in layers/10-boot`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::exit::bad_input;

/// The file name of a recipe inside its layer directory.
pub const RECIPE_FILE: &str = "layer.yml";
/// The overlay directory inside a layer directory.
pub const FILES_DIR: &str = "files";

/// A distribution the base layer can be made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Distro {
    Ubuntu,
    Debian,
}

impl Distro {
    /// Suite used when neither the recipe nor the command line names one.
    pub fn default_suite(self) -> &'static str {
        match self {
            Distro::Ubuntu => "noble",
            Distro::Debian => "bookworm",
        }
    }
    /// Mirror used when neither the recipe nor the command line names one.
    pub fn default_mirror(self) -> &'static str {
        match self {
            Distro::Ubuntu => "http://archive.ubuntu.com/ubuntu",
            Distro::Debian => "http://deb.debian.org/debian",
        }
    }
    /// Archive components used when the recipe names none.
    pub fn default_components(self) -> Vec<String> {
        match self {
            Distro::Ubuntu => vec!["main".into(), "universe".into()],
            Distro::Debian => vec!["main".into()],
        }
    }
    /// Mirror of the `SUITE-security` pocket when neither the recipe nor the
    /// command line names one: Ubuntu keeps it on every mirror; Debian in
    /// its security archive.
    pub fn default_security_mirror(self, mirror: &str) -> String {
        match self {
            Distro::Ubuntu => mirror.to_string(),
            Distro::Debian => "http://deb.debian.org/debian-security".into(),
        }
    }
    /// The keyring that verifies this distribution's archive, when the host's
    /// default apt keyring does not (the host is Debian).
    pub fn keyring(self) -> Option<&'static str> {
        match self {
            Distro::Ubuntu => Some("/usr/share/keyrings/ubuntu-archive-keyring.gpg"),
            Distro::Debian => None,
        }
    }
    /// The archive keyring inside the tree (the `Signed-By` of its sources)
    /// and the package that ships it.
    pub fn tree_keyring(self) -> (&'static str, &'static str) {
        match self {
            Distro::Ubuntu => (
                "/usr/share/keyrings/ubuntu-archive-keyring.gpg",
                "ubuntu-keyring",
            ),
            Distro::Debian => (
                "/usr/share/keyrings/debian-archive-keyring.gpg",
                "debian-archive-keyring",
            ),
        }
    }
    /// The deb822 sources file the distribution's own images ship
    /// (`/etc/apt/sources.list.d/NAME`).
    pub fn sources_file(self) -> &'static str {
        match self {
            Distro::Ubuntu => "ubuntu.sources",
            Distro::Debian => "debian.sources",
        }
    }
}

/// One pocket of the archive: `noble`, `noble-updates`, `noble-security`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pocket {
    /// `release`, `updates` or `security`.
    pub name: String,
    /// The suite as apt names it (`noble-security`).
    pub suite: String,
    /// The mirror it is fetched from during the build.
    pub mirror: String,
}

impl fmt::Display for Distro {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Distro::Ubuntu => "ubuntu",
            Distro::Debian => "debian",
        })
    }
}

impl FromStr for Distro {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ubuntu" => Ok(Distro::Ubuntu),
            "debian" => Ok(Distro::Debian),
            other => Err(format!("unknown distribution {other:?} (ubuntu or debian)")),
        }
    }
}

/// mmdebstrap variants a base layer may ask for.
pub const VARIANTS: &[&str] = &[
    "extract",
    "custom",
    "essential",
    "apt",
    "required",
    "minbase",
    "buildd",
    "important",
    "debootstrap",
    "standard",
];

/// Permission bits, written in YAML as `0755` (YAML 1.1 octal) or `"0755"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode(pub u32);

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

impl Serialize for Mode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u32),
            Str(String),
        }
        let value = match Raw::deserialize(d)? {
            Raw::Int(v) => v,
            Raw::Str(s) => {
                let digits = s.strip_prefix("0o").unwrap_or(&s);
                u32::from_str_radix(digits, 8).map_err(|_| {
                    serde::de::Error::custom(format!("mode {s:?} is not an octal number like 0755"))
                })?
            }
        };
        if value > 0o7777 {
            return Err(serde::de::Error::custom(format!(
                "mode {value:o} has bits beyond 07777 (write modes as 0755)"
            )));
        }
        Ok(Mode(value))
    }
}

/// `base:` — how layer 0 is created with mmdebstrap (first layer only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseRecipe {
    /// `ubuntu` or `debian`.
    pub distro: Distro,
    /// Release codename; default per distro (noble, bookworm).
    #[serde(default)]
    pub suite: Option<String>,
    /// Archive URL; default per distro.
    #[serde(default)]
    pub mirror: Option<String>,
    /// Archive components; default per distro (ubuntu: main universe, debian: main).
    #[serde(default)]
    pub components: Option<Vec<String>>,
    /// mmdebstrap `--variant`; default `minbase`.
    #[serde(default = "default_variant")]
    pub variant: String,
    /// Mirror of the `SUITE-security` pocket; default per distro (Ubuntu:
    /// the mirror; Debian: http://deb.debian.org/debian-security).
    #[serde(default)]
    pub security_mirror: Option<String>,
}

fn default_variant() -> String {
    "minbase".into()
}

/// `files:` — owner and mode for paths of the `files/` overlay that the
/// overlay's own metadata cannot carry (git keeps only 0644/0755, no owner).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAttrs {
    /// Absolute path in the tree; must exist under `files/`.
    pub path: String,
    #[serde(default)]
    pub mode: Option<Mode>,
    /// User name (looked up in the tree's /etc/passwd) or numeric uid.
    #[serde(default)]
    pub owner: Option<String>,
    /// Group name (looked up in the tree's /etc/group) or numeric gid.
    #[serde(default)]
    pub group: Option<String>,
}

/// `host_files:` — a file taken from the build host, e.g. the agent binary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostFile {
    /// `@name`: the program `name` next to the running imgbuild (overridable
    /// with `--host-bin name=PATH` or `$IMGBUILD_BIN_DIR`); otherwise a path
    /// relative to the layer directory.
    pub from: String,
    /// Absolute destination path in the tree.
    pub to: String,
    /// Permission bits of the destination (owner root:root).
    pub mode: Mode,
}

/// One `layer.yml`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// Free text; not part of the cache key.
    #[serde(default, skip_serializing)]
    pub description: Option<String>,
    /// Only in the first layer, where it is required.
    #[serde(default)]
    pub base: Option<BaseRecipe>,
    /// Packages to install with apt (`name` or `name=version`).
    #[serde(default)]
    pub packages: Vec<String>,
    /// Extra packages per distribution, e.g. the kernel's package name.
    #[serde(default)]
    pub distro_packages: BTreeMap<Distro, Vec<String>>,
    /// Owner/mode overrides for overlay paths.
    #[serde(default)]
    pub files: Vec<FileAttrs>,
    /// Files copied from the build host.
    #[serde(default)]
    pub host_files: Vec<HostFile>,
    /// Scripts in the layer directory, run in the tree in this order.
    #[serde(default)]
    pub scripts: Vec<String>,
    /// systemd units to enable.
    #[serde(default)]
    pub enable: Vec<String>,
    /// systemd units to mask.
    #[serde(default)]
    pub mask: Vec<String>,
}

/// A loaded layer: its name (the directory name), directory and recipe.
#[derive(Debug, Clone)]
pub struct Layer {
    pub name: String,
    pub dir: PathBuf,
    pub recipe: Recipe,
}

impl Layer {
    /// The recipe file, for messages.
    pub fn recipe_path(&self) -> PathBuf {
        self.dir.join(RECIPE_FILE)
    }

    /// The packages this layer installs for `distro`, sorted and deduplicated
    /// (order does not matter to apt, so it does not matter to the cache key).
    pub fn packages_for(&self, distro: Distro) -> Vec<String> {
        let mut all: BTreeSet<String> = self.recipe.packages.iter().cloned().collect();
        if let Some(extra) = self.recipe.distro_packages.get(&distro) {
            all.extend(extra.iter().cloned());
        }
        all.into_iter().collect()
    }

    /// Whether the layer runs anything inside the tree.
    pub fn needs_chroot(&self, distro: Distro) -> bool {
        (self.recipe.base.is_none() && !self.packages_for(distro).is_empty())
            || !self.recipe.scripts.is_empty()
            || !self.recipe.enable.is_empty()
            || !self.recipe.mask.is_empty()
    }
}

/// Command-line overrides of the base settings.
#[derive(Debug, Clone, Default)]
pub struct BaseOverrides {
    pub distro: Option<Distro>,
    pub suite: Option<String>,
    pub mirror: Option<String>,
    pub security_mirror: Option<String>,
    /// `--release-pocket-only`: no `-updates`/`-security` pockets.
    pub release_only: bool,
    /// `--keyring FILE`: extra keyrings that verify the mirrors.
    pub keyrings: Vec<PathBuf>,
}

/// An extra keyring that verifies the mirrors (`--keyring`, e.g. a local
/// mirror's own key): given to mmdebstrap, copied into the tree as
/// `/etc/apt/keyrings/NAME` and named in every source's `Signed-By`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtraKeyring {
    /// The file name in `/etc/apt/keyrings`.
    pub name: String,
    /// sha256 of its bytes (part of the base layer's key).
    pub sha256: String,
    /// Where it is read from on the build host.
    #[serde(skip)]
    pub source: PathBuf,
}

impl ExtraKeyring {
    /// Reads and checks a `--keyring` file: a regular file named `*.gpg`
    /// (binary) or `*.asc` (armored), as apt tells them apart.
    pub fn load(path: &Path) -> anyhow::Result<ExtraKeyring> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| (n.ends_with(".gpg") || n.ends_with(".asc")) && is_word(n))
            .ok_or_else(|| {
                bad_input(format!(
                    "--keyring {}: name a keyring file ending in .gpg (binary) or .asc (armored)",
                    path.display()
                ))
            })?;
        let meta = std::fs::metadata(path)
            .map_err(|e| bad_input(format!("--keyring {}: {e}", path.display())))?;
        if !meta.is_file() || meta.len() > 1 << 20 {
            return Err(bad_input(format!(
                "--keyring {}: not a regular file of at most 1 MiB",
                path.display()
            )));
        }
        let bytes = std::fs::read(path)
            .map_err(|e| bad_input(format!("--keyring {}: {e}", path.display())))?;
        Ok(ExtraKeyring {
            name,
            sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes)),
            source: path.to_path_buf(),
        })
    }

    /// Its path in the tree.
    pub fn tree_path(&self) -> String {
        format!("/etc/apt/keyrings/{}", self.name)
    }
}

/// The effective base settings: recipe + command line + defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseSettings {
    pub distro: Distro,
    pub suite: String,
    pub mirror: String,
    pub components: Vec<String>,
    pub variant: String,
    /// Mirror of the `SUITE-security` pocket.
    pub security_mirror: String,
    /// Only the release pocket (no `-updates`, no `-security`).
    pub release_only: bool,
    /// Extra keyrings (`--keyring`); filled in by the tree stage.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keyrings: Vec<ExtraKeyring>,
}

impl BaseSettings {
    /// The pockets the tree is built from, release first.
    pub fn pockets(&self) -> Vec<Pocket> {
        let mut v = vec![Pocket {
            name: "release".into(),
            suite: self.suite.clone(),
            mirror: self.mirror.clone(),
        }];
        if !self.release_only {
            v.push(Pocket {
                name: "updates".into(),
                suite: format!("{}-updates", self.suite),
                mirror: self.mirror.clone(),
            });
            v.push(Pocket {
                name: "security".into(),
                suite: format!("{}-security", self.suite),
                mirror: self.security_mirror.clone(),
            });
        }
        v
    }

    /// The tree's apt sources in deb822, as the distribution's images ship
    /// them: one stanza per mirror, `Signed-By` the archive keyring.
    /// `mirror`/`security_mirror` replace the build's (`--image-mirror`).
    pub fn sources_deb822(&self, mirror: &str, security_mirror: &str) -> String {
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        for p in self.pockets() {
            let m = if p.name == "security" {
                security_mirror
            } else {
                mirror
            };
            match groups.iter_mut().find(|(g, _)| g == m) {
                Some((_, suites)) => suites.push(p.suite),
                None => groups.push((m.to_string(), vec![p.suite])),
            }
        }
        let mut keyring = self.distro.tree_keyring().0.to_string();
        for k in &self.keyrings {
            keyring.push_str(", ");
            keyring.push_str(&k.tree_path());
        }
        let mut out =
            String::from("# Written by imgbuild: the archive pockets this image was built from.\n");
        for (m, suites) in groups {
            out.push_str(&format!(
                "\nTypes: deb\nURIs: {m}\nSuites: {}\nComponents: {}\nSigned-By: {keyring}\n",
                suites.join(" "),
                self.components.join(" ")
            ));
        }
        out
    }

    /// Combines the base recipe with command-line overrides.
    ///
    /// When `--distro` names another distribution than the recipe, the
    /// recipe's suite, mirror and components (which belong to its own
    /// distribution) are dropped in favour of the other's defaults.
    pub fn resolve(recipe: &BaseRecipe, over: &BaseOverrides) -> BaseSettings {
        let distro = over.distro.unwrap_or(recipe.distro);
        let same = distro == recipe.distro;
        let pick = |cli: &Option<String>, rec: &Option<String>, default: &str| {
            cli.clone()
                .or_else(|| if same { rec.clone() } else { None })
                .unwrap_or_else(|| default.to_string())
        };
        let mirror = pick(&over.mirror, &recipe.mirror, distro.default_mirror())
            .trim_end_matches('/')
            .to_string();
        let security_mirror = pick(
            &over.security_mirror,
            &recipe.security_mirror,
            &distro.default_security_mirror(&mirror),
        )
        .trim_end_matches('/')
        .to_string();
        BaseSettings {
            distro,
            suite: pick(&over.suite, &recipe.suite, distro.default_suite()),
            mirror,
            security_mirror,
            release_only: over.release_only,
            keyrings: Vec::new(),
            components: recipe
                .components
                .clone()
                .filter(|_| same)
                .unwrap_or_else(|| distro.default_components()),
            variant: recipe.variant.clone(),
        }
    }
}

/// Parses and validates one recipe text; `path` is used in messages and
/// `dir` to check the files the recipe refers to.
pub fn parse_recipe(text: &str, path: &Path, dir: &Path) -> anyhow::Result<Recipe> {
    let mut options = serde_saphyr::Options::default();
    // Modes are written 0755, as in chmod: read them as YAML 1.1 octal.
    options.legacy_octal_numbers = true;
    let recipe: Recipe = if text.trim().is_empty() {
        Recipe::default()
    } else {
        serde_saphyr::from_str_with_options(text, options)
            .map_err(|e| bad_input(format!("{}: {e}", path.display())))?
    };
    validate(&recipe, path, dir)?;
    Ok(recipe)
}

fn validate(r: &Recipe, path: &Path, dir: &Path) -> anyhow::Result<()> {
    let err = |field: String, msg: String| bad_input(format!("{}: {field}: {msg}", path.display()));
    if let Some(base) = &r.base {
        if !VARIANTS.contains(&base.variant.as_str()) {
            return Err(err(
                "base.variant".into(),
                format!(
                    "unknown variant {:?} (one of {})",
                    base.variant,
                    VARIANTS.join(", ")
                ),
            ));
        }
        if let Some(suite) = &base.suite {
            if !is_word(suite) {
                return Err(err(
                    "base.suite".into(),
                    format!("{suite:?} is not a suite name"),
                ));
            }
        }
        if let Some(m) = &base.mirror {
            check_mirror(m).map_err(|e| err("base.mirror".into(), e))?;
        }
        if let Some(m) = &base.security_mirror {
            check_mirror(m).map_err(|e| err("base.security_mirror".into(), e))?;
        }
        for (i, c) in base.components.iter().flatten().enumerate() {
            if !is_word(c) {
                return Err(err(
                    format!("base.components[{i}]"),
                    format!("{c:?} is not a component name"),
                ));
            }
        }
    }
    let mut lists: Vec<(String, &Vec<String>)> = vec![("packages".into(), &r.packages)];
    for (d, list) in &r.distro_packages {
        lists.push((format!("distro_packages.{d}"), list));
    }
    for (field, list) in lists {
        for (i, p) in list.iter().enumerate() {
            if !is_package_spec(p) {
                return Err(err(
                    format!("{field}[{i}]"),
                    format!("{p:?} is not a package name (name or name=version)"),
                ));
            }
        }
    }
    for (i, f) in r.files.iter().enumerate() {
        let field = format!("files[{i}].path");
        let rel = tree_path(&f.path).map_err(|e| err(field.clone(), e))?;
        let src = dir.join(FILES_DIR).join(rel);
        if src.symlink_metadata().is_err() {
            return Err(err(
                field,
                format!(
                    "{}: not in the overlay ({} does not exist)",
                    f.path,
                    src.display()
                ),
            ));
        }
        for (what, v) in [("owner", &f.owner), ("group", &f.group)] {
            if let Some(v) = v {
                if !is_word(v) {
                    return Err(err(
                        format!("files[{i}].{what}"),
                        format!("{v:?} is not a name or number"),
                    ));
                }
            }
        }
    }
    for (i, h) in r.host_files.iter().enumerate() {
        tree_path(&h.to).map_err(|e| err(format!("host_files[{i}].to"), e))?;
        match h.from.strip_prefix('@') {
            Some(name) if is_word(name) => {}
            Some(_) => {
                return Err(err(
                    format!("host_files[{i}].from"),
                    format!("{:?} is not @program-name", h.from),
                ))
            }
            None => {
                let rel = rel_path(&h.from).map_err(|e| err(format!("host_files[{i}].from"), e))?;
                if !dir.join(rel).is_file() {
                    return Err(err(
                        format!("host_files[{i}].from"),
                        format!("{}: no such file in {}", h.from, dir.display()),
                    ));
                }
            }
        }
    }
    for (i, s) in r.scripts.iter().enumerate() {
        let field = format!("scripts[{i}]");
        let rel = rel_path(s).map_err(|e| err(field.clone(), e))?;
        let file = dir.join(rel);
        let head = std::fs::read(&file).map_err(|e| {
            err(
                field.clone(),
                format!("{s}: cannot read {}: {e}", file.display()),
            )
        })?;
        if !head.starts_with(b"#!") {
            return Err(err(
                field,
                format!("{s}: must start with a #! line naming its interpreter"),
            ));
        }
    }
    for (field, list) in [("enable", &r.enable), ("mask", &r.mask)] {
        for (i, u) in list.iter().enumerate() {
            if !is_unit_name(u) {
                return Err(err(
                    format!("{field}[{i}]"),
                    format!("{u:?} is not a systemd unit name (like foo.service)"),
                ));
            }
        }
    }
    Ok(())
}

/// Loads the layer stack: the `NN-name` directories of `layers_dir` in sorted
/// order, then each of `extra` in order. The first layer must have `base:`,
/// no other may.
pub fn load_stack(layers_dir: &Path, extra: &[PathBuf]) -> anyhow::Result<Vec<Layer>> {
    let entries = std::fs::read_dir(layers_dir).map_err(|e| {
        bad_input(format!(
            "reading the layers directory {}: {e}",
            layers_dir.display()
        ))
    })?;
    let mut dirs: Vec<PathBuf> = Vec::new();
    for entry in entries {
        let entry =
            entry.map_err(|e| bad_input(format!("reading {}: {e}", layers_dir.display())))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.path().is_dir() && is_numbered(&name) {
            dirs.push(entry.path());
        }
    }
    dirs.sort();
    dirs.extend(extra.iter().cloned());
    let mut layers = Vec::new();
    let mut seen = BTreeSet::new();
    for dir in dirs {
        let layer = load_layer(&dir)?;
        if !seen.insert(layer.name.clone()) {
            return Err(bad_input(format!(
                "{}: a layer named {} is already in the stack",
                dir.display(),
                layer.name
            )));
        }
        layers.push(layer);
    }
    let Some(first) = layers.first() else {
        return Err(bad_input(format!(
            "{}: no layers (directories named NN-name holding {RECIPE_FILE})",
            layers_dir.display()
        )));
    };
    if first.recipe.base.is_none() {
        return Err(bad_input(format!(
            "{}: base: the first layer must say how the base is made (base: {{distro: ...}})",
            first.recipe_path().display()
        )));
    }
    for l in &layers[1..] {
        if l.recipe.base.is_some() {
            return Err(bad_input(format!(
                "{}: base: only the first layer ({}) may have a base",
                l.recipe_path().display(),
                first.name
            )));
        }
    }
    Ok(layers)
}

/// Loads one layer directory.
pub fn load_layer(dir: &Path) -> anyhow::Result<Layer> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| is_word(n))
        .ok_or_else(|| {
            bad_input(format!(
                "{}: not a usable layer directory name",
                dir.display()
            ))
        })?;
    let path = dir.join(RECIPE_FILE);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| bad_input(format!("{}: cannot read the recipe: {e}", path.display())))?;
    let recipe = parse_recipe(&text, &path, dir)?;
    Ok(Layer {
        name,
        dir: dir.to_path_buf(),
        recipe,
    })
}

/// A mirror URL must be http(s) (or file for local mirrors).
pub fn check_mirror(m: &str) -> Result<(), String> {
    if ["http://", "https://", "file://"]
        .iter()
        .any(|p| m.starts_with(p))
        && !m.contains(char::is_whitespace)
    {
        Ok(())
    } else {
        Err(format!("{m:?} is not an http://, https:// or file:// URL"))
    }
}

/// An absolute path inside the tree, returned relative (no `..`).
pub fn tree_path(p: &str) -> Result<PathBuf, String> {
    let rest = p
        .strip_prefix('/')
        .ok_or_else(|| format!("{p:?} must be an absolute path in the tree"))?;
    rel_path(rest).map_err(|_| format!("{p:?} must not contain `..` or be empty"))
}

/// A relative path without `..` components.
pub fn rel_path(p: &str) -> Result<PathBuf, String> {
    let path = Path::new(p);
    if p.is_empty()
        || path.is_absolute()
        || path
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(format!("{p:?} must be a relative path without `..`"));
    }
    Ok(path.to_path_buf())
}

fn is_numbered(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() > 3 && b[0].is_ascii_digit() && b[1].is_ascii_digit() && b[2] == b'-'
}

fn is_word(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.+".contains(c))
}

fn is_package_spec(s: &str) -> bool {
    let (name, version) = match s.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (s, None),
    };
    let name_ok = name.len() >= 2
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.:".contains(c));
    let version_ok = version.is_none_or(|v| {
        !v.is_empty()
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".+-~:".contains(c))
    });
    name_ok && version_ok
}

fn is_unit_name(s: &str) -> bool {
    const KINDS: &[&str] = &[
        ".service",
        ".socket",
        ".timer",
        ".target",
        ".mount",
        ".automount",
        ".path",
        ".slice",
        ".swap",
        ".device",
        ".scope",
    ];
    is_word(&s.replace(['@', '\\'], ""))
        && KINDS.iter().any(|k| s.ends_with(k) && s.len() > k.len())
}

#[cfg(test)]
mod tests;
