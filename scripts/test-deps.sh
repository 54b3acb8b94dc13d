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
# promtool checks and unit-tests the shipped alert rules (docs/alerts). It comes from Debian's
# `prometheus` package, unpacked into .venv/opt/prometheus only: installing the package would
# enable and start a Prometheus server on :9090 (its postinst does, under systemd).
PROMTOOL_DIR=.venv/opt/prometheus
if ! command -v promtool >/dev/null 2>&1 && [ ! -x "$PROMTOOL_DIR/usr/bin/promtool" ]; then
  tmp=$(mktemp -d)
  if ! (cd "$tmp" && apt-get download -qq prometheus >/dev/null 2>&1); then
    apt-get update -qq && (cd "$tmp" && apt-get download -qq prometheus >/dev/null)
  fi
  mkdir -p "$PROMTOOL_DIR" && dpkg-deb -x "$tmp"/prometheus_*.deb "$PROMTOOL_DIR"
  rm -rf "$tmp"
  echo "promtool unpacked into $PROMTOOL_DIR/usr/bin"
fi
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
