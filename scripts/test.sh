#!/usr/bin/env bash
# Create (or reuse) .venv, install torch first and then alignkit with its dev extra, run the tests.
#   bash scripts/test.sh            # the whole suite
#   bash scripts/test.sh -k gae     # extra arguments go to pytest
source "$(dirname "$0")/_env.sh"
# The report test renders report.html in headless Chromium (Debian's package). Install it if absent and
# we may (root, or passwordless sudo); otherwise that one test fails and says how to install it.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo -n"; fi
    echo "installing Debian's chromium for the report test ..."
    { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium; } \
        >/tmp/alignkit-chromium-install.log 2>&1 \
        || echo "could not install chromium (see /tmp/alignkit-chromium-install.log)"
fi
exec "$VPY" -m pytest "$@"
