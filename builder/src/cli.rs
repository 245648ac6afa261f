//! The command line as plain data: clap's argument types, which the
//! commands take as they are. Dispatch is in `main.rs`.

use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  a build step or tool failed (the message names the step and the tool's output)
  2  bad input: the env, a recipe, an argument or an output path";

/// `imgbuild --version`: the crate's version and the git commit it was built from.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("IMGBUILD_GIT_COMMIT"),
    ")"
);

/// Builds the ECS appliance disk image and its cidata seed from layered recipes.
///
/// The main use is `imgbuild --env env.yml -o ecs.qcow2`. It writes the image,
/// the seed ISO that carries env.yml next to it (ecs.seed.iso), ecs.SHA256SUMS and
/// a manifest. Subcommands check an env, write a seed alone, or manage the
/// layer cache.
#[derive(Debug, Parser)]
#[command(
    name = "imgbuild",
    version = VERSION,
    subcommand_negates_reqs = true,
    after_help = EXIT_CODES
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub build: BuildArgs,

    /// Show only warnings and errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Show more detail, including every external command that runs.
    #[arg(short, long, global = true)]
    pub verbose: bool,
}

impl Cli {
    /// Parses the process's arguments; exits with clap's message (and code
    /// 2) on bad ones.
    pub fn parse_args() -> Cli {
        Cli::try_parse_args(std::env::args_os()).unwrap_or_else(|e| e.exit())
    }

    /// Parses a command line. The build's own options go with no
    /// subcommand; the global `-q`/`-v` go anywhere (before or after one).
    ///
    /// (clap's `args_conflicts_with_subcommands` would refuse `-q env
    /// check`, so the conflict is checked here, by where each value came from.)
    pub fn try_parse_args<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let mut cmd = Cli::command();
        let matches = cmd.try_get_matches_from_mut(args)?;
        if let Some((sub, sub_matches)) = matches.subcommand() {
            let given_at = |m: &clap::ArgMatches, id: &str| {
                m.try_contains_id(id).unwrap_or(false)
                    && m.value_source(id) == Some(ValueSource::CommandLine)
            };
            let given = cmd
                .get_arguments()
                .filter(|arg| !arg.is_global_set())
                .find(|arg| {
                    let id = arg.get_id().as_str();
                    // A subcommand's own global of the same name (`cache
                    // --cache-dir`) shows up here too.
                    given_at(&matches, id) && !given_at(sub_matches, id)
                })
                .map(|arg| {
                    arg.get_long()
                        .map(|l| format!("--{l}"))
                        .unwrap_or_else(|| arg.get_id().to_string())
                });
            if let Some(name) = given {
                return Err(cmd.error(
                    clap::error::ErrorKind::ArgumentConflict,
                    format!(
                        "the subcommand '{sub}' cannot be used with '{name}' (an option of \
                         the build itself)"
                    ),
                ));
            }
        }
        Cli::from_arg_matches(&matches).map_err(|e| e.format(&mut cmd))
    }

    /// -1 for `-q`, 1 for `-v`, 0 otherwise.
    pub fn verbosity(&self) -> i8 {
        match (self.quiet, self.verbose) {
            (true, _) => -1,
            (_, true) => 1,
            _ => 0,
        }
    }
}

/// Arguments of the main command: build an image.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The appliance's env.yml (validated before anything slow starts).
    #[arg(long, value_name = "FILE", required = true)]
    pub env: Option<PathBuf>,

    /// The image to write; its suffix picks the format: .raw, .img, .qcow2,
    /// .vmdk (stream-optimized), .vhd (fixed, Azure), .vhdx (Hyper-V), .vdi
    /// (VirtualBox), .ova (OVF + VMDK, VirtualBox and VMware), .tar.gz (GCE:
    /// disk.raw in a GNU tar; the disk a whole number of GiB).
    #[arg(short, long, value_name = "IMAGE", required = true)]
    pub output: Option<PathBuf>,

    /// The image format when the suffix does not say: raw, qcow2, vmdk,
    /// vhd, vhdx, vdi, ova or gce.
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,

    /// The disk's size, e.g. 4G (default: the tree plus headroom; the first
    /// boot grows the root filesystem to the disk anyway).
    #[arg(long, value_name = "SIZE")]
    pub size: Option<String>,

    /// Kernel arguments added after `root=UUID=... ro gpt console=tty0 console=ttyS0,115200`.
    #[arg(
        long,
        value_name = "ARGS",
        default_value = "",
        allow_hyphen_values = true
    )]
    pub cmdline: String,

    /// Where to write the seed ISO (default: NAME.seed.iso beside the image).
    #[arg(long, value_name = "ISO", conflicts_with = "bake_env")]
    pub seed: Option<PathBuf>,

    /// Put the env into the image at /app/env.yml (mode 0600) instead of a seed;
    /// the image file, which then holds the env's secrets, is made mode 0600.
    #[arg(long)]
    pub bake_env: bool,

    /// Replace existing outputs.
    #[arg(long)]
    pub force: bool,

    /// Compress the qcow2 image (smaller, slower to write and to read).
    #[arg(long)]
    pub compress: bool,

    /// Make the disk from this ready root tree instead of building one from
    /// the layers (its files are never modified; the image's additions go to
    /// a hard-linked or copied work tree).
    #[arg(long, value_name = "DIR")]
    pub tree: Option<PathBuf>,

    /// Assemble the disk even if the same image is in the image cache, and
    /// do not store it there. (Builds from layers keep their last 2 images
    /// in the cache directory, keyed by the top layer, the disk and output
    /// options, and the imgbuild and mkfs/qemu-img executables; a no-op
    /// rebuild copies the image instead of assembling it.)
    #[arg(long)]
    pub no_image_cache: bool,

    #[command(flatten)]
    pub layers: LayerArgs,
}

/// Where the root tree's layers come from and where they are cached
/// (shared by the main command and `imgbuild tree`).
#[derive(Debug, Args)]
pub struct LayerArgs {
    /// The directory of layer recipes (NN-name/layer.yml, applied in sorted
    /// order). Default: ./layers when the current directory has one, else
    /// the installed layers (/usr/share/imgbuild/layers for
    /// /usr/bin/imgbuild: PREFIX/share/imgbuild/layers); the log says which.
    #[arg(long, value_name = "DIR")]
    pub layers_dir: Option<PathBuf>,

    /// An extra layer directory stacked on top of the others (repeatable, in order).
    #[arg(long = "layer", value_name = "DIR")]
    pub extra_layers: Vec<PathBuf>,

    /// The base's distribution (ubuntu, debian); default: the base recipe's.
    #[arg(long, value_name = "NAME")]
    pub distro: Option<crate::recipe::Distro>,

    /// The base's suite, e.g. noble or bookworm; default: the recipe's or the distro's.
    #[arg(long, value_name = "SUITE")]
    pub suite: Option<String>,

    /// The archive mirror URL (release and -updates pockets); default: the
    /// recipe's or the distro's (http://archive.ubuntu.com/ubuntu,
    /// http://deb.debian.org/debian).
    #[arg(long, value_name = "URL")]
    pub mirror: Option<String>,

    /// The mirror of the SUITE-security pocket; default: the recipe's, else
    /// the mirror (Ubuntu) or http://deb.debian.org/debian-security (Debian).
    #[arg(long, value_name = "URL")]
    pub security_mirror: Option<String>,

    /// Build from the release pocket alone, without SUITE-updates and
    /// SUITE-security (an unpatched image; the manifest says so).
    #[arg(long)]
    pub release_pocket_only: bool,

    /// An extra keyring that verifies the mirrors, e.g. a local mirror's own
    /// key (repeatable; `.gpg` binary or `.asc` armored). It is copied into
    /// the image as /etc/apt/keyrings/NAME and named in its sources.
    #[arg(long, value_name = "FILE")]
    pub keyring: Vec<PathBuf>,

    /// The mirror the image's own apt sources name (default: --mirror);
    /// for builds through a local mirror or proxy.
    #[arg(long, value_name = "URL")]
    pub image_mirror: Option<String>,

    /// The security mirror the image's own apt sources name (default:
    /// --security-mirror, or --image-mirror where the security pocket comes
    /// from the mirror).
    #[arg(long, value_name = "URL")]
    pub image_security_mirror: Option<String>,

    /// The layer cache (default: $IMGBUILD_CACHE_DIR, else $XDG_CACHE_HOME/imgbuild,
    /// else ~/.cache/imgbuild).
    #[arg(long, value_name = "DIR", env = "IMGBUILD_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Where downloaded packages are kept, shareable between cache directories
    /// (default: CACHE/apt-archives).
    #[arg(long, value_name = "DIR")]
    pub apt_cache: Option<PathBuf>,

    /// Where `@NAME` in a recipe's host_files comes from (repeatable;
    /// default: NAME in $IMGBUILD_BIN_DIR, else beside the imgbuild
    /// executable, else in PREFIX/lib/imgbuild, where the package installs
    /// ecs-firstboot).
    #[arg(long, value_name = "NAME=PATH")]
    pub host_bin: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Make a new env.yml with fresh secrets, check one, or package and restore it.
    #[command(subcommand)]
    Env(EnvCommand),
    /// Write a cidata seed ISO that carries an env.yml (cloud-init NoCloud compatible).
    Seed(SeedArgs),
    /// Build (or take from the cache) the root tree's layers and print their keys.
    #[command(after_help = EXIT_CODES)]
    Tree(TreeArgs),
    /// List or clean the layer cache and its assembled images.
    Cache(CacheArgs),
    /// Boot an image locally in QEMU with its seed, on a throw-away overlay;
    /// prints the ssh and https lines once the guest answers.
    #[command(after_help = EXIT_CODES)]
    Run(RunArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The image to boot (as imgbuild wrote it: raw, qcow2, vmdk, vhd, vhdx
    /// or vdi; an OVA or GCE tar holds its disk inside).
    pub image: PathBuf,

    /// The seed ISO to attach (default: NAME.seed.iso beside NAME.qcow2,
    /// when it exists).
    #[arg(long, value_name = "ISO")]
    pub seed: Option<PathBuf>,

    /// Boot the image itself and keep what the guest writes (default: a
    /// throw-away overlay, removed when the run ends).
    #[arg(long)]
    pub persistent: bool,

    /// Boot with SeaBIOS instead of UEFI.
    #[arg(long)]
    pub bios: bool,

    /// The localhost port forwarded to the guest's SSH (default: a free one).
    #[arg(long, value_name = "PORT")]
    pub ssh_port: Option<u16>,

    /// The localhost port forwarded to the guest's HTTPS (default: a free one).
    #[arg(long, value_name = "PORT")]
    pub https_port: Option<u16>,

    /// The guest's memory in MiB (the appliance wants at least 3 GiB).
    #[arg(long, value_name = "MIB", default_value_t = 3072)]
    pub memory: u32,

    /// The guest's vCPUs.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub cpus: u32,
}

#[derive(Debug, Args)]
pub struct TreeArgs {
    #[command(flatten)]
    pub layers: LayerArgs,

    /// Also put the final tree into DIR (new or empty). Without it, a fully
    /// cached stack is only checked, not extracted.
    #[arg(short, long, value_name = "DIR")]
    pub output: Option<PathBuf>,

    /// Print the layers as JSON instead of a table.
    #[arg(long)]
    pub json: bool,

    /// Extract the final tree (in memory) and list its packages, exactly as
    /// the main build's tree stage does, then discard it (for timing it).
    #[arg(long, conflicts_with = "output")]
    pub extract: bool,
}

#[derive(Debug, Args)]
pub struct CacheArgs {
    /// The layer cache (default: $IMGBUILD_CACHE_DIR, else $XDG_CACHE_HOME/imgbuild,
    /// else ~/.cache/imgbuild).
    #[arg(long, value_name = "DIR", global = true, env = "IMGBUILD_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,

    #[command(subcommand)]
    pub command: CacheCommand,
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// List the cached layers and images: key, layer (or `image` and its
    /// format), size, when built and last used, parent (an image's top layer).
    Ls,
    /// Keep the N most recently used entries of each layer and the N most
    /// recently used images, delete the rest (and anything left behind by
    /// interrupted builds).
    Gc {
        #[arg(long, value_name = "N", default_value_t = 1)]
        keep: usize,
    },
    /// Delete one layer or image entry, by key or a unique prefix of at
    /// least 8 hex digits. A layer entry that others build on is refused:
    /// remove those first, or use `gc`.
    Rm { key: String },
    /// Restore the root tree of one layer entry (key or unique prefix) into
    /// DIR, which must be missing or empty: the entries it builds on, then
    /// its own change. Needs root (owners, device nodes).
    Extract {
        key: String,
        #[arg(value_name = "DIR")]
        dest: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum EnvCommand {
    /// Validate an env.yml and report every problem with its line and key.
    /// Keys it sets that do nothing on this image are warnings: "accepted,
    /// no effect in this image: KEY".
    #[command(after_help = EXIT_CODES)]
    Check(EnvCheckArgs),
    /// Write a new env.yml for DOMAIN, with fresh secrets.
    ///
    /// Every secret is fresh: the storage vault's OpenPGP keys (ecs.vault_encrypt, ecs.vault_sign),
    /// the backup's (appliance.backup.encrypt), the DKIM key (RSA 2048) and
    /// the application's secret settings.
    ///
    /// The file is mode 0600 and never replaces an existing one; comments in
    /// it say what to edit. Prints the DKIM DNS record and the OpenPGP keys'
    /// fingerprints (never a secret). Needs gpg and openssl.
    #[command(after_help = EXIT_CODES)]
    New(EnvNewArgs),
    /// Package an env for safekeeping offline (PDF with QR codes, encrypted archive, seed).
    ///
    /// Writes DOMAIN.env.pdf (the text and
    /// QR codes that reproduce its exact bytes, each labelled n/N), the env's
    /// directory as DOMAIN.env.DATE.tar.gz.gpg (gpg --decrypt reads it), and
    /// DOMAIN.seed.iso (as `imgbuild seed` writes it), all mode 0600.
    ///
    /// The archive's directory is the one the env is in (earlier packages in
    /// it are left out). Needs gpg and tar.
    #[command(after_help = EXIT_CODES)]
    Package(EnvPackageArgs),
    /// Restore an env.yml from its QR codes (scanned, or the package's PDF).
    ///
    /// The input is a text file of the payloads as a
    /// scanner prints them (one per line, in any order, e.g. `zbarimg --raw
    /// scan*.png > codes.txt`), or the package's PDF itself (read with
    /// pdftoppm and zbarimg, Debian packages poppler-utils and zbar-tools).
    #[command(after_help = EXIT_CODES)]
    Unpack(EnvUnpackArgs),
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("archive_key").required(true).args(["passphrase_file", "recipient_key"])))]
pub struct EnvPackageArgs {
    /// The env.yml to package (it must pass env check).
    pub env: PathBuf,

    /// Where to write the three files (default: the env's directory; made when missing, in a directory that exists).
    #[arg(short, long, value_name = "DIR")]
    pub output: Option<PathBuf>,

    /// Encrypt the archive with the passphrase on this file's first line.
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,

    /// Encrypt the archive to this OpenPGP public key (armored or binary;
    /// repeatable: any of them decrypts).
    #[arg(long, value_name = "FILE", conflicts_with = "passphrase_file")]
    pub recipient_key: Vec<PathBuf>,

    /// Replace existing outputs.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct EnvUnpackArgs {
    /// The scanned payloads (text, one per line) or DOMAIN.env.pdf.
    pub input: PathBuf,

    /// The env.yml to write (mode 0600; never over an existing file without --force).
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,

    /// Replace an existing output file.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct EnvNewArgs {
    /// The appliance's domain (appliance.domain), e.g. ecs.example.org.
    pub domain: String,

    /// The directory to write env.yml into (created mode 0700 if missing;
    /// default: ./DOMAIN).
    #[arg(short, long, value_name = "DIR")]
    pub output: Option<PathBuf>,

    /// A file of OpenSSH public key lines for ssh_authorized_keys
    /// (repeatable; e.g. ~/.ssh/id_ed25519.pub).
    #[arg(long, value_name = "FILE")]
    pub ssh_key: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct EnvCheckArgs {
    /// The env.yml to check.
    pub env: PathBuf,

    /// Print the flattened env (`export NAME=value` lines, as the appliance's
    /// units source them) on stdout. It contains the env's secrets.
    #[arg(long)]
    pub flatten: bool,

    /// With --flatten: the trees to print, comma separated, or `.` for all.
    #[arg(long, default_value = "ecs,appliance", requires = "flatten")]
    pub trees: String,

    /// With --flatten: the prefix of every line.
    #[arg(long, default_value = "export ", requires = "flatten")]
    pub prefix: String,

    /// Print the DNS TXT record that publishes the public half of
    /// `appliance.dkim.key` (selector `ecs`: `ecs._domainkey.DOMAIN.`), as a
    /// zone-file line on stdout. Needs openssl; the private key is never
    /// printed. No DKIM key in the env: exit 2.
    #[arg(long, conflicts_with = "flatten")]
    pub dkim_record: bool,
}

#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES)]
pub struct SeedArgs {
    /// The env.yml to carry as the seed's user-data (copied byte for byte).
    #[arg(long, value_name = "FILE")]
    pub env: PathBuf,

    /// The seed ISO to write (mode 0600: it holds the env's secrets).
    #[arg(short, long, value_name = "ISO")]
    pub output: PathBuf,

    /// A cloud-init network-config file to add to the seed.
    #[arg(long, value_name = "FILE")]
    pub network_config: Option<PathBuf>,

    /// The instance-id in meta-data (default: derived from a hash of the env).
    #[arg(long, value_name = "ID")]
    pub instance_id: Option<String>,

    /// Replace an existing output file.
    #[arg(long)]
    pub force: bool,
}
