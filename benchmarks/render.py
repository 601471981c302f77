"""Renderer speed and memory: ``.venv/bin/python benchmarks/render.py``.

The scene is what the portrait model produces: one splat per pixel of a 256x256 source image
(65,536 splats), about one pixel across, on a head-like surface about 2.7 units from the default
camera, with random anisotropic scales, rotations, opacities and colours. It is rendered from the
source camera at the source resolution by every backend this machine can run; times are medians
of several runs after a warm-up, wall clock, with torch's default thread count.

Peak memory is how far the process's peak resident set rises above its size just before the
first render of a case, warm-up included (Linux resets the peak through /proc/self/clear_refs;
elsewhere it is the growth of ru_maxrss, which under-reports after an earlier, bigger case), plus
``torch.cuda.max_memory_allocated`` on CUDA.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from splat_portrait import camera  # noqa: E402
from splat_portrait.environment import run_record  # noqa: E402
from splat_portrait.render import gsplat_status, render  # noqa: E402
from splat_portrait.render.cpu_backend import cpu_status  # noqa: E402
from splat_portrait.splats import Splats  # noqa: E402

# CPU, 256x256 (issue 16: headroom for live streaming on 2 cores).
TARGETS = {"forward_s": 0.04, "forward_backward_s": 0.12, "peak_mb": 2048}


def portrait_scene(resolution: int = 256, seed: int = 0) -> Splats:
    """One splat per source pixel on a bumpy head-like surface in front of the default camera."""
    g = torch.Generator().manual_seed(seed)
    n = resolution * resolution
    rays = camera.pixel_rays(camera.default_intrinsics((1,)), resolution, resolution)[0].reshape(n, 3)
    # Rays in units of the half field of view: the head fills the central 80% of the image.
    r2 = (rays[:, :2] * 2 * camera.DEFAULT_FOCAL).square().sum(-1) / 0.8**2
    depth = camera.DEFAULT_RADIUS - 0.3 * torch.sqrt((1 - r2).clamp_min(0)) + 0.01 * torch.randn(n, generator=g)
    view_points = rays * depth[:, None]
    c2w = camera.default_c2w()
    means = camera.transform_points(c2w, view_points)
    footprint = depth / (camera.DEFAULT_FOCAL * resolution)  # world size of one pixel at that depth
    return Splats(
        means=means[None],
        quats=torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1)[None],
        scales=(footprint[:, None] * torch.exp(0.35 * torch.randn(n, 3, generator=g)))[None],
        opacities=torch.sigmoid(torch.randn(n, generator=g) + 1.5)[None],
        colors=torch.rand(n, 3, generator=g)[None],
    )


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


class PeakMemory:
    """Peak growth of resident memory (MB) while the block runs."""

    def __enter__(self):
        self.proc = _reset_peak_rss()
        self.start = _rss_mb("VmRSS") if self.proc else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return self

    def __exit__(self, *exc):
        end = _rss_mb("VmHWM") if self.proc else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        self.mb = max(0.0, end - self.start)


def _median_time(fn, repeats: int, device: torch.device) -> float:
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench(backend: str, device: torch.device, resolution: int, repeats: int) -> dict:
    splats = portrait_scene(resolution).to(device)
    viewmats = camera.world_to_view(camera.default_c2w((1,))).to(device)
    Ks = camera.intrinsics_to_K(camera.default_intrinsics((1,)), resolution, resolution).to(device)
    attributes = (splats.means, splats.quats, splats.scales, splats.opacities, splats.colors)
    params = [t.clone().requires_grad_() for t in attributes]

    def forward():
        with torch.no_grad():
            render(splats, viewmats, Ks, resolution, resolution, backend=backend)

    def forward_backward():
        out = render(Splats(*params), viewmats, Ks, resolution, resolution, backend=backend)
        (out.rgb.sum() + out.alpha.sum() + out.depth.mean()).backward()
        for p in params:
            p.grad = None

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    # Measured from before the warm-up: memory the allocator keeps after it is still render memory.
    with PeakMemory() as mem:
        for _ in range(2):  # warm-up: allocator, kernels, lazy initialisation
            forward()
            forward_backward()
        t_fwd = _median_time(forward, repeats, device)
        t_fb = _median_time(forward_backward, repeats, device)
    cuda_mb = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    return {
        "backend": backend,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{torch.get_num_threads()}",
        "resolution": f"{resolution}x{resolution}",
        "splats": splats.num_splats,
        "forward_s": t_fwd,
        "forward_backward_s": t_fb,
        "peak_mb": mem.mb,
        "cuda_mb": cuda_mb,
    }


def print_table(rows: list[dict]) -> None:
    headers = ["backend", "device", "resolution", "splats", "forward s", "fwd+bwd s", "peak RSS MB", "CUDA MB"]
    cells = [
        [r["backend"], r["device"], r["resolution"], f"{r['splats']:,}", f"{r['forward_s']:.3f}",
         f"{r['forward_backward_s']:.3f}", f"{r['peak_mb']:.0f}", "-" if r["cuda_mb"] is None else f"{r['cuda_mb']:.0f}"]
        for r in rows
    ]  # fmt: skip
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
        print("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
        for c in cells:
            print("  ".join(v.ljust(w) for v, w in zip(c, widths)))
        return
    table = Table(title="splat-portrait renderer (median wall-clock seconds per frame)")
    for h in headers:
        table.add_column(h, justify="left" if h in ("backend", "device") else "right", no_wrap=True)
    for c in cells:
        table.add_row(*c)
    Console(width=max(120, Console().width)).print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", type=Path, help="Also write the rows, with the run record (commit, machine, versions), here.")
    args = parser.parse_args()

    cases = [("torch", torch.device("cpu"))]
    cpu_usable, cpu_detail = cpu_status()
    if cpu_usable:
        cases.insert(0, ("cpu", torch.device("cpu")))
    else:
        print(f"the C++ rasteriser is unavailable: {cpu_detail}")
    usable, detail = gsplat_status()
    if torch.cuda.is_available():
        cases.append(("torch", torch.device("cuda")))
        if usable:
            cases.append(("gsplat", torch.device("cuda")))
    print(f"python {platform.python_version()}, torch {torch.__version__}; gsplat: {detail}")
    rows = [bench(backend, device, args.resolution, args.repeats) for backend, device in cases]
    print_table(rows)
    if args.json:
        record = {"benchmark": "render", "resolution": args.resolution, "repeats": args.repeats, "record": run_record(), "rows": rows}
        args.json.write_text(json.dumps(record, indent=1, default=str))

    cpu = rows[0]  # the backend "auto" renders CPU tensors with
    if args.resolution == 256:
        verdicts = [f"{key} {cpu[key]:.3g} (target <= {limit})" + ("" if cpu[key] <= limit else "  MISSED")
                    for key, limit in TARGETS.items()]  # fmt: skip
        print(f"CPU targets ({cpu['backend']} backend): " + "; ".join(verdicts))


if __name__ == "__main__":
    main()
