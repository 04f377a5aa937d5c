#!/usr/bin/env bash
# Installs Debian's headless Chromium for the report-rendering test when it is missing.
# Without root or apt, the test that needs it is skipped with a reason.
set -u
if command -v chromium >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
    || echo "warning: could not install chromium; the report rendering test will be skipped" >&2
else
  echo "warning: chromium not found and cannot be installed here; the report rendering test will be skipped" >&2
fi
exit 0
