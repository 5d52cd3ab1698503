#!/bin/sh
# Rebuild dictation.wav (espeak-ng + sox, both from Debian). The sentences are separated by 1.8 s
# of silence so that wall-clock driven tests (push-to-talk release, pause-key resume) have about a
# second of slack either way; en-us at 130 wpm and these words are what tiny.en reads reliably, also from a window cut
# mid-sentence (it misreads "dictation" in such windows) and when the audio starts inside that pause. No dither (-D): the output is the same on every run.
set -eu
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
say() { espeak-ng -v en-us -s 130 -w "$tmp/raw.wav" "$2" && sox -D "$tmp/raw.wav" -r 16000 -c 1 -b 16 "$tmp/$1.wav"; }
silence() { sox -D -n -r 16000 -c 1 -b 16 "$tmp/$1.wav" trim 0 "$2"; }
say first "This is a typing test."
say newline "new line"
say second "thank you very much. period."
silence s03 0.3
silence s18 1.8
silence s05 0.5
sox -D "$tmp/s03.wav" "$tmp/first.wav" "$tmp/s18.wav" "$tmp/newline.wav" "$tmp/s03.wav" "$tmp/second.wav" \
    "$tmp/s05.wav" dictation.wav
