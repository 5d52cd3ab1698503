#!/usr/bin/env bash
# Rebuild the synthesized test clips (espeak-ng + sox; byte-identical on every run).
set -euo pipefail
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
say() {  # say VOICE OUT.wav TEXT...
  local voice=$1 out=$2; shift 2
  espeak-ng -v "$voice" -s 150 -w "$tmp/raw.wav" "$*"
  sox "$tmp/raw.wav" -r 16000 -c 1 -b 16 "$out"
}
say en-us made_up_name.wav "This morning I had coffee with Zorbulon Quixtaff. Later, Zorbulon Quixtaff went home."
