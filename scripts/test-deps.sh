#!/usr/bin/env bash
# Install the Debian packages the test suite needs, when missing. Needs root (or sudo).
set -euo pipefail
need=()
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh-keygen >/dev/null 2>&1 || need+=(openssh-client)
command -v sqlite3 >/dev/null 2>&1 || need+=(sqlite3)
command -v tmux >/dev/null 2>&1 || need+=(tmux)
command -v chromium >/dev/null 2>&1 || need+=(chromium)  # the HTML cost report test
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)  # the PostgreSQL mirror tests (tests/pgserver.py); lab compression test data (pgbench)
# Unpack a Debian package's files under a directory (no maintainer scripts run): for tools the
# suite runs whose package would otherwise start or schedule services.
unpack_deb() {  # unpack_deb PACKAGE DIR
  local tmp
  tmp=$(mktemp -d)
  if ! (cd "$tmp" && apt-get download -qq "$1" >/dev/null 2>&1); then
    apt-get update -qq && (cd "$tmp" && apt-get download -qq "$1" >/dev/null)
  fi
  mkdir -p "$2" && dpkg-deb -x "$tmp/$1"_*.deb "$2"
  rm -rf "$tmp"
}
# promtool checks and unit-tests the shipped alert rules (docs/alerts). It comes from Debian's
# `prometheus` package, unpacked into .venv/opt/prometheus only: installing the package would
# enable and start a Prometheus server on :9090 (its postinst does, under systemd).
PROMTOOL_DIR=.venv/opt/prometheus
if ! command -v promtool >/dev/null 2>&1 && [ ! -x "$PROMTOOL_DIR/usr/bin/promtool" ]; then
  unpack_deb prometheus "$PROMTOOL_DIR"
  echo "promtool unpacked into $PROMTOOL_DIR/usr/bin"
fi
# sanoid (Debian's 2.1.0, a Perl script) prunes the same snapshot history as the retention in
# tests/unit/ops/snapshots/test_sanoid_parity.py. Unpacked into .venv/opt/sanoid only: the
# package enables sanoid.timer (snapshots and pruning every 15 minutes). Its Perl modules are
# installed as packages (libraries only, no services).
SANOID_DIR=.venv/opt/sanoid
if [ ! -x "$SANOID_DIR/usr/sbin/sanoid" ]; then
  unpack_deb sanoid "$SANOID_DIR"
  echo "sanoid unpacked into $SANOID_DIR/usr/sbin"
fi
perl -MConfig::IniFiles -e1 >/dev/null 2>&1 || need+=(libconfig-inifiles-perl)
perl -MCapture::Tiny -e1 >/dev/null 2>&1 || need+=(libcapture-tiny-perl)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "error: the tests need Debian packages ${need[*]}; run as root or install them" >&2
    exit 1
  fi
fi
echo "installing ${need[*]} ..."
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
