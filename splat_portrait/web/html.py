"""``animate --html``: one self-contained page with the splats, every frame's offsets and the speech.

It plays from a local file with no server and no network: gsplat.js and our viewer are inlined
(base64, loaded as module blobs), the head and the frames are base64 in a JSON block, and the
speech is a WAV data URL on an ``<audio>`` element whose clock chooses the frame on screen.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from splat_portrait.web.payload import WebHead

STATIC = Path(__file__).with_name("static")
GSPLAT = STATIC / "vendor" / "gsplat" / "gsplat.es.js"
VIEWER = STATIC / "viewer.js"

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
  body {{ margin: 0; background: #18181c; color: #ddd; font: 14px system-ui, sans-serif; }}
  #stage {{ width: min(100vw, 100vh - 64px); height: min(100vw, 100vh - 64px); margin: 0 auto; }}
  #stage canvas {{ width: 100%; height: 100%; display: block; }}
  #bar {{ display: flex; gap: 12px; align-items: center; justify-content: center; height: 64px; }}
</style>
</head>
<body>
<div id="stage"><canvas id="canvas"></canvas></div>
<div id="bar">
  <audio id="audio" controls src="data:audio/wav;base64,{audio}"></audio>
  <span id="status">loading</span>
  <span>drag to orbit, right-drag to pan, wheel to zoom</span>
</div>
<script type="application/json" id="head">{payload}</script>
<script type="text/plain" id="gsplat-src">{gsplat}</script>
<script type="text/plain" id="viewer-src">{viewer}</script>
<script type="module">
const text = (id) => document.getElementById(id).textContent;
const bytes = (b64) => Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
const load = (id) => import(URL.createObjectURL(new Blob([bytes(text(id))], {{ type: "text/javascript" }})));
const status = document.getElementById("status");
if (location.protocol === "file:") {{
  // Module workers from blob: URLs do not start in a file:// page (opaque origin), and Chromium
  // reports that only asynchronously. Refusing them up front makes gsplat.js take its own
  // fallback, the same worker from a data: URL, which does start.
  const NativeWorker = window.Worker;
  window.Worker = function (url, options) {{
    if (String(url).startsWith("blob:") && options && options.type === "module") throw new Error("blob module worker");
    return new NativeWorker(url, options);
  }};
}}
try {{
  const SPLAT = await load("gsplat-src");
  const {{ HeadViewer, decodeFrame }} = await load("viewer-src");
  const payload = JSON.parse(text("head"));
  const meta = payload.meta;
  const viewer = new HeadViewer(SPLAT, document.getElementById("canvas"), meta, bytes(payload.head), Infinity);
  for (const frame of payload.frames) {{
    const {{ index, offsets }} = await decodeFrame(bytes(frame).buffer, meta.count);
    viewer.addFrame(index, offsets);
  }}
  const audio = document.getElementById("audio");
  viewer.followAudio(audio);
  window.splatViewer = viewer;
  status.textContent = `${{viewer.frames.size}} frames`;
}} catch (err) {{
  status.textContent = `error: ${{err.message}}`;
  throw err;
}}
</script>
</body>
</html>
"""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def standalone_page(title: str, meta: dict, head: WebHead, frames: list[bytes], wav: bytes) -> str:
    """The page's text: ``frames`` are :func:`~splat_portrait.web.payload.encode_frame` messages, ``wav`` the speech."""
    payload = json.dumps({"meta": meta, "head": _b64(head.data), "frames": [_b64(f) for f in frames]})
    return _PAGE.format(
        title=html.escape(title), audio=_b64(wav), payload=payload,
        gsplat=_b64(GSPLAT.read_bytes()), viewer=_b64(VIEWER.read_bytes()),
    )  # fmt: skip
