#!/bin/sh
# Install the host packages the xfleet lab needs (Debian/Ubuntu), if they are missing.
#   sudo scripts/lab-deps.sh
set -eu
PKGS="qemu-system-x86 qemu-utils mmdebstrap e2fsprogs zstd openssh-client"
missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
if [ -z "$missing" ]; then
    echo "lab-deps: all present ($PKGS)"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "lab-deps: missing packages:$missing" >&2
    echo "lab-deps: installing them needs root: run 'sudo $0'" >&2
    exit 1
fi
echo "lab-deps: installing:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update
# shellcheck disable=SC2086
apt-get install -y --no-install-recommends $missing
echo "lab-deps: done"
