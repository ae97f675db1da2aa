#!/usr/bin/env bash
# Create or reuse the venv at .venv and install segarena with the versions verified together.
# Idempotent: a stamp of pyproject.toml + constraints.txt skips pip when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.segarena-installed
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)

if [[ ! -x $VENV/bin/python ]]; then
  echo "segarena: creating $VENV"
  "$PY" -m venv "$VENV"
fi
if [[ -f $STAMP && $(cat "$STAMP") == "$want" ]]; then
  echo "segarena: $VENV is up to date"
else
  start=$(date +%s)
  pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }
  # torch first, pinned: its CPU wheel is on this machine's disk; unpinned, pip pulls a multi-GB CUDA build.
  pip install torch==2.13.0
  pip install -c constraints.txt -e ".[test]"
  # DSB2018 nuclei ship inside the stardist wheel; we read its files, never import it (it needs TensorFlow).
  pip install --no-deps stardist==0.9.2
  echo "$want" > "$STAMP"
  echo "segarena: installed in $(( $(date +%s) - start ))s"
fi
# Colin27 (Debian's mricron-data) is optional: installed when apt is usable as root, else its plugin says how.
if [[ ! -d /usr/share/mricron/templates && ${SEGARENA_SKIP_APT:-0} != 1 && $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
  echo "segarena: installing Debian package mricron-data (Colin27 head scan)"
  (apt-get install -y -qq mricron-data >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq mricron-data >/dev/null 2>&1; }) \
    || echo "segarena: could not install mricron-data; the colin27-brain dataset stays unavailable"
fi
# Chromium + its driver (same Debian version) for the report's browser test and `segarena report --png`:
# optional like Colin27; without them the browser test skips (fails under CI=true) and PNGs use matplotlib.
if [[ ( ! -x /usr/bin/chromium || ! -x /usr/bin/chromedriver ) && ${SEGARENA_SKIP_APT:-0} != 1 && $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
  echo "segarena: installing Debian packages chromium chromium-driver (report browser test, PNG export)"
  (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1; }) \
    || echo "segarena: could not install chromium; the report's browser test cannot run here"
fi
