# shellcheck shell=bash
# Sourced by scripts/run, scripts/test and scripts/bench: installs what a fresh Debian
# (or Ubuntu) machine with only rustup lacks. Each check is cheap when the tool is there.

# Run a command as root: directly when we are root, through sudo otherwise.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    echo "error: need root to run '$*' (install sudo, or run as root)" >&2
    return 1
  fi
}

APT_UPDATED=0

# apt_need COMMAND PACKAGE [COMMAND PACKAGE ...]: install PACKAGE when COMMAND is missing.
apt_need() {
  local missing=()
  while [ $# -ge 2 ]; do
    command -v "$1" >/dev/null 2>&1 || missing+=("$2")
    shift 2
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  apt_install "${missing[@]}"
}

# apt_install PACKAGE...: install Debian packages (updating the package lists once).
apt_install() {
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: need $* and there is no apt-get to install them; install them and rerun" >&2
    return 1
  fi
  echo "==> installing $*" >&2
  if [ "$APT_UPDATED" -eq 0 ]; then
    as_root apt-get update -qq
    APT_UPDATED=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# no_service_starts COMMAND...: run COMMAND (a package install) with Debian's
# policy-rc.d refusing to start services, then restore the previous policy.
no_service_starts() {
  local policy=/usr/sbin/policy-rc.d saved=""
  if [ -e "$policy" ]; then
    saved=$(mktemp)
    as_root cp -p "$policy" "$saved"
  fi
  printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
  as_root chmod 755 "$policy"
  local rc=0
  "$@" || rc=$?
  if [ -n "$saved" ]; then
    as_root cp -p "$saved" "$policy"
    rm -f "$saved"
  else
    as_root rm -f "$policy"
  fi
  return "$rc"
}

# What building the gateway needs: cargo, a C toolchain and cmake (Pingora builds zlib-ng).
need_build_tools() {
  if ! command -v cargo >/dev/null 2>&1; then
    [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
  fi
  command -v cargo >/dev/null 2>&1 || {
    echo "error: cargo not found: install Rust with rustup (https://rustup.rs)" >&2
    return 1
  }
  apt_need cc build-essential make build-essential cmake cmake
}

# cargo_tool COMMAND CRATE VERSION ROOT [ARGS...]: print the path of COMMAND from CRATE
# at exactly VERSION, installed under ROOT/bin with `cargo install --locked` (and ARGS,
# e.g. --no-default-features) when it is missing there or reports another version.
cargo_tool() {
  local cmd=$1 crate=$2 version=$3 root=$4
  shift 4
  local bin="$root/bin/$cmd"
  if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -qw -- "$version"; then
    echo "$bin"
    return 0
  fi
  need_build_tools
  echo "==> installing $crate $version into $root (cargo install --locked)" >&2
  cargo install --quiet --locked --force --root "$root" --version "=$version" "$@" "$crate" >&2 || {
    echo "error: cargo install $crate $version failed" >&2
    return 1
  }
  echo "$bin"
}
