"""The training data pipeline: images/s and peak memory with 0 and N DataLoader workers, and as the set grows.

    python benchmarks/data.py [--images 10000] [--size 256] [--workers 2] [--batch 8]

On a generated set of ``--images`` images (the built-in shapes, PNG, written once under
``runs/bench-data``), one epoch of the training loader (spnas's own: ``AugmentSampler`` flips,
``transforms.v2``, the bounded image cache, ``make_loader``) is read in a fresh process per setting,
and the peak resident memory of that process and its DataLoader workers together (sampled from
/proc every 20 ms) is recorded. Settings: a quarter, half and all of the set with 0 and N workers
(the default 512 MiB cache), and the whole set with the cache unbounded, which is what a cache
without a bound would cost. Ratios are against the first setting of the same process run
(0 workers, a quarter of the set): memory should stay flat as the set grows; throughput should
rise with workers where cores are free.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import emit_json, print_table  # noqa: E402


def _tree_rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` and all its descendants (KiB), from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            status = Path(f"/proc/{d}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        children.setdefault(int(fields["PPid"].strip()), []).append(int(d))
        rss[int(d)] = int(fields.get("VmRSS", "0 kB").split()[0])
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        todo += children.get(p, [])
    return total


def child(json_path: str, n: int, workers: int, batch: int, cache_mb: int) -> dict:
    """One epoch of the training loader over the first ``n`` images; run in its own process."""
    import torch

    from spnas.detect.data import AugmentSampler, load_coco
    from spnas.detect.train import make_loader

    torch.set_num_threads(1)
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _tree_rss_kib(os.getpid()))
            time.sleep(0.02)

    ds = load_coco(json_path)
    ds = ds.subset(ds.image_ids[:n])
    ds.set_cache_mb(cache_mb)
    loader = make_loader(ds, batch, AugmentSampler(len(ds), generator=torch.Generator().manual_seed(0)), workers, torch.device("cpu"))
    t = threading.Thread(target=sample, daemon=True)
    t.start()
    t0 = time.perf_counter()
    seen = 0
    for imgs, targets in loader:
        seen += len(imgs)
    seconds = time.perf_counter() - t0
    stop.set()
    t.join()
    return {"images": seen, "seconds": round(seconds, 2), "images_per_s": round(seen / seconds, 1), "peak_rss_mib": round(peak[0] / 1024, 1)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=10_000)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--root", default=str(ROOT / "runs" / "bench-data"))
    p.add_argument("--child", nargs=5, metavar=("JSON", "N", "WORKERS", "BATCH", "CACHE_MB"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        j, n, w, b, c = args.child
        print(json.dumps(child(j, int(n), int(w), int(b), int(c))))
        return
    from spnas.detect.data import DEFAULT_CACHE_MB, generate_shapes

    t0 = time.time()
    json_path = generate_shapes(args.root, n_images=args.images, size=args.size, seed=0, split="train")
    print(f"# data: {args.images} images of {args.size} px in {args.root} ({time.time() - t0:.0f} s)", file=sys.stderr)
    settings = [(args.images // 4, 0, DEFAULT_CACHE_MB), (args.images // 2, 0, DEFAULT_CACHE_MB), (args.images, 0, DEFAULT_CACHE_MB),
                (args.images // 4, args.workers, DEFAULT_CACHE_MB), (args.images, args.workers, DEFAULT_CACHE_MB),
                (args.images, 0, 1_000_000)]
    rows = []
    for n, w, cache in settings:
        out = subprocess.run([sys.executable, __file__, "--child", str(json_path), str(n), str(w), str(args.batch), str(cache)],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append({"images": n, "workers": w, "cache": f"{cache} MiB" if cache < 1_000_000 else "unbounded", **r})
    base = rows[0]
    for r in rows:
        r["speed_ratio"] = round(r["images_per_s"] / base["images_per_s"], 3)
        r["rss_ratio"] = round(r["peak_rss_mib"] / base["peak_rss_mib"], 3)
    print_table(rows, ["images", "workers", "cache", "images_per_s", "speed_ratio", "peak_rss_mib", "rss_ratio", "seconds"])
    emit_json("data", rows, size=args.size, batch=args.batch, cpus=os.cpu_count(), seconds=round(time.time() - t0))


if __name__ == "__main__":
    main()
