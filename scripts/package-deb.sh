#!/usr/bin/env bash
# Builds the Debian package of imgbuild with plain dpkg-deb:
#   bash scripts/package-deb.sh   →  target/debian/imgbuild_VERSION_amd64.deb
#
# Contents: /usr/bin/imgbuild; /usr/lib/imgbuild/ecs-firstboot (the agent
# layer 20 copies into the image: imgbuild finds it in ../lib/imgbuild from
# its own directory); the default layers in /usr/share/imgbuild/layers (used
# when the current directory has no ./layers); README and docs in
# /usr/share/doc/imgbuild; man pages (clap_mangen) and bash/zsh/fish
# completions (clap_complete), generated from the clap definitions by
# builder/examples/gen-docs.rs.
#
# Builds with CARGO_BUILD_JOBS (default 1) in the checkout's target dir.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-1}

version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
arch=$(dpkg --print-architecture)
out=target/debian
stage=$out/imgbuild_${version}_${arch}
deb=$out/imgbuild_${version}_${arch}.deb

cargo build --release --locked -p imgbuild -p ecs-firstboot
rm -rf "$stage" "$out/gen"
cargo run --release --locked -q -p imgbuild --example gen-docs -- "$out/gen"

install -d "$stage/DEBIAN" "$stage/usr/bin" "$stage/usr/lib/imgbuild" \
  "$stage/usr/share/imgbuild" "$stage/usr/share/doc/imgbuild/docs" \
  "$stage/usr/share/man/man1" "$stage/usr/share/bash-completion/completions" \
  "$stage/usr/share/zsh/vendor-completions" "$stage/usr/share/fish/vendor_completions.d"
install -m 0755 target/release/imgbuild "$stage/usr/bin/imgbuild"
install -m 0755 target/release/ecs-firstboot "$stage/usr/lib/imgbuild/ecs-firstboot"
# The layers as in the checkout (git's files only, when it is one: no editor or build leftovers).
if git -C "$root" rev-parse --git-dir >/dev/null 2>&1; then
  git -C "$root" ls-files -z layers | tar --null -T - -cf - | tar -xf - -C "$stage/usr/share/imgbuild"
else
  cp -a layers "$stage/usr/share/imgbuild/"
fi
install -m 0644 README.md "$stage/usr/share/doc/imgbuild/"
install -m 0644 docs/*.md "$stage/usr/share/doc/imgbuild/docs/"
for page in "$out"/gen/man/*.1; do
  gzip -9n < "$page" > "$stage/usr/share/man/man1/$(basename "$page").gz"
done
install -m 0644 "$out/gen/completions/imgbuild.bash" "$stage/usr/share/bash-completion/completions/imgbuild"
install -m 0644 "$out/gen/completions/_imgbuild" "$stage/usr/share/zsh/vendor-completions/_imgbuild"
install -m 0644 "$out/gen/completions/imgbuild.fish" "$stage/usr/share/fish/vendor_completions.d/imgbuild.fish"
cat > "$stage/usr/share/doc/imgbuild/copyright" <<'COPYRIGHT'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: imgbuild

Files: *
License: MIT or Apache-2.0
COPYRIGHT

size=$(du -sk "$stage" | cut -f1)
cat > "$stage/DEBIAN/control" <<CONTROL
Package: imgbuild
Version: $version
Architecture: $arch
Maintainer: imgbuild maintainers <imgbuild@localhost>
Installed-Size: $size
Section: admin
Priority: optional
Depends: mmdebstrap, e2fsprogs, dosfstools, mtools, qemu-utils, tar, zstd, openssl, gnupg, util-linux, ca-certificates
Recommends: ubuntu-keyring, debian-archive-keyring, qemu-system-x86, ovmf, poppler-utils, zbar-tools
Description: ECS appliance image builder and first-boot agent
 imgbuild builds the ECS appliance's disk image (GPT, BIOS and UEFI GRUB,
 ext4) and its cidata seed from layered recipes, cached per layer, and
 makes, checks and packages the appliance's env.yml. ecs-firstboot is the
 agent it bakes into the image.
CONTROL

dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "package-deb: $deb"
