#!/usr/bin/env bash
# Make `redis-server` available for the Redis online-store tests (Debian package).
# Tests start their own server on 127.0.0.1 with a free port and stop it by pid; they skip with a
# reason when redis-server is missing. Installs only as root with apt-get; never fails the build.
set -u
if command -v redis-server >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing redis-server (Debian package) for the Redis online-store tests" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null) \
    || echo "warning: could not install redis-server; Redis tests will be skipped" >&2
  # The package starts a system service on :6379; the tests use their own server, so stop it.
  (command -v service >/dev/null 2>&1 && service redis-server stop >/dev/null 2>&1) || true
else
  echo "note: redis-server not found and not root: Redis tests will be skipped (apt-get install redis-server)" >&2
fi
exit 0
