#!/usr/bin/env bash
# Installs what building and testing `bert` needs beyond a Rust toolchain, where it is missing:
# OpenMPI and libclang, for the `mpi` feature (data-parallel training), and Chromium, the headless
# browser the web playground's test drives. A plain `cargo build --release` needs none of them. Debian and Ubuntu (apt-get) are handled; elsewhere the
# script says what to install and stops.
set -euo pipefail

have_mpi() { command -v mpicc >/dev/null 2>&1 && command -v mpirun >/dev/null 2>&1; }
have_libclang() {
    [ -n "${LIBCLANG_PATH:-}" ] && return 0
    local found
    for found in /usr/lib/llvm-*/lib/libclang*.so* /usr/lib/*/libclang*.so* /usr/lib64/libclang*.so*; do
        [ -e "$found" ] && return 0
    done
    return 1
}

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo is not on PATH: install a Rust toolchain first (https://rustup.rs)" >&2
    exit 1
fi

have_chromium() {
    [ -n "${CHROMIUM:-}" ] && return 0
    command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 ||
        command -v google-chrome >/dev/null 2>&1
}

if have_mpi && have_libclang && have_chromium; then
    exit 0
fi

if command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        SUDO=sudo
    fi
    echo "setup: installing OpenMPI, libclang and Chromium (apt-get)" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
        openmpi-bin libopenmpi-dev libclang-dev chromium >/dev/null
else
    echo "setup: OpenMPI (mpicc, mpirun) and libclang are needed for the mpi feature, and" \
        "Chromium for the playground's browser test; install them with your package manager" \
        "(e.g. dnf install openmpi-devel clang-devel chromium, brew install open-mpi llvm" \
        "chromium), then run this again" >&2
    exit 1
fi

have_mpi || { echo "setup: mpicc/mpirun still missing after the install" >&2; exit 1; }
have_libclang || { echo "setup: libclang still missing after the install" >&2; exit 1; }
have_chromium || { echo "setup: chromium still missing after the install" >&2; exit 1; }
