#!/usr/bin/env bash
# Installs the Debian packages Kiln needs to build, test and benchmark, when they are missing.
# Idempotent and quiet when everything is there; needs root (or sudo) only when something is missing.
set -euo pipefail

# ocl-icd-opencl-dev: Debian's oneDNN is built with an OpenCL GPU runtime, so its CMake config
# requires OpenCL's headers and loader even though Kiln never uses them.
packages=(cmake g++ make libdnnl-dev ocl-icd-opencl-dev libgtest-dev libgmock-dev libbenchmark-dev
          zlib1g-dev nlohmann-json3-dev libgloo-dev dataset-fashion-mnist fortunes python3-venv)
[ "${1:-}" = "--with-clang" ] && packages+=(clang libclang-rt-14-dev)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "kiln: installing missing Debian packages: ${missing[*]}"
sudo_cmd=()
[ "$(id -u)" -ne 0 ] && sudo_cmd=(sudo)
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
