#!/bin/bash
# Builds the `tiny` lab guest: Debian's cloud kernel plus a busybox initramfs whose /init (the file
# `init` next to this script) reads the NoCloud seed and answers on a few TCP ports. It boots in
# seconds even under TCG, for fast lifecycle and network tests.
#
# Usage: build.sh OUTDIR
#   Writes OUTDIR/vmlinuz (the same linux-image-cloud-amd64 kernel the debian12 image installs),
#   OUTDIR/initrd.img (gzip'd newc cpio) and OUTDIR/packages.txt (the .deb versions used).
# Needs: apt-get (with current package lists), dpkg-deb, depmod (kmod), cpio, gzip.
#
# The Go harness (test/images) hashes every file in this directory into the cache key.
set -euo pipefail

OUT=${1:?usage: build.sh OUTDIR}
RECIPE=$(cd "$(dirname "$0")" && pwd)
# virtio_scsi + sr_mod + isofs: the seed ISO on a virtio-scsi cdrom; virtio_blk: or on a virtio
# disk; virtio_net: eth0. (No AHCI in the cloud kernel, so never a SATA cdrom.)
MODULES=(virtio_pci virtio_blk virtio_net virtio_scsi sr_mod isofs)

for tool in apt-get apt-cache dpkg-deb depmod cpio gzip; do
  command -v "$tool" >/dev/null || { echo "missing host tool: $tool" >&2; exit 1; }
done

mkdir -p "$OUT"
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/vmdlab-build-tiny.XXXXXX")
trap 'rm -rf "$SCRATCH"' EXIT
trap 'exit 143' TERM INT
X=$SCRATCH/extract
R=$SCRATCH/root
mkdir -p "$SCRATCH/debs" "$X"

# The versioned kernel package the metapackage points at today.
KPKG=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
[ -n "$KPKG" ] || { echo "cannot resolve linux-image-cloud-amd64 (run apt-get update)" >&2; exit 1; }
KVER=${KPKG#linux-image-}
(cd "$SCRATCH/debs" && apt-get download -q -o APT::Sandbox::User=root busybox-static "$KPKG" >/dev/null)
for deb in "$SCRATCH"/debs/*.deb; do
  dpkg-deb -x "$deb" "$X"
  dpkg-deb --show --showformat '${Package}\t${Version}\n' "$deb" >>"$OUT/packages.txt"
done

MD=$X/lib/modules/$KVER
depmod -b "$X" "$KVER" # modules.dep is generated at install time, the .deb does not ship it
mkdir -p "$R"/bin "$R"/dev "$R"/etc "$R"/lib/modules "$R"/mnt/seed "$R"/proc "$R"/sys "$R"/tmp

# Copy each module after its dependencies; record the load order for /init.
declare -A SEEN=()
add_module() { # $1: path relative to $MD, as modules.dep spells it
  [ -n "${SEEN[$1]:-}" ] && return
  SEEN[$1]=1
  local deps dep
  deps=$(awk -F': *' -v m="$1" '$1 == m {print $2}' "$MD/modules.dep")
  for dep in $deps; do add_module "$dep"; done
  cp "$MD/$1" "$R/lib/modules/"
  basename "$1" >>"$R/etc/modules.order"
}
: >"$R/etc/modules.order"
for m in "${MODULES[@]}"; do
  path=$(grep -oE "^[^:]*/$m\.ko(\.[a-z]+)?:" "$MD/modules.dep" | tr -d :) || true
  if [ -n "$path" ]; then
    add_module "$path"
  elif grep -qE "/$m\.ko$" "$MD/modules.builtin"; then
    : # built into the kernel
  else
    echo "kernel $KVER has no module $m" >&2
    exit 1
  fi
done

cp "$X/bin/busybox" "$R/bin/busybox"
install -m 0755 "$RECIPE/init" "$R/init"
install -m 0755 "$RECIPE/answer-ssh" "$R/bin/answer-ssh"
install -m 0755 "$RECIPE/answer-id" "$R/bin/answer-id"

install -m 0644 "$X/boot/vmlinuz-$KVER" "$OUT/vmlinuz"
# Fixed timestamps and owners in the archive: the same inputs give the same initramfs bytes.
find "$R" -exec touch -h -d @0 {} +
(cd "$R" && find . -print0 | LC_ALL=C sort -z |
  cpio --null -o -H newc --owner=0:0 --reproducible --quiet | gzip -9 -n) >"$OUT/initrd.img"
chmod 0644 "$OUT/initrd.img" "$OUT/packages.txt"
echo "done: kernel $KVER, modules: $(paste -sd ' ' "$R/etc/modules.order"), initrd $(du -k "$OUT/initrd.img" | cut -f1) KiB"
