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
