#!/usr/bin/env bash
# The plain pipeline bench/run.sh compares imgbuild with: the same Debian
# image made by hand with mmdebstrap + mkfs.ext4 -d + sgdisk + dd + qemu-img,
# with no cache of any kind. Same shape as imgbuild's disk: GPT with a BIOS
# boot partition (GRUB core.img), an ESP (FAT32, GRUB's BOOTX64.EFI) and the
# ext4 root last; GRUB built with the tree's own grub-mkimage (the host needs
# no GRUB); boots under SeaBIOS and OVMF.
#
#   bench/plain-pipeline.sh tree TREE            mmdebstrap the tree into TREE (must not exist)
#   bench/plain-pipeline.sh disk TREE OUT.qcow2  OUT.raw and OUT.qcow2 from TREE (writes
#                                                /etc/fstab and /boot/grub/grub.cfg into TREE)
#   bench/plain-pipeline.sh all TREE OUT.qcow2   both
#
# Settings (environment):
#   PACKAGES      comma-separated packages for mmdebstrap --include (required for tree)
#   SUITE MIRROR  default bookworm, http://deb.debian.org/debian
#   APT_ARCHIVES  a directory of .deb files to take packages from instead of
#                 downloading them (hard-linked in; bench/run.sh passes the
#                 same warm cache imgbuild uses)
#   CMDLINE       extra kernel arguments (after root=, ro and the consoles)
#   MARKER        the line the boot marker prints (default PLAIN-BOOTED)
#   SOURCE_DATE_EPOCH  for mkfs.ext4 and mkfs.fat timestamps
#
# What it does not do, compared with imgbuild: no per-layer cache (every tree
# is a full mmdebstrap), no first-boot agent and no appliance units (a marker
# unit takes their place), no seed, UUIDs fixed by this script instead of
# derived from the inputs, no manifest or SHA256SUMS.
set -euo pipefail

die() { echo "plain-pipeline: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (mmdebstrap --mode=root, chroot)"

SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
CMDLINE=${CMDLINE:-}
MARKER=${MARKER:-PLAIN-BOOTED}
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1700000000}

# Fixed identities (a hand pipeline picks them once).
DISK_GUID=5c1a7d2e-0000-4000-8000-000000000001
BIOS_GUID=5c1a7d2e-0000-4000-8000-000000000002
ESP_GUID=5c1a7d2e-0000-4000-8000-000000000003
ROOT_PART_GUID=5c1a7d2e-0000-4000-8000-000000000004
ROOT_UUID=5c1a7d2e-0000-4000-8000-000000000005
ESP_ID=5C1A7D2E
MIB=1048576

make_tree() {
  local tree=$1
  [ -n "${PACKAGES:-}" ] || die "PACKAGES is empty"
  [ ! -e "$tree" ] || die "$tree exists"
  local hooks=()
  if [ -n "${APT_ARCHIVES:-}" ]; then
    export APT_ARCHIVES
    hooks+=(--setup-hook='mkdir -p "$1/var/cache/apt/archives/partial"; find "$APT_ARCHIVES" -maxdepth 1 -name "*.deb" -exec cp -l -t "$1/var/cache/apt/archives" {} + 2>/dev/null || find "$APT_ARCHIVES" -maxdepth 1 -name "*.deb" -exec cp -t "$1/var/cache/apt/archives" {} +')
    # ... and what was downloaded goes back, for the next build.
    hooks+=(--customize-hook='find "$1/var/cache/apt/archives" -maxdepth 1 -name "*.deb" -exec cp -l -n -t "$APT_ARCHIVES" {} + 2>/dev/null || find "$1/var/cache/apt/archives" -maxdepth 1 -name "*.deb" -exec cp -n -t "$APT_ARCHIVES" {} +')
  fi
  export MARKER
  mmdebstrap --mode=root --format=directory --variant=minbase \
    --skip=essential/unlink \
    "${hooks[@]}" \
    --include="$PACKAGES" \
    --customize-hook='printf "#!/bin/sh\necho \"%s \$(cut -d\" \" -f1 /proc/uptime)\" > /dev/ttyS0\nsystemctl --no-block poweroff\n" "$MARKER" > "$1/usr/local/bin/bench-marker"; chmod 755 "$1/usr/local/bin/bench-marker"' \
    --customize-hook='printf "[Unit]\nDescription=Bench boot marker (after nginx and PostgreSQL; then power off)\nAfter=nginx.service postgresql.service multi-user.target\nWants=nginx.service postgresql.service\n[Service]\nType=oneshot\nExecStart=/usr/local/bin/bench-marker\n[Install]\nWantedBy=multi-user.target\n" > "$1/etc/systemd/system/bench-marker.service"' \
    --customize-hook='chroot "$1" systemctl enable bench-marker.service systemd-networkd.service systemd-resolved.service' \
    --customize-hook='ln -sf /dev/null "$1/etc/systemd/system/systemd-firstboot.service"' \
    --customize-hook='printf "[Match]\nName=en* eth*\n[Network]\nDHCP=yes\n" > "$1/etc/systemd/network/80-dhcp.network"' \
    --customize-hook='echo localhost > "$1/etc/hostname"; : > "$1/etc/machine-id"' \
    "$SUITE" "$tree" "$MIRROR"
}

# 8 bytes little-endian of $2 written at byte offset $3 of file $1.
put_le64() {
  local v=$2 s="" i
  for i in 0 1 2 3 4 5 6 7; do s+=$(printf '\\x%02x' $(((v >> (8 * i)) & 255))); done
  printf "$s" | dd of="$1" bs=1 seek="$3" conv=notrunc status=none
}

make_disk() {
  local tree=$1 qcow2=$2
  local raw=${qcow2%.qcow2}.raw
  local work
  work=$(mktemp -d "$(dirname "$qcow2")/.plain.XXXXXX")
  trap 'rm -rf "$work"' RETURN

  local vmlinuz initrd
  vmlinuz=$(cd "$tree/boot" && ls vmlinuz-* | sort -V | tail -1)
  initrd=initrd.img-${vmlinuz#vmlinuz-}
  [ -f "$tree/boot/$initrd" ] || die "no $initrd in $tree/boot"

  # What the disk adds to the tree: fstab and grub.cfg.
  printf 'UUID=%s\t/\text4\tdefaults,errors=remount-ro\t0\t1\n' "$ROOT_UUID" >"$tree/etc/fstab"
  mkdir -p "$tree/boot/grub"
  cat >"$tree/boot/grub/grub.cfg" <<EOF
set timeout=1
set default=0
serial --unit=0 --speed=115200
terminal_input console serial
terminal_output console serial
search --no-floppy --fs-uuid --set=root $ROOT_UUID
menuentry 'Debian (plain pipeline)' {
	linux /boot/$vmlinuz root=UUID=$ROOT_UUID ro console=tty0 console=ttyS0,115200 $CMDLINE
	initrd /boot/$initrd
}
EOF

  # GRUB images from the tree's own grub-mkimage (chroot, nothing mounted).
  local gtmp=$tree/tmp/plain-grub
  mkdir -p "$gtmp"
  printf 'search --no-floppy --fs-uuid --set=root %s\nset prefix=($root)/boot/grub\nconfigfile ($root)/boot/grub/grub.cfg\n' \
    "$ROOT_UUID" >"$gtmp/early.cfg"
  chroot "$tree" grub-mkimage -O x86_64-efi -p /boot/grub -c /tmp/plain-grub/early.cfg \
    -o /tmp/plain-grub/BOOTX64.EFI part_gpt ext2 fat search search_fs_uuid normal \
    configfile linux boot echo test serial terminal efi_gop all_video
  chroot "$tree" grub-mkimage -O i386-pc -p /boot/grub -c /tmp/plain-grub/early.cfg \
    -o /tmp/plain-grub/core.img biosdisk part_gpt ext2 search search_fs_uuid normal \
    configfile linux boot echo test serial terminal
  mv "$gtmp/BOOTX64.EFI" "$gtmp/core.img" "$work/"
  cp "$tree/usr/lib/grub/i386-pc/boot.img" "$work/boot.img"
  rm -rf "$gtmp"

  # Sizes: the tree plus 15% and 64 MiB, whole MiB.
  local tree_mib root_mib disk_mib
  tree_mib=$(du -s -B$MIB "$tree" | cut -f1)
  root_mib=$((tree_mib * 115 / 100 + 64))
  disk_mib=$((1 + 1 + 64 + root_mib + 1))

  # ESP: FAT32, 64 MiB, BOOTX64.EFI only.
  mkfs.fat -F 32 -n ESP -i "$ESP_ID" -C "$work/esp.img" $((64 * 1024)) >/dev/null
  MTOOLS_SKIP_CHECK=1 mmd -i "$work/esp.img" ::/EFI ::/EFI/BOOT
  MTOOLS_SKIP_CHECK=1 mcopy -i "$work/esp.img" "$work/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI

  # Root: ext4 from the tree.
  mkfs.ext4 -q -F -L root -U "$ROOT_UUID" -E root_owner=0:0 -d "$tree" "$work/root.img" "${root_mib}M"

  # The disk: GPT, then dd everything into place.
  rm -f "$raw"
  truncate -s "${disk_mib}M" "$raw"
  sgdisk -o -U "$DISK_GUID" \
    -n 1:2048:4095 -t 1:ef02 -c 1:bios -u 1:"$BIOS_GUID" \
    -n 2:4096:+64M -t 2:ef00 -c 2:esp -u 2:"$ESP_GUID" \
    -n 3:0:0 -t 3:4f68bce3-e8cd-4db1-96e7-fbcaf984b709 -c 3:root -u 3:"$ROOT_PART_GUID" \
    "$raw" >/dev/null
  dd if="$work/esp.img" of="$raw" bs=1M seek=2 conv=notrunc,sparse status=none
  dd if="$work/root.img" of="$raw" bs=1M seek=66 conv=notrunc,sparse status=none
  # BIOS: core.img in the BIOS boot partition (LBA 2048), its blocklist
  # pointing at LBA 2049; boot.img's code in the MBR pointing at LBA 2048,
  # BPB area zeroed, the drive check NOPed (as grub-bios-setup does).
  local core_sectors
  core_sectors=$((($(stat -c %s "$work/core.img") + 511) / 512))
  [ "$core_sectors" -le 2048 ] || die "core.img has $core_sectors sectors (max 2048)"
  put_le64 "$work/core.img" 2049 500
  dd if="$work/core.img" of="$raw" bs=512 seek=2048 conv=notrunc status=none
  dd if="$work/boot.img" of="$raw" bs=440 count=1 conv=notrunc status=none
  dd if=/dev/zero of="$raw" bs=1 seek=3 count=$((0x5a - 3)) conv=notrunc status=none
  put_le64 "$raw" 2048 $((0x5c))
  printf '\x90\x90' | dd of="$raw" bs=1 seek=$((0x66)) conv=notrunc status=none

  qemu-img convert -f raw -O qcow2 "$raw" "$qcow2"
}

case "${1:-}" in
  tree) [ $# = 2 ] || die "usage: $0 tree TREE"; make_tree "$2" ;;
  disk) [ $# = 3 ] || die "usage: $0 disk TREE OUT.qcow2"; make_disk "$2" "$3" ;;
  all) [ $# = 3 ] || die "usage: $0 all TREE OUT.qcow2"; make_tree "$2"; make_disk "$2" "$3" ;;
  *) die "usage: $0 tree TREE | disk TREE OUT.qcow2 | all TREE OUT.qcow2" ;;
esac
