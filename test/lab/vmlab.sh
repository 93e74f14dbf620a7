#!/bin/bash
# vmlab.sh: the vmd test lab for people. Run as root from anywhere in the repository.
#
#   vmlab.sh deps                 apt-get install the packages in test/lab/packages.txt
#   vmlab.sh images               build the guest images, or reuse the cached ones
#   vmlab.sh up [--no-debian12]   start a lab (netns, libvirtd, bridge, client netns, image
#                                 server) and keep it until Ctrl-C
#   vmlab.sh list                 list labs on this host: live, kept, leftover
#   vmlab.sh cleanup [--kept] [NAME...]
#                                 remove labs left by killed test runs (--kept: also labs kept
#                                 with VMD_LAB_KEEP=1); labs of running tests are never touched
#   vmlab.sh e2e [go test flags]  run the e2e tier (go test -tags e2e ./test/e2e/)
#
# Everything but deps and e2e is the Go command test/lab/cmd/vmlab, so the shell and the tests
# share one implementation. Environment: see test/e2e/README.md.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
export PATH=$PATH:/usr/local/go/bin

case "${1:-help}" in
help | -h | --help)
  sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}"
  ;;
deps)
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  # shellcheck disable=SC2046 # one package per line, no spaces
  exec apt-get install -y -q --no-install-recommends $(grep -v '^\s*$' test/lab/packages.txt)
  ;;
e2e)
  shift
  exec go test -tags e2e -count=1 -v -timeout 30m ./test/e2e/ "$@"
  ;;
*)
  exec go run ./test/lab/cmd/vmlab "$@"
  ;;
esac
