#!/usr/bin/env bash
# Installs Debian's headless Chromium for the report-rendering and review-app browser tests when it is missing
# (Playwright, from the dev extra, drives it through executable_path: no browser is downloaded).
# Without root or apt, the test that needs it is skipped with a reason.
set -u
if command -v chromium >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
    || echo "warning: could not install chromium; the browser tests (report rendering, review app) will be skipped" >&2
else
  echo "warning: chromium not found and cannot be installed here; the browser tests (report rendering, review app) will be skipped" >&2
fi
exit 0
