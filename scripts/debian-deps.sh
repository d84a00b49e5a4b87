#!/usr/bin/env bash
# Installs the Debian packages that Vigil's integration tests run for real, when missing.
# The list grows with the tests that need them; keep each with the reason.
set -euo pipefail

packages=(
  tmux          # drives the real TUI in a terminal for the by-hand/screen checks
  systemd       # systemd-analyze verify checks the unit install-service writes
  chromium      # headless Chromium loads the HTML report and checks its SVG charts render
  prometheus    # a real Prometheus server scrapes an agent; promtool checks deploy/prometheus
  openssh-server  # the fleet TUI test reaches an agent through a real sshd on loopback
  openssh-client  # ... with the user's own ssh client (ssh, ssh-keygen)
  openssl       # a throwaway self-signed certificate for the https probe tests (and SMTP TLS)
  prometheus-alertmanager  # a real Alertmanager receives and resolves the notify channel's alerts
  nginx         # blue-green deploys switch traffic through a real nginx; tests run their own on
                # loopback (own prefix, pid file and logs), never the system one
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
((${#missing[@]})) || exit 0

if [ "$(id -u)" -eq 0 ]; then SUDO=(); elif sudo -n true 2>/dev/null; then SUDO=(sudo -n); else
  echo "debian-deps: missing ${missing[*]} and not root: tests needing them will be skipped" >&2
  exit 0
fi
echo "debian-deps: installing ${missing[*]}" >&2
"${SUDO[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends \
  "${missing[@]}" >/dev/null
