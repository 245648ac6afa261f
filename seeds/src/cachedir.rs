//! imgbuild's default cache directory, in one place for the builder (which
//! keeps its layers there) and the boot tests (which read the layer archive
//! of the image they built).

use std::path::PathBuf;

/// `$XDG_CACHE_HOME/imgbuild`, else `~/.cache/imgbuild` (`/root` without a
/// `HOME`). `--cache-dir` and `$IMGBUILD_CACHE_DIR` come before it; reading
/// them is the caller's.
pub fn default() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("imgbuild");
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache/imgbuild")
}
