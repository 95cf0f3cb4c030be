"""Cost of test-time adaptation: images/s of each method against plain inference on the
same stream, and the extra memory it needs.

Every method runs over the same stream of random batches (mini_r18 by default). Throughput
is the best of ``--repeats`` passes over the stream, each from a fresh adapter. EATA and
SAR run with filters that keep every sample (E_0 = ln C, epsilon > 1): the worst case, in
which every batch pays for its update (random inputs would otherwise be filtered out and
skip the backward pass). SAR runs
two forward/backward passes per batch (SAM), so it should cost about 2x Tent, not more.

Extra memory: on CUDA, the peak allocated memory of an adapting step minus that of an
inference step. On CPU PyTorch keeps no allocator statistics, so the figure is an
exact account of what adaptation holds beyond inference: the tensors saved for the
backward pass (counted through ``saved_tensors_hooks``), the optimiser state and the
source-weights copy kept for resets.

    .venv/bin/python benchmarks/adapt.py [--segmentor mini_r18] [--norm bn] [--batches 6]
        [--batch-size 8] [--size 128x64] [--repeats 2] [--threads 1] [--device cpu] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import torch  # noqa: E402

from experiments.models.segmentors import build_segmentor, segment  # noqa: E402
from experiments.tta import METHODS, build_adapter  # noqa: E402


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def saved_bytes(adapter, images: torch.Tensor) -> int:
    """Bytes of tensors autograd saves for backward during one adapting step (peak of one pass)."""
    total = [0]
    seen: set[int] = set()

    def pack(t: torch.Tensor):
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        adapter(images)
    return total[0]


def extra_memory(method: str, make, images: torch.Tensor, device: torch.device) -> int:
    adapter = make(method)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        adapter(images)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    if method == "source":
        return 0
    held = _bytes(adapter.source_state.values())
    if adapter.optimizer is not None:
        adapter(images)  # creates the momentum buffers
        held += _bytes(t for s in adapter.optimizer.state.values() for t in s.values() if torch.is_tensor(t))
    return held + saved_bytes(adapter, images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segmentor", default="mini_r18")
    parser.add_argument("--norm", default="bn", choices=["bn", "gn", "ln"])
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--size", default="128x64", help="WIDTH x HEIGHT")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    width, height = (int(v) for v in args.size.lower().split("x"))
    gen = torch.Generator().manual_seed(0)
    stream = [torch.randn(args.batch_size, 3, height, width, generator=gen).to(device) for _ in range(args.batches)]
    torch.manual_seed(0)
    base = build_segmentor(args.segmentor, norm=args.norm, decode_head={"dropout_ratio": 0.0}).to(device)
    state = base.state_dict()

    def make(method: str):
        model = build_segmentor(args.segmentor, norm=args.norm, decode_head={"dropout_ratio": 0.0}).to(device)
        model.load_state_dict(state)
        # worst case: every sample passes the entropy (and redundancy) filters, so each batch
        # pays the full update; no recovery resets inside the timing
        options = {"sar": {"reset_threshold": None, "margin_fraction": 1.0},
                   "eata": {"margin_fraction": 1.0, "redundancy_eps": 1.01}}.get(method, {})
        return build_adapter(method, model, 19, segment, batch_size=args.batch_size,
                             fisher_batches=stream[:1] if method == "eata" else None, **options)

    results = {}
    for method in METHODS:
        best = float("inf")
        for _ in range(args.repeats + 1):  # the first pass warms up
            adapter = make(method)
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            for images in stream:
                adapter(images)
            if device.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - start)
        images_per_s = args.batches * args.batch_size / best
        results[method] = {"images_per_s": images_per_s,
                           "extra_memory_mib": extra_memory(method, make, stream[0], device) / 2 ** 20}
    plain = results["source"]["images_per_s"]
    tent = results["tent"]["images_per_s"]
    print(f"{args.segmentor} ({args.norm}), batch {args.batch_size}, {width}x{height}, {args.device}, "
          f"{args.threads} thread(s)")
    print("| method | images/s | time vs plain inference | time vs Tent | extra memory (MiB) |")
    print("|---|---:|---:|---:|---:|")
    for method, r in results.items():
        r["time_vs_plain"] = plain / r["images_per_s"]
        r["time_vs_tent"] = tent / r["images_per_s"]
        print(f"| {method} | {r['images_per_s']:.1f} | {r['time_vs_plain']:.2f}x | {r['time_vs_tent']:.2f}x "
              f"| {r['extra_memory_mib']:.1f} |")
    if args.out:
        from experiments.infra.runs import write_json_atomic

        write_json_atomic(args.out, {"config": vars(args), "results": results})


if __name__ == "__main__":
    main()
