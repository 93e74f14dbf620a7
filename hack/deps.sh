#!/usr/bin/env bash
# Installs what building and testing vmd needs on Debian 12 (run as root).
# Idempotent: packages already present are skipped by apt; Go modules are
# downloaded into the module cache.
#
#   hack/deps.sh           what `make check` (CI) needs
#   hack/deps.sh --bench   also the baselines of the boot benchmark (make bench-boot):
#                          virt-install (package virtinst); CI never installs it
set -euo pipefail
cd "$(dirname "$0")/.."

bench=false
for arg in "$@"; do
  case "$arg" in
  --bench) bench=true ;;
  *)
    echo "usage: hack/deps.sh [--bench]" >&2
    exit 2
    ;;
  esac
done

export PATH=/usr/local/go/bin:$PATH
packages=(build-essential pkg-config libvirt-dev git ca-certificates xz-utils qemu-utils
  # test-only: ISO tools and the YAML parser cloud-init itself uses
  xorriso genisoimage python3 python3-yaml
  # virt-xml-validate (libvirt-clients) runs xmllint for the golden-XML schema check
  libxml2-utils)
if $bench; then
  packages+=(virtinst)
fi
if [[ -f test/lab/packages.txt ]]; then
  mapfile -t lab < <(grep -vE '^\s*(#|$)' test/lab/packages.txt)
  packages+=("${lab[@]}")
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "deps: missing packages ${missing[*]}; run as root" >&2
    exit 1
  fi
  echo "deps: installing ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
command -v go >/dev/null || { echo "deps: Go not found (expected at /usr/local/go)" >&2; exit 1; }
go mod download
echo "deps: ok ($(go version))"
