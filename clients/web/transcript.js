// Committed words -> subtitle cues and .txt/.srt/.vtt text. Pure functions, no DOM, so the page
// and its tests share one definition of what a download contains.
"use strict";

const Subtitles = (() => {
  const MAX_CUE_SECONDS = 6.0;
  const MAX_CUE_CHARS = 84;
  const GAP_SECONDS = 1.2;

  /** Protocol v1: an item that is punctuation alone, without a leading space, belongs to the word before. */
  function isPunctuation(text) {
    return text.length > 0 && /^\p{P}+$/u.test(text);
  }

  /** Group words into cues: split on long pauses, sentence ends, and length limits. */
  function cues(words) {
    const out = [];
    let cur = null;
    for (const w of words) {
      const text = w.word;
      // a word's trailing mark (committed after the audio that follows it was heard) stays with its word
      const breakHere = cur && !isPunctuation(text) && (
        w.start - cur.end > GAP_SECONDS ||
        w.end - cur.start > MAX_CUE_SECONDS ||
        (cur.text + text).trim().length > MAX_CUE_CHARS ||
        /[.!?]["')\]]?$/.test(cur.text.trim()));
      if (!cur || breakHere) {
        cur = { start: w.start, end: w.end, text: "" };
        out.push(cur);
      }
      cur.text += text;
      cur.end = Math.max(cur.end, w.end);
    }
    return out.map((c) => ({ ...c, text: c.text.trim() })).filter((c) => c.text);
  }

  function stamp(seconds, sep) {
    const ms = Math.max(0, Math.round(seconds * 1000));
    const h = Math.floor(ms / 3600000), m = Math.floor(ms / 60000) % 60;
    const s = Math.floor(ms / 1000) % 60, r = ms % 1000;
    const p = (n, k) => String(n).padStart(k, "0");
    return `${p(h, 2)}:${p(m, 2)}:${p(s, 2)}${sep}${p(r, 3)}`;
  }

  function toTxt(words) {
    return cues(words).map((c) => c.text).join("\n") + "\n";
  }

  function toSrt(words) {
    return cues(words).map((c, i) =>
      `${i + 1}\n${stamp(c.start, ",")} --> ${stamp(Math.max(c.end, c.start + 0.001), ",")}\n${c.text}\n`
    ).join("\n");
  }

  function toVtt(words) {
    const body = cues(words).map((c) =>
      `${stamp(c.start, ".")} --> ${stamp(Math.max(c.end, c.start + 0.001), ".")}\n${c.text}\n`
    ).join("\n");
    return "WEBVTT\n\n" + body;
  }

  return { cues, toTxt, toSrt, toVtt, stamp, isPunctuation };
})();
