#!/bin/bash
# Builds the `debian12` lab image: a small but real Debian 12 (bookworm) cloud image made only from
# Debian packages.
#
#   debootstrap --variant=minbase, then linux-image-cloud-amd64, systemd, udev, iproute2,
#   cloud-init (NoCloud datasource only), openssh-server, sudo; one MBR partition (ext4, label
#   rootfs) booted by extlinux from the image's own disk; zlib-compressed qcow2, 2 GiB virtual.
#
# Usage: build.sh OUTDIR
#   Writes OUTDIR/disk.qcow2 and OUTDIR/packages.txt (name<TAB>version of every installed package:
#   builds follow the live mirror, so the manifest is what makes a cached image explainable).
#   Progress goes to stdout; the noisy tool output goes to OUTDIR/*.log and is printed on failure.
# Env:
#   VMD_LAB_MIRROR   Debian mirror (default http://deb.debian.org/debian)
#   TMPDIR           scratch space for the root tree and the raw disk (about 2.5 GiB peak)
# Needs root and: debootstrap sfdisk losetup partx mkfs.ext4 extlinux qemu-img
#                 (+ /usr/lib/syslinux/mbr/mbr.bin from syslinux-common).
#
# The Go harness (test/images) hashes every file in this directory into the cache key: edit
# anything here and the next test run rebuilds the image.
set -euo pipefail

OUT=${1:?usage: build.sh OUTDIR}
RECIPE=$(cd "$(dirname "$0")" && pwd)
MIRROR=${VMD_LAB_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
DISK_SIZE=2G
# net.ifnames=0: cloud-init's networkd renderer matches on the interface name, and the seeds name it eth0.
CMDLINE="root=LABEL=rootfs ro console=tty0 console=ttyS0,115200n8 net.ifnames=0"
PACKAGES=(
  systemd-sysv udev dbus kmod iproute2 netbase procps   # minbase has no init, no udev, no ip
  linux-image-cloud-amd64 initramfs-tools
  cloud-init cloud-guest-utils
  openssh-server sudo
)

T0=$(date +%s%N)
step() { printf '[%6.1fs] %s\n' "$((($(date +%s%N) - T0) / 1000000))e-3" "$*"; }
fail_with_log() { echo "FAILED; last lines of $1:" >&2; tail -n 40 "$1" >&2; exit 1; }

for tool in debootstrap sfdisk losetup partx mkfs.ext4 extlinux qemu-img chroot; do
  command -v "$tool" >/dev/null || { echo "missing host tool: $tool" >&2; exit 1; }
done
MBR=/usr/lib/syslinux/mbr/mbr.bin
[ -r "$MBR" ] || { echo "missing $MBR (install syslinux-common)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "must run as root (debootstrap, loop devices)" >&2; exit 1; }

mkdir -p "$OUT"
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/vmdlab-build-debian12.XXXXXX")
ROOT=$SCRATCH/rootfs
RAW=$SCRATCH/disk.raw
MOUNTS=()
LOOP=
cleanup() {
  set +e
  local i
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do umount -l "${MOUNTS[$i]}" 2>/dev/null; done
  if [ -n "$LOOP" ]; then partx -d "$LOOP" 2>/dev/null; losetup -d "$LOOP"; fi
  rm -rf --one-file-system "$SCRATCH"
}
trap cleanup EXIT
trap 'exit 143' TERM INT # run the EXIT trap (unmount, free the loop device) when cancelled

# ------------------------------------------------------------------ 1. base system
step "debootstrap $SUITE minbase from $MIRROR"
debootstrap --variant=minbase --components=main "$SUITE" "$ROOT" "$MIRROR" \
  >"$OUT/debootstrap.log" 2>&1 || fail_with_log "$OUT/debootstrap.log"

# No documentation, man pages or translations; no recommends: a smaller image compresses and boots faster.
cat >"$ROOT/etc/dpkg/dpkg.cfg.d/01-vmdlab-nodoc" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
EOF
printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
  >"$ROOT/etc/apt/apt.conf.d/01-vmdlab-norecommends"
cat >"$ROOT/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb http://deb.debian.org/debian-security $SUITE-security main
EOF
# Never start daemons inside the build chroot.
printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
chmod 0755 "$ROOT/usr/sbin/policy-rc.d"
# /vmlinuz and /initrd.img symlinks keep the boot loader config independent of the kernel version.
printf 'do_symlinks = yes\nlink_in_boot = no\n' >"$ROOT/etc/kernel-img.conf"

for m in proc sys dev dev/pts; do mkdir -p "$ROOT/$m"; done
mount -t proc proc "$ROOT/proc" && MOUNTS+=("$ROOT/proc")
mount -t sysfs sys "$ROOT/sys" && MOUNTS+=("$ROOT/sys")
mount --bind /dev "$ROOT/dev" && MOUNTS+=("$ROOT/dev")
mount -t devpts devpts "$ROOT/dev/pts" && MOUNTS+=("$ROOT/dev/pts")

# ------------------------------------------------------------------ 2. packages
step "apt-get install ${PACKAGES[*]}"
chroot "$ROOT" /usr/bin/env DEBIAN_FRONTEND=noninteractive LC_ALL=C /bin/sh -ec "
  apt-get update -q
  apt-get -y -q -o Dpkg::Options::=--force-confold upgrade
  apt-get -y -q install ${PACKAGES[*]}
" >"$OUT/apt.log" 2>&1 || fail_with_log "$OUT/apt.log"
chroot "$ROOT" dpkg-query -W -f '${Package}\t${Version}\n' >"$OUT/packages.txt"
step "$(wc -l <"$OUT/packages.txt") packages installed"

# ------------------------------------------------------------------ 3. configuration
KVER=$(basename "$(readlink -f "$ROOT/vmlinuz")")
KVER=${KVER#vmlinuz-}
step "configuring (kernel $KVER)"

echo 'LABEL=rootfs  /  ext4  defaults,errors=remount-ro  0 1' >"$ROOT/etc/fstab"
echo localhost >"$ROOT/etc/hostname"
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$ROOT/etc/hosts"

# cloud-init: NoCloud only. The packaged 90_dpkg.cfg lists every datasource; overwrite it so
# ds-identify never probes the network for EC2/OpenStack metadata services.
echo 'datasource_list: [ NoCloud, None ]' >"$ROOT/etc/cloud/cloud.cfg.d/90_dpkg.cfg"
install -m 0644 "$RECIPE/cloud.cfg" "$ROOT/etc/cloud/cloud.cfg.d/10_vmdlab.cfg"

# Timers and scrubbers only add CPU load to short-lived test guests (e2scrub_reap alone costs ~14 s
# under TCG).
for unit in e2scrub_reap.service e2scrub_all.timer apt-daily.timer apt-daily-upgrade.timer \
  dpkg-db-backup.timer fstrim.timer man-db.timer; do
  chroot "$ROOT" systemctl disable "$unit" >/dev/null 2>&1 || true
done
chroot "$ROOT" systemctl enable systemd-networkd.service >/dev/null 2>&1
# A guest with one configured link must not wait for all of them.
mkdir -p "$ROOT/etc/systemd/system/systemd-networkd-wait-online.service.d"
cat >"$ROOT/etc/systemd/system/systemd-networkd-wait-online.service.d/10-vmdlab-any.conf" <<'EOF'
[Service]
ExecStart=
ExecStart=/lib/systemd/systemd-networkd-wait-online --any --timeout=20
EOF
# The lab bridge sends no IPv6 router advertisements: without this a static IPv4 link stays
# "configuring" ~12 s waiting for one, and cloud-init waits with it. cloud-init 22.4 cannot render
# accept-ra for static links, so add a drop-in next to the .network files it writes.
for i in 0 1 2 3; do
  d="$ROOT/etc/systemd/network/10-cloud-init-eth$i.network.d"
  mkdir -p "$d"
  printf '[Network]\nIPv6AcceptRA=no\n' >"$d/50-vmdlab-no-ra.conf"
done

# Only the drivers needed to find the root disk: a smaller initramfs unpacks faster under TCG.
# (The cloud kernel has no AHCI driver: disks and seeds must be virtio or IDE, never SATA.)
printf 'MODULES=list\nCOMPRESS=zstd\n' >"$ROOT/etc/initramfs-tools/conf.d/vmdlab.conf"
printf '%s\n' virtio_pci virtio_blk virtio_scsi sd_mod ata_piix ext4 >"$ROOT/etc/initramfs-tools/modules"
chroot "$ROOT" update-initramfs -u -k "$KVER" >"$OUT/initramfs.log" 2>&1 || fail_with_log "$OUT/initramfs.log"

mkdir -p "$ROOT/boot/extlinux"
cat >"$ROOT/boot/extlinux/extlinux.conf" <<EOF
DEFAULT debian
PROMPT 0
TIMEOUT 0
LABEL debian
  LINUX /vmlinuz
  INITRD /initrd.img
  APPEND $CMDLINE
EOF

# ------------------------------------------------------------------ 4. strip per-instance state
step "cleaning the root tree"
chroot "$ROOT" apt-get clean
rm -f "$ROOT/usr/sbin/policy-rc.d"
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin
rm -f "$ROOT"/etc/ssh/ssh_host_* # cloud-init generates them per instance
: >"$ROOT/etc/machine-id"        # systemd generates it on first boot
rm -f "$ROOT/var/lib/dbus/machine-id"
rm -rf "$ROOT"/var/lib/cloud/* "$ROOT"/var/log/*.log "$ROOT"/var/log/apt/* "$ROOT"/tmp/* "$ROOT"/var/tmp/*
rm -f "$ROOT"/var/cache/debconf/*-old "$ROOT"/var/lib/dpkg/*-old
# debootstrap installed its packages before the dpkg path-excludes existed: prune those files too.
find "$ROOT/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
find "$ROOT/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$ROOT"/usr/share/man/* "$ROOT"/usr/share/info/* "$ROOT"/usr/share/lintian/*
find "$ROOT/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
: >"$ROOT/etc/resolv.conf"
for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do umount "${MOUNTS[$i]}"; done
MOUNTS=()
step "root tree: $(du -sm --apparent-size "$ROOT" | cut -f1) MiB"

# ------------------------------------------------------------------ 5. bootable disk
step "partitioning and populating a $DISK_SIZE raw disk"
truncate -s "$DISK_SIZE" "$RAW"
printf 'label: dos\nstart=2048, type=83, bootable\n' | sfdisk -q "$RAW"
dd if="$MBR" of="$RAW" bs=440 count=1 conv=notrunc status=none
LOOP=$(losetup -f --show -P "$RAW")
# Without udev the kernel may not create /dev/loopNp1 by itself: ask partx.
for _ in 1 2 3 4 5 6 7 8 9 10; do
  [ -b "${LOOP}p1" ] && break
  partx -a "$LOOP" 2>/dev/null || true
  sleep 0.2
done
[ -b "${LOOP}p1" ] || { echo "no partition device ${LOOP}p1" >&2; exit 1; }
# mkfs -d copies the tree in: no deleted-file garbage, so the qcow2 stays small.
mkfs.ext4 -q -L rootfs -E lazy_itable_init=0,lazy_journal_init=0 -d "$ROOT" "${LOOP}p1"
MP=$SCRATCH/mnt
mkdir -p "$MP"
mount "${LOOP}p1" "$MP" && MOUNTS+=("$MP")
# "unable to obtain device geometry" on a loop device is harmless.
extlinux --install "$MP/boot/extlinux" >"$OUT/extlinux.log" 2>&1 || fail_with_log "$OUT/extlinux.log"
umount "$MP"
MOUNTS=()
partx -d "$LOOP" 2>/dev/null || true
losetup -d "$LOOP"
LOOP=

# ------------------------------------------------------------------ 6. qcow2
# zlib, not zstd: guests booted ~9 s slower under TCG from a zstd-compressed base.
step "qemu-img convert -c (zlib)"
qemu-img convert -c -O qcow2 -o compression_type=zlib "$RAW" "$OUT/disk.qcow2"
chmod 0644 "$OUT/disk.qcow2" "$OUT/packages.txt"
step "done: disk.qcow2 $(du -m "$OUT/disk.qcow2" | cut -f1) MiB"
