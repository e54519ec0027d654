#!/usr/bin/env bash
# Make sure the machine has what the Python virtualenv cannot bring:
#   - python3 with venv/ensurepip (Debian splits it into python3-venv)
#   - Go and govmomi's sources, to build the vcsim test vCenter (tests/vcsim/launcher)
#   - Prometheus, which scrapes a run's --metrics-port in the integration tests
# As root on Debian/Ubuntu we install the missing packages; otherwise we say which.
set -euo pipefail

GOVMOMI_SRC=/usr/share/gocode/src/github.com/vmware/govmomi/simulator
missing=()
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
command -v go >/dev/null 2>&1 || missing+=(golang-go)
[ -d "$GOVMOMI_SRC" ] || missing+=(golang-github-vmware-govmomi-dev)
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "asyncovf: installing Debian packages: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    exit 0
fi

cat >&2 <<MSG
asyncovf: missing system packages: ${missing[*]}
  On Debian or Ubuntu, as root:  apt-get install ${missing[*]}
  (Go and govmomi's sources build the vcsim test vCenter; python3-venv makes the virtualenv;
  Prometheus scrapes a run in the metrics test.)
MSG
exit 1
