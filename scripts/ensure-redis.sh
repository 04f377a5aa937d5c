#!/usr/bin/env bash
# Installs Debian's redis-server for the test of near-duplicate detection with the LSH index in Redis
# (the test starts its own server on a free port of 127.0.0.1 and stops it). Without root or apt, that
# test is skipped with a reason.
set -u
if command -v redis-server >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null) \
    || echo "warning: could not install redis-server; the Redis dedupe test will be skipped" >&2
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  (sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null) \
    || echo "warning: could not install redis-server; the Redis dedupe test will be skipped" >&2
else
  echo "warning: redis-server not found and cannot be installed here; the Redis dedupe test will be skipped" >&2
fi
exit 0
