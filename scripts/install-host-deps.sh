#!/usr/bin/env bash
# Installs the host packages imgbuild and its tests need, on Debian 12 (bookworm).
# Idempotent: packages already installed at the wanted version are left alone.
# qemu-system-x86 and e2fsprogs come from bookworm-backports
# (QEMU because qemu-utils 10 from backports is preinstalled on our machines, e2fsprogs
# because only 1.47.2+ honours SOURCE_DATE_EPOCH in mkfs.ext4 -d).
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
  echo "install-host-deps: must run as root (it runs apt-get)" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
backports=/etc/apt/sources.list.d/bookworm-backports.list
if ! grep -qs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/* ; then
  echo "deb http://deb.debian.org/debian bookworm-backports main" > "$backports"
  stamp_stale=1
fi

# Refresh the package lists when they are older than a day or a source was added.
lists=/var/lib/apt/lists
if [ "${stamp_stale:-0}" = 1 ] || [ -z "$(find "$lists" -maxdepth 1 -name '*bookworm-backports*Packages*' -mmin -1440 2>/dev/null)" ]; then
  # Third-party sources on some machines are unreachable; their failure must not stop us.
  apt-get update -q || echo "install-host-deps: apt-get update reported errors (continuing)" >&2
fi

base_pkgs=(
  mmdebstrap          # layer 0 of the root tree
  ubuntu-keyring      # verifies Ubuntu's archive for Ubuntu bases (the default recipe)
  tar apt             # GNU tar packs layer cache entries; apt-helper probes the mirror
  curl                # scripts/test.sh asks each archive whether it answers
  gnupg apt-utils     # scripts/local-pocket.sh: a signed test pocket (gpg, apt-ftparchive); imgbuild env new/package (OpenPGP keys, the encrypted archive)
  poppler-utils zbar-tools # imgbuild env unpack of a PDF (pdftoppm renders it, zbarimg reads the QR codes); the env package tests
  openssh-client      # boot tests log in to the appliance with the real OpenSSH client
  pebble              # boot tests: a local ACME server (and its DNS) the appliance gets its certificate from
  socat               # boot tests: the guest reaches the ACME server through a QEMU guestfwd, one socat per connection
  python3-dkim        # boot tests: dkimpy verifies the DKIM signature of the mail the appliance sends
  git busybox-static  # boot tests: the application's source (a git repository served over HTTP) and its container image (a static busybox)
  python3-venv        # the SBOM tests' SPDX validator (pyspdxtools, from PyPI, in its own venv below)
  openssl             # imgbuild env check verifies the env's TLS pair; boot tests make a test CA
  zstd                # layer cache entries
  xorriso genisoimage # seed ISO checks in tests (isoinfo is in genisoimage; genisoimage -udf makes the UDF fixtures)
  udftools            # UDF seed reader tests: mkudffs makes a UDF 2.01 volume, udfinfo checks every fixture
  libxml2-utils       # xmllint checks the OVA's OVF descriptor in the format tests
  dosfstools mtools   # ESP creation and vfat seed tests
  gdisk fdisk         # sgdisk -v checks of built images
  util-linux          # blkid
  ovmf                # UEFI firmware for boot tests
  cloud-image-utils   # cloud-localds, a second seed writer the reader must accept
  python3             # reference flattener tooling in tests
  xfsprogs btrfs-progs cryptsetup-bin # the agent's signature probe is checked against libblkid on real filesystems
)
backports_pkgs=(
  qemu-system-x86     # boot tests (must come from backports: qemu-utils 10 is preinstalled)
  e2fsprogs           # 1.47.2 honours SOURCE_DATE_EPOCH
)

missing=()
for p in "${base_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

need_bpo=0
for p in "${backports_pkgs[@]}"; do
  v=$(dpkg-query -W -f='${Version}' "$p" 2>/dev/null || true)
  case "$v" in *bpo*) ;; *) need_bpo=1 ;; esac
done
if [ "$need_bpo" = 1 ]; then
  apt-get install -y -q --no-install-recommends -t bookworm-backports "${backports_pkgs[@]}"
fi

# The SPDX validator the SBOM tests run (spdx-tools is not packaged in
# Debian): PyPI's, pinned, in a venv of Debian's python3.
spdx_venv=/opt/imgbuild-tests/spdx
spdx_version=0.8.5
if ! "$spdx_venv/bin/pip" show spdx-tools 2>/dev/null | grep -qx "Version: $spdx_version"; then
  /usr/bin/python3 -m venv "$spdx_venv"
  "$spdx_venv/bin/pip" install -q "spdx-tools==$spdx_version"
fi

# A second reader of the OVA the format tests run: the Common OVF Tool
# (`cot info`), PyPI's, pinned, in its own venv.
cot_venv=/opt/imgbuild-tests/cot
cot_version=2.2.1
if ! "$cot_venv/bin/pip" show cot 2>/dev/null | grep -qx "Version: $cot_version"; then
  /usr/bin/python3 -m venv "$cot_venv"
  "$cot_venv/bin/pip" install -q "cot==$cot_version"
fi

echo "install-host-deps: host packages in place"
