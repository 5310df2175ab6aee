#!/usr/bin/env bash
# The UI tests drive Debian's Chromium through Playwright (never a browser Playwright
# downloads itself). Install it when missing and we may; otherwise say what to install.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian's chromium for the UI tests" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  exit 0
fi
echo "warning: no chromium, and no root apt-get to install it: the UI tests will be" \
     "skipped (Debian/Ubuntu: apt-get install chromium)" >&2
