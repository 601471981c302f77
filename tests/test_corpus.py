"""scripts/corpus.py: the corpus listing, gathering videos from git by SHA-256, and data/SOURCES.md."""

import hashlib
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "corpus.py"
sys.path.insert(0, str(ROOT / "scripts"))

import corpus  # noqa: E402

# The files issue 14 reserves for evaluation: never in the training corpus.
RESERVED = {
    ("OpenTalker/SadTalker", f"examples/source_image/{name}.png") for name in ("sad", "art_18", "full3")
} | {("OpenTalker/SadTalker", f"examples/driven_audio/{name}.wav") for name in ("japanese", "RD_Radio34_002")} | {
    ("OpenTalker/video-retalking", "examples/face/5.mp4")
}


def git(*args, cwd):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def mirror(tmp_path):
    """A bare clone ``owner+name/repo`` holding a plain video file and one inside a zip, and a listing of both."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "a.mp4").write_bytes(b"plain video bytes")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("inside/b.mp4", b"zipped video bytes")
    (work / "clips.zip").write_bytes(buffer.getvalue())
    git("init", "-q", cwd=work)
    git("add", ".", cwd=work)
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "clips", cwd=work)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=work, capture_output=True, text=True, check=True).stdout.strip()
    mirrors = tmp_path / "mirrors"
    (mirrors / "someone+talking").mkdir(parents=True)
    git("clone", "-q", "--bare", str(work), str(mirrors / "someone+talking" / "repo"), cwd=tmp_path)

    def clip(name, path, member, content, identity):
        return {"name": name, "repo": "someone/talking", "commit": commit, "path": path, "member": member, "licence": "MIT",
                "sha256": hashlib.sha256(content).hexdigest(), "duration_s": 4.0, "identity": identity}  # fmt: skip

    listing = {"format": corpus.FORMAT, "version": 1, "test_fraction": 0.5, "reserved_note": "none here.", "clips": [
        clip("talking-a.mp4", "a.mp4", None, b"plain video bytes", "ann"),
        clip("talking-b.mp4", "clips.zip", "inside/b.mp4", b"zipped video bytes", "bob"),
    ]}  # fmt: skip
    path = tmp_path / "corpus.json"
    path.write_text(json.dumps(listing))
    return path, mirrors, listing


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True)


def test_gather_brings_plain_and_zipped_files_and_refuses_changed_content(mirror, tmp_path):
    listing_path, mirrors, listing = mirror
    out = tmp_path / "videos"
    result = run("--listing", listing_path, "gather", "-o", out, "--mirrors", mirrors)
    assert result.returncode == 0, result.stderr
    assert (out / "talking-a.mp4").read_bytes() == b"plain video bytes"
    assert (out / "talking-b.mp4").read_bytes() == b"zipped video bytes"
    assert sorted(p.name for p in out.iterdir()) == ["talking-a.mp4", "talking-b.mp4"]  # no temporaries left
    listing["clips"][0]["sha256"] = "0" * 64
    listing_path.write_text(json.dumps(listing))
    (out / "talking-a.mp4").unlink()
    result = run("--listing", listing_path, "gather", "-o", out, "--mirrors", mirrors)
    assert result.returncode == 1
    assert "refused talking-a.mp4: someone/talking:a.mp4 no longer has the listed content (SHA-256 differs)" in result.stderr
    assert not (out / "talking-a.mp4").exists()


def test_sources_markdown_lists_every_clip_and_the_totals(mirror):
    _, _, listing = mirror
    clips = [corpus.Clip(**c) for c in listing["clips"]]
    text = corpus.sources_markdown(listing, clips)
    assert "2 clips, 2 identities, 0.1 minutes; split by identity with test fraction 0.5." in text
    assert "| talking-b.mp4 | bob | 4.0 | someone/talking |" in text and "`clips.zip` → `inside/b.mp4`" in text
    assert "- MIT: someone/talking" in text


def test_the_committed_listing_is_sound_and_its_sources_page_current():
    listing, clips = corpus.read_listing()
    assert len({c.identity for c in clips}) >= 20
    assert not {(c.repo, c.path) for c in clips} & RESERVED
    assert len({c.sha256 for c in clips}) == len(clips)
    assert all(c.licence in {"MIT", "Apache-2.0", "CC-BY-4.0", "BSD-3-Clause", "BSD-2-Clause", "CC0-1.0"} for c in clips)
    result = run("sources", "--check")
    assert result.returncode == 0, result.stderr
