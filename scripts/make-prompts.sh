#!/usr/bin/env bash
# Generates the lobby's voice prompts (8 kHz, 16-bit, mono WAV) into prompts/ with espeak-ng and
# sox (Debian packages espeak-ng and sox). The WAVs are committed and built into the binary; run
# this again after changing a text. A prompt whose WAV is missing falls back to a tone pattern.
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in espeak-ng sox; do
  command -v "$tool" >/dev/null || { echo "make-prompts: $tool is required (apt-get install espeak-ng sox)" >&2; exit 1; }
done
mkdir -p prompts
say() {
  local name=$1 text=$2 tmp
  tmp=$(mktemp --suffix=.wav)
  espeak-ng -v en-us -s 150 -w "$tmp" "$text"
  sox "$tmp" -r 8000 -c 1 -b 16 "prompts/$name.wav" norm -3 pad 0.1 0.2
  rm -f "$tmp"
}
say welcome "Welcome. Please enter the conference number, followed by the pound key."
say enter-pin "Please enter the conference PIN, followed by the pound key."
say invalid-room "That conference number is not valid."
say wrong-pin "That PIN is not correct."
say joining "You are now joining the conference."
say goodbye "Goodbye."
say alone "You are currently the only participant in this conference."
say recording "This call is being recorded."
ls -l prompts/*.wav
