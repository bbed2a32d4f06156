#!/bin/sh
# Install the Debian packages listed in packages.txt (the project's one package list).
# Works as root (no sudo needed, e.g. a fresh Debian) and as a user (through sudo).
# Usage: ./setup.sh            then: make && make test
set -eu
cd "$(dirname "$0")"

# the package names: strip comments and blank lines
PACKAGES=$(sed -e 's/#.*//' packages.txt | tr -s ' \t' '\n' | sed '/^$/d' | tr '\n' ' ')
[ -n "$PACKAGES" ] || { echo "setup.sh: error: no packages in packages.txt" >&2; exit 1; }

if [ "$(id -u)" = 0 ]; then
    AS_ROOT=""
elif command -v sudo >/dev/null 2>&1; then
    AS_ROOT="sudo"
else
    echo "setup.sh: error: not root and no sudo: run it as root" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
echo "setup.sh: installing: $PACKAGES"
$AS_ROOT env DEBIAN_FRONTEND=noninteractive apt-get update -q
# shellcheck disable=SC2086  # word splitting of the list is intended
$AS_ROOT env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $PACKAGES
