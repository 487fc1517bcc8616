#!/usr/bin/env bash
# Installs the real Keystone and Glance from PyPI into cached virtual environments.
#
#   tests/openstack/install.sh          # prints the venv directory on its last line
#
# The venvs live under $OPENSTACK_VENVS (default: ~/.cache/tower-image-cache/openstack), keyed by
# the pinned versions, so a second run only checks them. Needs Python 3.11 and a C compiler
# (uWSGI is built from source).
set -euo pipefail

KEYSTONE_VERSION=30.0.0
GLANCE_VERSION=33.0.0
PYTHON=${PYTHON:-python3.11}
root=${OPENSTACK_VENVS:-${XDG_CACHE_HOME:-$HOME/.cache}/tower-image-cache/openstack}
venv="$root/keystone-$KEYSTONE_VERSION-glance-$GLANCE_VERSION"

if ! command -v "$PYTHON" >/dev/null; then
    echo "install.sh: $PYTHON is not installed; Keystone $KEYSTONE_VERSION and Glance $GLANCE_VERSION need Python 3.11" >&2
    exit 3
fi

mkdir -p "$root"
# One install at a time: test processes started together (cargo nextest runs each test in a
# process of its own) wait here for the first one's install instead of removing it.
exec 9>"$root/.install.lock"
flock 9
if [ ! -f "$venv/.complete" ]; then
    echo "install.sh: installing Keystone $KEYSTONE_VERSION and Glance $GLANCE_VERSION into $venv" >&2
    rm -rf "$venv"
    "$PYTHON" -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
    "$venv/bin/pip" install --quiet \
        "keystone==$KEYSTONE_VERSION" "glance==$GLANCE_VERSION" uwsgi \
        python-glanceclient python-openstackclient
    touch "$venv/.complete"
fi
echo "$venv"
