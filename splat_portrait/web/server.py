"""``splat-portrait serve``: a local web page where a portrait talks in 3D, in a splat viewer you can orbit.

The page (``static/index.html``) uploads a portrait and a speech file, or a portrait alone and then
streams the microphone. Routes:

* ``POST /api/jobs`` (multipart ``image`` and optional ``audio``): the portrait is cropped, posed
  and run through the generator at once, so a bad upload is answered now, with one error line
  (JSON ``{"error": ...}``, or an HTML error page for a plain form post) and status 400, or 413
  when a file is over the upload limit. Success: ``{"id", "meta"}``.
* ``GET /api/jobs/{id}/head``: the static head's bytes (:mod:`splat_portrait.web.payload`).
* ``GET /api/jobs/{id}/audio``: the uploaded speech as 16 kHz WAV, for the page's ``<audio>``.
* ``WS /api/jobs/{id}/frames``: the uploaded speech's frames, streamed as they are made.
* ``WS /api/jobs/{id}/live``: the page sends 16 kHz float32 microphone chunks, frames come back as
  soon as their audio windows are complete (:class:`~splat_portrait.runtime.streaming.LiveHead`).

Needs the ``web`` extras (FastAPI, uvicorn, websockets, python-multipart). One model serves every job, and jobs compute one at a time (the CPU has few cores); the newest
``MAX_JOBS`` portraits are kept.
"""

from __future__ import annotations

import asyncio
import html
import itertools
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import UploadFile

from splat_portrait.errors import SplatPortraitError
from splat_portrait.models import Encoded
from splat_portrait.media.audio import wav_bytes
from splat_portrait.runtime.inputs import Portrait, load_portrait, load_speech
from splat_portrait.runtime.pipeline import Animator
from splat_portrait.runtime.streaming import LiveFrame, LiveHead
from splat_portrait.web.payload import WebHead, encode_frame, viewer_head

STATIC = Path(__file__).with_name("static")
MAX_JOBS = 8
DEFAULT_MAX_UPLOAD_MB = 25.0
# Samples per push when a whole uploaded file is animated: 0.2 s, so the first frames leave early.
UPLOAD_CHUNK = 3200


@dataclass
class Job:
    portrait: Portrait
    encoded: Encoded  # the generator's output, run once per upload
    head: WebHead
    meta: dict
    speech: np.ndarray | None


class Jobs:
    """The portraits uploaded so far (newest ``MAX_JOBS``) and the model they run on."""

    def __init__(self, animator: Animator) -> None:
        self.animator = animator
        self.compute = threading.Lock()
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._ids = itertools.count(1)

    def new_head(self, job: Job) -> LiveHead:
        """A fresh stream of ``job``'s portrait (its generator output reused)."""
        return LiveHead(self.animator, job.portrait, with_offsets=True, encoded=job.encoded)

    def add(self, image: Path, audio: Path | None) -> tuple[str, Job]:
        card = self.animator.card
        portrait = load_portrait(image, card.image_size)
        speech = load_speech(audio) if audio is not None else None
        with self.compute:
            live = LiveHead(self.animator, portrait, with_offsets=True)
        frames = self.animator.num_frames(len(speech)) if speech is not None else None
        head, meta = viewer_head(live.static_splats(), portrait.c2w, card.camera_intrinsics[0], self.animator.size, card.fps, frames)
        job_id = f"{next(self._ids)}"
        self._jobs[job_id] = Job(portrait, live.encoded, head, meta, speech)
        while len(self._jobs) > MAX_JOBS:
            self._jobs.popitem(last=False)
        return job_id, self._jobs[job_id]

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)


def frames_of_upload(jobs: Jobs, job: Job) -> Iterator[bytes]:
    """Every frame of an uploaded speech file as viewer messages, made piece by piece."""
    head = jobs.new_head(job)

    def messages(frames: Iterator[LiveFrame]) -> Iterator[bytes]:
        for frame in frames:
            yield encode_frame(frame.index, frame.offsets, job.head.keep)

    for start in range(0, len(job.speech), UPLOAD_CHUNK):
        with jobs.compute:
            batch = list(messages(head.push(job.speech[start : start + UPLOAD_CHUNK])))
        yield from batch
    with jobs.compute:
        batch = list(messages(head.finish()))
    yield from batch


def error_page(message: str) -> str:
    return (
        "<!doctype html><html lang=en><meta charset=utf-8><title>splat-portrait: upload refused</title>"
        f"<body style='font:16px system-ui;margin:3em'><h1>Upload refused</h1><p id=error>{html.escape(message)}</p>"
        "<p><a href='/'>Back</a></p></body></html>"
    )


def create_app(animator: Animator, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB) -> FastAPI:
    """The FastAPI application serving ``animator``'s model."""
    jobs = Jobs(animator)
    limit = int(max_upload_mb * 1024 * 1024)
    app = FastAPI(title="splat-portrait", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    def refuse(request: Request, message: str, status: int = 400) -> Response:
        if "text/html" in request.headers.get("accept", "") and "application/json" not in request.headers.get("accept", ""):
            return HTMLResponse(error_page(message), status_code=status)
        return JSONResponse({"error": message}, status_code=status)

    @app.get("/")
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.post("/api/jobs")
    async def create_job(request: Request) -> Response:
        declared = int(request.headers.get("content-length") or 0)
        if declared > 2 * limit + 65536:
            return refuse(request, f"the upload is {declared / 2**20:.1f} MB; each file may be at most {max_upload_mb:g} MB", 413)
        form = await request.form(max_files=2, max_fields=4)
        image, audio = form.get("image"), form.get("audio")
        if not isinstance(image, UploadFile) or not image.filename:
            return refuse(request, "no portrait in the upload; choose an image file (PNG, JPEG, WebP, ...)")
        files: dict[str, UploadFile] = {"image": image}
        if isinstance(audio, UploadFile) and audio.filename:
            files["audio"] = audio
        with tempfile.TemporaryDirectory() as tmp:
            paths = {}
            for field, upload in files.items():
                data = await upload.read(limit + 1)
                if len(data) > limit:
                    return refuse(request, f"{upload.filename} is over the {max_upload_mb:g} MB upload limit", 413)
                if not data:
                    return refuse(request, f"{upload.filename} is empty")
                paths[field] = Path(tmp) / f"{field}{Path(upload.filename).suffix[:16]}"
                paths[field].write_bytes(data)
            try:
                job_id, job = await asyncio.to_thread(jobs.add, paths["image"], paths.get("audio"))
            except SplatPortraitError as err:
                # The message names our temporary file: name the user's.
                message = str(err)
                for field, upload in files.items():
                    message = message.replace(str(paths[field]), upload.filename)
                return refuse(request, message)
        return JSONResponse({"id": job_id, "meta": job.meta})

    def job_or_404(job_id: str) -> Job | Response:
        job = jobs.get(job_id)
        return job if job is not None else JSONResponse({"error": f"no job {job_id}"}, status_code=404)

    @app.get("/api/jobs/{job_id}/head")
    def head(job_id: str) -> Response:
        job = job_or_404(job_id)
        return job if isinstance(job, Response) else Response(job.head.data, media_type="application/octet-stream")

    @app.get("/api/jobs/{job_id}/audio")
    def audio(job_id: str) -> Response:
        job = job_or_404(job_id)
        if isinstance(job, Response):
            return job
        if job.speech is None:
            return JSONResponse({"error": f"job {job_id} has no uploaded speech"}, status_code=404)
        return Response(wav_bytes(job.speech, animator.card.sample_rate), media_type="audio/wav")

    @app.websocket("/api/jobs/{job_id}/frames")
    async def frames(socket: WebSocket, job_id: str) -> None:
        await socket.accept()
        job = jobs.get(job_id)
        if job is None or job.speech is None:
            await socket.close(code=4404, reason="no such job with speech")
            return
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        stop = threading.Event()

        def produce() -> None:
            try:
                for message in frames_of_upload(jobs, job):
                    if stop.is_set():
                        return
                    loop.call_soon_threadsafe(queue.put_nowait, message)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, None)

        worker = threading.Thread(target=produce, daemon=True)
        worker.start()
        try:
            while (message := await queue.get()) is not None:
                await socket.send_bytes(message)
            await socket.close()
        except WebSocketDisconnect:
            pass
        finally:
            stop.set()

    @app.websocket("/api/jobs/{job_id}/live")
    async def live(socket: WebSocket, job_id: str) -> None:
        await socket.accept()
        job = jobs.get(job_id)
        if job is None:
            await socket.close(code=4404, reason="no such job")
            return
        head = jobs.new_head(job)

        def push(samples: np.ndarray) -> list[bytes]:
            with jobs.compute:
                return [encode_frame(f.index, f.offsets, job.head.keep) for f in head.push(samples)]

        try:
            while True:
                data = await socket.receive_bytes()
                samples = np.frombuffer(data[: len(data) // 4 * 4], "<f4").astype(np.float32)
                for message in await asyncio.to_thread(push, samples):
                    await socket.send_bytes(message)
        except WebSocketDisconnect:
            pass

    return app


def serve(animator: Animator, host: str = "127.0.0.1", port: int = 8000, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB) -> None:
    """Run the page's server until interrupted."""
    import uvicorn

    uvicorn.run(create_app(animator, max_upload_mb), host=host, port=port, log_level="warning")
