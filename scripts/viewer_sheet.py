"""Contact sheet of the browser viewer beside our renderer: ``.venv/bin/python scripts/viewer_sheet.py [-o FILE]``.

The bundled model animates a real portrait; row 1 is our renderer (``animate --yaw``) at yaw
-30, -15, 0, +15, +30 degrees, row 2 the same head in the ``animate --html`` page, drawn by
gsplat.js in headless Chromium from the same cameras (the page's orbit start moved by the yaw),
both at the model's 128² and enlarged 2x. Needs Debian's chromium and playwright.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from splat_portrait.runtime.talking_head import TalkingHeadPipeline  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PORTRAIT = REPO / ".." / "shared" / "data" / "portraits" / "happy_256.png"
YAWS = (-30, -15, 0, 15, 30)


def browser_views(page_path: Path, yaws: tuple[int, ...]) -> list[np.ndarray]:
    from playwright.sync_api import sync_playwright

    text = page_path.read_text(encoding="utf-8")
    alpha = float(re.search(r'"alpha": (-?[0-9.e-]+)', text).group(1))
    views = []
    with sync_playwright() as p, tempfile.TemporaryDirectory() as tmp:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"),
                                    args=["--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--no-sandbox"])  # fmt: skip
        for yaw in yaws:
            turned = Path(tmp) / f"yaw{yaw}.html"
            turned.write_text(text.replace(f'"alpha": {json.dumps(alpha)}', f'"alpha": {json.dumps(alpha + np.radians(yaw))}'), encoding="utf-8")
            page = browser.new_page(viewport={"width": 400, "height": 460})
            page.goto(turned.as_uri())
            page.wait_for_function("window.splatViewer && window.splatViewer.shown === 0 && window.splatViewer.drawn > 10", timeout=60000)
            page.wait_for_timeout(800)
            shot = Image.open(io.BytesIO(page.locator("canvas").screenshot())).convert("RGB").resize((128, 128), Image.BILINEAR)
            views.append(np.asarray(shot))
            page.close()
        browser.close()
    return views


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=REPO / "docs" / "figures" / "viewer_views.jpg")
    args = parser.parse_args()
    pipe = TalkingHeadPipeline.from_pretrained()
    speech = np.zeros(16000, np.float32)
    speech[::50] = 0.1  # not silence, and no mouth motion to tell the rows apart
    ours = [pipe(PORTRAIT, speech, yaw=yaw).frames[0] for yaw in YAWS]
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "head.html"
        pipe.save(PORTRAIT, speech, Path(tmp) / "head.mp4", html=page)
        theirs = browser_views(page, YAWS)
    sheet = np.concatenate([np.concatenate(ours, 1), np.concatenate(theirs, 1)], 0)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).resize((sheet.shape[1] * 2, sheet.shape[0] * 2), Image.NEAREST).save(args.output, quality=90)
    print(f"{args.output}: row 1 our renderer, row 2 the browser viewer, yaw {', '.join(map(str, YAWS))} degrees")


if __name__ == "__main__":
    main()
