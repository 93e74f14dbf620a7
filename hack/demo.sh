#!/usr/bin/env bash
# The main job, for a first look: start vmd with its embedded default
# configuration (state in /var/lib/vmd, socket /run/vmd/vmd.sock), apply
# examples/vm.yaml and show what vmd made of it.
#   hack/demo.sh        start (or reuse) vmd and apply the example
#   hack/demo.sh stop   stop the vmd this script started
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$PWD/bin
PIDFILE=/run/vmd/demo.pid
LOG=/var/log/vmd-demo.log
SOCK=/run/vmd/vmd.sock

if [[ ${1:-} == stop ]]; then
  if [[ -f $PIDFILE ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    kill -TERM "$(cat "$PIDFILE")" && echo "stopped vmd (pid $(cat "$PIDFILE"))"
  fi
  rm -f "$PIDFILE"
  exit 0
fi
[[ $(id -u) -eq 0 ]] || { echo "demo: run as root (vmd manages host resources)" >&2; exit 1; }

mkdir -p /run/vmd
# vmd drives the system libvirtd. With systemd it is socket-activated; on
# hosts without systemd (containers, CI) start virtlogd and libvirtd here.
if ! virsh -c qemu:///system version >/dev/null 2>&1; then
  if [[ ! -d /run/systemd/system ]]; then
    pgrep -x virtlogd >/dev/null || virtlogd -d
    pgrep -x libvirtd >/dev/null || libvirtd -d
    echo "demo: started virtlogd and libvirtd (no systemd)"
  else
    systemctl start libvirtd.socket || true
  fi
fi
# /dev/kvm missing means no hardware virtualisation: fall back to TCG.
if [[ ! -e /dev/kvm && -z ${VMD_DOMAIN_TYPE:-} ]]; then
  export VMD_DOMAIN_TYPE=qemu
  echo "demo: /dev/kvm not present, using domain type qemu (TCG)"
fi
if [[ -f $PIDFILE ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
  echo "demo: vmd already running (pid $(cat "$PIDFILE"))"
else
  # No flags and no config file: the embedded default configuration.
  # On hosts without usable KVM (nested CI runners) set VMD_DOMAIN_TYPE=qemu.
  nohup "$BIN/vmd" >>"$LOG" 2>&1 &
  echo $! >"$PIDFILE"
  echo "demo: started vmd (pid $!, log $LOG)"
fi
for _ in $(seq 100); do
  "$BIN/vmctl" version >/dev/null 2>&1 && break
  sleep 0.1
done
"$BIN/vmctl" version
echo
"$BIN/vmctl" apply -f examples/vm.yaml
sleep 1
echo
"$BIN/vmctl" get vmi,vmd
echo
echo "demo: the system disk downloads debian-12 from cloud.debian.org, then the VM boots."
echo "demo: watch with 'bin/vmctl get vmi,vmd -w'; 'bin/vmctl describe vmi web' explains each"
echo "demo: status; 'bin/vmctl events' shows what happened; 'make demo-stop' stops vmd."
