#!/usr/bin/env bash
# The OS packages `make test` drives for real, installed from Debian's
# packages when missing (as root, or through sudo):
#   redis-server    every test starts its own on a free loopback port
#   chromium        the dashboard test renders the page headless
#   docker-compose  the compose file's config check (no engine needed)
#   promtool        checks the example Prometheus alert rules (package: prometheus)
# Used by `make test` (all of them) and `make bench` (redis-server only), so a
# fresh machine needs only Python and the OS package manager. Each name is
# the command looked for, and the Debian package that provides it unless
# given as command:package.
set -euo pipefail

wanted=("$@")
[ ${#wanted[@]} -gt 0 ] || wanted=(redis-server chromium docker-compose promtool:prometheus)
missing=()
for name in "${wanted[@]}"; do
  command -v "${name%%:*}" >/dev/null 2>&1 || missing+=("${name#*:}")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing Debian's ${missing[*]} for the tests"
as_root=()
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null 2>&1 || {
    echo "error: ${missing[*]} missing and not root (no sudo): apt-get install ${missing[*]}" >&2
    exit 1
  }
  as_root=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" apt-get install -y -qq "${missing[@]}"
