#!/usr/bin/env bash
# Makes (or moves) a small signed apt pocket on disk, for the tests and
# benchmarks of rebuilds while a pocket moves:
#
#   bash scripts/local-pocket.sh DIR SUITE VERSION [VERSION...]
#
# DIR/dists/SUITE/ then holds an InRelease signed by DIR's own test key
# (made on first use in DIR/gnupg, exported to DIR/pocket.gpg for
# `imgbuild --keyring`) and components main and universe, where main has the
# package `imgbuild-pocket-test` in each VERSION given (a tiny arch:all
# package). Run it again with other versions to move the pocket. Use it as
# `--security-mirror file://DIR --keyring DIR/pocket.gpg`.
set -euo pipefail
[ $# -ge 3 ] || { echo "usage: $0 DIR SUITE VERSION [VERSION...]" >&2; exit 2; }
dir=$(realpath -m "$1"); suite=$2; shift 2
for t in gpg apt-ftparchive dpkg-deb; do
  command -v "$t" >/dev/null || { echo "$0: $t is missing (scripts/install-host-deps.sh installs it)" >&2; exit 1; }
done
mkdir -p "$dir/gnupg" "$dir/pool"
chmod 700 "$dir/gnupg"
export GNUPGHOME=$dir/gnupg
if [ ! -s "$dir/pocket.gpg" ]; then
  gpg --batch --quiet --passphrase '' --quick-gen-key 'imgbuild test pocket <pocket@test.invalid>' ed25519 sign never
  gpg --batch --quiet --export >"$dir/pocket.gpg.tmp"
  mv "$dir/pocket.gpg.tmp" "$dir/pocket.gpg"
fi
rm -f "$dir"/pool/*.deb
for v in "$@"; do
  pkg=$(mktemp -d)
  mkdir -p "$pkg/DEBIAN" "$pkg/usr/share/imgbuild-pocket-test"
  cat >"$pkg/DEBIAN/control" <<CONTROL
Package: imgbuild-pocket-test
Version: $v
Architecture: all
Maintainer: imgbuild tests <pocket@test.invalid>
Priority: optional
Section: misc
Description: a package whose versions move a test pocket
CONTROL
  echo "$v" >"$pkg/usr/share/imgbuild-pocket-test/version"
  SOURCE_DATE_EPOCH=1700000000 dpkg-deb --root-owner-group -Zgzip --build "$pkg" "$dir/pool/imgbuild-pocket-test_${v}_all.deb" >/dev/null
  rm -rf "$pkg"
done
rm -rf "$dir/dists/$suite"
for comp in main universe; do
  mkdir -p "$dir/dists/$suite/$comp/binary-amd64"
done
(cd "$dir" && apt-ftparchive packages pool) >"$dir/dists/$suite/main/binary-amd64/Packages"
: >"$dir/dists/$suite/universe/binary-amd64/Packages"
for comp in main universe; do
  gzip -9n -k "$dir/dists/$suite/$comp/binary-amd64/Packages"
done
(cd "$dir/dists/$suite" && apt-ftparchive \
  -o APT::FTPArchive::Release::Suite="$suite" \
  -o APT::FTPArchive::Release::Codename="$suite" \
  -o APT::FTPArchive::Release::Architectures=amd64 \
  -o APT::FTPArchive::Release::Components="main universe" \
  release .) >"$dir/dists/$suite/Release.tmp"
mv "$dir/dists/$suite/Release.tmp" "$dir/dists/$suite/Release"
gpg --batch --quiet --yes --clearsign -o "$dir/dists/$suite/InRelease" "$dir/dists/$suite/Release"
echo "local-pocket: $dir/dists/$suite with imgbuild-pocket-test $*"
