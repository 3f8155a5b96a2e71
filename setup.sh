#!/usr/bin/env bash
# Set up cscfs on Debian 12 (system packages, a virtualenv, the package) and then
#   bash setup.sh demo   mount the demo share and say what to try (the default)
#   bash setup.sh test   run the test suite
set -euo pipefail
cd "$(dirname "$0")"
what=${1:-demo}
case "$what" in demo|test|install) ;; *) echo "usage: bash setup.sh [demo|test|install]" >&2; exit 2;; esac

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
# fuse3 + libfuse3-dev + pkg-config + gcc: pyfuse3; git, rsync, tar, attr: what the
# tests (and users) run inside the mount; xdg-user-dirs: the folders `cscfs redirect`
# knows; systemd: its user units (and systemd-analyze, which checks them in the tests);
# dconf-cli + dconf-service: the settings database `cscfs roam` roams.
packages="dbus fuse3 libfuse3-dev pkg-config gcc python3 python3-venv python3-dev git rsync tar attr samba nftables iproute2 xdg-user-dirs systemd dconf-cli dconf-service"
missing=""
for p in $packages; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "installing system packages:$missing"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing >/dev/null
fi

python=${PYTHON:-python3}
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "cscfs needs Python >= 3.11 ($python is older)" >&2; exit 1; }
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'

case "$what" in
    demo) exec .venv/bin/cscfs demo ;;
    test) exec .venv/bin/python -m pytest -q ;;
    install) echo "installed: $(pwd)/.venv/bin/cscfs" ;;
esac
