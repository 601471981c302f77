"""The real talking-head corpus: gather its videos, check them, preprocess them, list their sources.

``data/corpus.json`` lists every clip: where it comes from (repository, commit, path inside it, and
the member inside a zip file where the video ships zipped), its licence, SHA-256, duration and who
speaks in it. Videos never go into this repository; this script brings them from their sources:

    .venv/bin/python scripts/corpus.py gather -o ~/corpus/videos                 # git clone from GitHub
    .venv/bin/python scripts/corpus.py gather -o ~/corpus/videos --mirrors DIR   # or bare clones: DIR/owner+name[/repo]
    .venv/bin/python scripts/corpus.py preprocess ~/corpus/videos -o runs/corpus --size 128
    .venv/bin/python scripts/corpus.py sources                                   # rewrite data/SOURCES.md

``gather`` checks every file against its SHA-256 (a changed upstream file is refused, not used).
``preprocess`` runs ``splat-portrait preprocess`` with the listing's identities and test fraction,
so the split is by identity: no face of the test split is trained on.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LISTING = ROOT / "data" / "corpus.json"
SOURCES = ROOT / "data" / "SOURCES.md"
FORMAT = "splat-portrait/corpus"


@dataclass(frozen=True)
class Clip:
    name: str  # the file name the clip gets (its clip id is the stem)
    repo: str
    commit: str
    path: str
    member: str | None  # the video's path inside the zip file ``path``, if zipped
    licence: str
    sha256: str
    duration_s: float
    identity: str
    # Where the footage itself comes from, when the repository says (e.g. a public dataset).
    note: str = ""


def read_listing(path: Path = LISTING) -> tuple[dict, list[Clip]]:
    data = json.loads(path.read_text())
    if data.get("format") != FORMAT:
        sys.exit(f"{path} is not a {FORMAT} listing")
    clips = [Clip(**{**{"member": None}, **c}) for c in data["clips"]]
    names = [c.name for c in clips]
    if len(set(names)) != len(names):
        sys.exit(f"{path} names a clip twice")
    return data, clips


def _git_dir(mirrors: Path, repo: str) -> Path:
    """The git directory of ``repo``'s mirror: DIR/owner+name[/repo], bare or with a work tree (its .git)."""
    base = mirrors / repo.replace("/", "+")
    base = base / "repo" if (base / "repo").is_dir() else base
    return base / ".git" if (base / ".git").is_dir() else base


def _blob(repo: str, commit: str, path: str, mirrors: Path | None, clones: Path) -> bytes:
    """The bytes of ``path`` at ``commit``: from a local bare clone, or a blob-less clone from GitHub."""
    if mirrors is not None:
        git_dir = _git_dir(mirrors, repo)
    else:
        git_dir = clones / repo.replace("/", "+")
        if not git_dir.exists():
            url = f"https://github.com/{repo}.git"
            subprocess.run(["git", "clone", "--bare", "--filter=blob:none", url, str(git_dir)], check=True)
    result = subprocess.run(["git", f"--git-dir={git_dir}", "show", f"{commit}:{path}"], capture_output=True)
    if result.returncode != 0:
        raise RuntimeError(f"{repo}@{commit[:10]}:{path}: {result.stderr.decode(errors='replace').strip()}")
    return result.stdout


def clip_bytes(clip: Clip, mirrors: Path | None, clones: Path) -> bytes:
    data = _blob(clip.repo, clip.commit, clip.path, mirrors, clones)
    if clip.member is not None:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            data = archive.read(clip.member)
    return data


def gather(args: argparse.Namespace) -> None:
    _, clips = read_listing(args.listing)
    args.output.mkdir(parents=True, exist_ok=True)
    bad = 0
    with tempfile.TemporaryDirectory() as clones:
        for clip in clips:
            target = args.output / clip.name
            if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == clip.sha256:
                continue
            try:
                data = clip_bytes(clip, args.mirrors, Path(clones))
            except (RuntimeError, subprocess.CalledProcessError, KeyError, zipfile.BadZipFile) as err:
                print(f"missing {clip.name}: {err}", file=sys.stderr)
                bad += 1
                continue
            if hashlib.sha256(data).hexdigest() != clip.sha256:
                print(f"refused {clip.name}: {clip.repo}:{clip.path} no longer has the listed content (SHA-256 differs)", file=sys.stderr)
                bad += 1
                continue
            partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            partial.write_bytes(data)
            partial.replace(target)
    print(f"{len(clips) - bad} of {len(clips)} clips in {args.output}")
    if bad:
        sys.exit(1)


def preprocess(args: argparse.Namespace) -> None:
    listing, clips = read_listing(args.listing)
    missing = [c.name for c in clips if not (args.videos / c.name).is_file()]
    if missing:
        sys.exit(f"{len(missing)} listed clips are not in {args.videos} (e.g. {missing[0]}); run `corpus.py gather` first")
    args.output.mkdir(parents=True, exist_ok=True)
    identities = args.output / "identities.json"
    identities.write_text(json.dumps({c.name: c.identity for c in clips}, indent=1) + "\n")
    command = [
        str(Path(sys.executable).with_name("splat-portrait")), "preprocess", *(str(args.videos / c.name) for c in clips),
        "-o", str(args.output), "--size", str(args.size), "--identities", str(identities),
        "--test-fraction", str(listing["test_fraction"]), "--workers", str(args.workers), "--audio-norm", args.audio_norm,
    ]  # fmt: skip
    sys.exit(subprocess.run(command).returncode)


def sources_markdown(listing: dict, clips: list[Clip]) -> str:
    """data/SOURCES.md: every clip's origin, licence and length, and the totals."""
    minutes = sum(c.duration_s for c in clips) / 60
    lines = [
        "# Sources of the real talking-head corpus",
        "",
        "Generated from `data/corpus.json` by `scripts/corpus.py sources`; do not edit by hand.",
        "The videos are not in this repository: `scripts/corpus.py gather` brings each from the commit below",
        "and checks its SHA-256. All come from public example folders of talking-head projects whose",
        "repository licence is listed; clips of one person share an identity (and a split).",
        "",
        f"{len(clips)} clips, {len({c.identity for c in clips})} identities, {minutes:.1f} minutes;"
        f" split by identity with test fraction {listing['test_fraction']}.",
        "",
        "Reserved for evaluation and never listed here: " + listing.get("reserved_note", ""),
        "",
        "| clip | identity | seconds | repository | commit | path | licence | footage |",
        "| --- | --- | ---: | --- | --- | --- | --- | --- |",
    ]
    for c in sorted(clips, key=lambda c: (c.repo, c.path, c.member or "")):
        where = f"`{c.path}`" + (f" → `{c.member}`" if c.member else "")
        lines.append(f"| {c.name} | {c.identity} | {c.duration_s:.1f} | {c.repo} | `{c.commit[:10]}` | {where} | {c.licence} | {c.note} |")
    licences: dict[str, set[str]] = {}
    for c in clips:
        licences.setdefault(c.licence, set()).add(c.repo)
    lines += ["", "## Licences", ""]
    lines += [f"- {name}: {', '.join(sorted(repos))}" for name, repos in sorted(licences.items())]
    return "\n".join(lines) + "\n"


def sources(args: argparse.Namespace) -> None:
    listing, clips = read_listing(args.listing)
    text = sources_markdown(listing, clips)
    if args.check:
        if not SOURCES.is_file() or SOURCES.read_text() != text:
            sys.exit(f"{SOURCES} is out of date; run: python scripts/corpus.py sources")
        return
    SOURCES.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listing", type=Path, default=LISTING, help="The corpus listing (default: data/corpus.json).")
    commands = parser.add_subparsers(dest="command", required=True)
    g = commands.add_parser("gather", help="Bring the listed videos into a folder (checked by SHA-256).")
    g.add_argument("-o", "--output", type=Path, required=True)
    g.add_argument("--mirrors", type=Path, help="Folder of bare clones named owner+name (default: clone from GitHub).")
    g.set_defaults(run=gather)
    p = commands.add_parser("preprocess", help="Preprocess the gathered videos, split by identity.")
    p.add_argument("videos", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--audio-norm", default="utterance-gated", help="Audio feature normalisation (none, utterance: for models trained with those).")
    p.set_defaults(run=preprocess)
    s = commands.add_parser("sources", help="Rewrite data/SOURCES.md from data/corpus.json.")
    s.add_argument("--check", action="store_true", help="Only check that it is up to date.")
    s.set_defaults(run=sources)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
