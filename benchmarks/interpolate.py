"""One-pass interpolation curves against the naive loop (one full evaluation per alpha).

An 11-point path theta(alpha) = (1 - alpha) A + alpha B between two ``mini_r18``
segmentors, evaluated on a miniature validation split two ways, side by side in one
process on the same inputs:

- naive: ``experiments.inference.interpolation.evaluate_path_naive``, i.e. load the weights of one
  point, run ``evaluate_model`` over the dataset, repeat (decodes every image P times);
- one pass: ``experiments.inference.interpolation.evaluate_path`` (decodes and normalises each image
  once, then runs every point on it).

Both are timed on the dataset as loaded from disk (PNG decoding on access) and on the
same images decoded up front (what the study pipeline keeps in memory), so the printout
separates what decoding costs from what the forward passes cost. The confusion matrices
of both methods are asserted identical.

    .venv/bin/python benchmarks/interpolate.py [--data data/mini] [--domain cityscapes]
        [--points 11] [--batch-size 16] [--images 0 (= all)] [--threads 2] [--repeats 2]
        [--size 128x64]

Without a miniature at ``--data`` one of ``--size`` (50 validation images) is generated
into a temporary folder, e.g. ``--data none --size 1024x512`` for Cityscapes-like decoding
cost.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from experiments.data import datasets  # noqa: E402
from experiments.inference.interpolation import evaluate_path, evaluate_path_naive, path_state_dicts  # noqa: E402
from experiments.models.segmentors import build_segmentor  # noqa: E402


class _Subset:
    """The first ``n`` items of a lazily decoding dataset, still decoding on access."""

    def __init__(self, dataset, n: int):
        self.dataset, self.n = dataset, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.n:
            raise IndexError(index)
        return self.dataset[index]


def _timed(fn, repeats: int):
    """Best wall and process-CPU seconds of ``repeats`` runs, and the last result.

    CPU time is reported beside wall time because it is less disturbed by other
    processes sharing the machine.
    """
    wall, cpu, result = float("inf"), float("inf"), None
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = fn()
        wall, cpu = min(wall, time.perf_counter() - start), min(cpu, time.process_time() - start_cpu)
    return (wall, cpu), result


def _models(seed: int) -> tuple[torch.nn.Module, dict, dict]:
    """Two differently initialised mini_r18 segmentors whose BN statistics are not trivial."""
    states = []
    for offset in (0, 1):
        torch.manual_seed(seed + offset)
        model = build_segmentor("mini_r18")
        for name, buffer in model.named_buffers():  # eval-mode BN with non-default statistics
            if name.endswith("running_mean"):
                buffer.normal_(0.0, 0.1)
            elif name.endswith("running_var"):
                buffer.uniform_(0.5, 2.0)
        states.append({k: v.clone() for k, v in model.state_dict().items()})
    return model.eval(), states[0], states[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="data/mini")
    parser.add_argument("--domain", default="cityscapes", choices=["cityscapes", "idd"])
    parser.add_argument("--points", type=int, default=11)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--images", type=int, default=0, help="first N validation images (0 = all)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--size", default="128x64", help="WIDTHxHEIGHT of a generated miniature")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    root = Path(args.data)
    with tempfile.TemporaryDirectory() as tmp:
        size = tuple(int(v) for v in args.size.lower().split("x"))
        if not (root / args.domain).exists():
            from experiments.data.miniature import generate

            root = Path(tmp)
            print(f"no miniature at {args.data}: generating one in {root}")
            generate(root, size=size, n_train=2, n_val=50, n_source=2, datasets=["gta", args.domain],
                     preview=False)
        lazy = datasets.load(args.domain, root / args.domain, "val")
        if args.images:
            lazy = _Subset(lazy, min(args.images, len(lazy)))
        model, a, b = _models(0)
        points = path_state_dicts(a, b, np.linspace(0.0, 1.0, args.points))
        shape = lazy[0]["image"].shape
        print(f"{args.domain} val from {root}: {len(lazy)} images {shape[1]}x{shape[0]}, {args.points} points, "
              f"batch {args.batch_size}, {torch.get_num_threads()} threads")

        (decode_s, _), decoded = _timed(lambda: [lazy[i] for i in range(len(lazy))], args.repeats)
        evaluate_path(model, points[:1], decoded[:args.batch_size], args.batch_size)  # warm-up
        rows = []
        for label, data in (("from disk", lazy), ("pre-decoded", decoded)):
            naive_s, naive = _timed(lambda: evaluate_path_naive(model, points, data, args.batch_size), args.repeats)
            fast_s, fast = _timed(lambda: evaluate_path(model, points, data, args.batch_size), args.repeats)
            assert np.array_equal(naive, fast), f"{label}: one-pass confusions differ from the naive loop"
            rows.append((label, naive_s, fast_s))
        print(f"decoding the split once: {decode_s:.2f} s ({1000 * decode_s / len(lazy):.1f} ms/image)")
        print(f"{'dataset':<12} {'naive wall/cpu (s)':>19} {'one pass wall/cpu (s)':>22} {'speed-up wall/cpu':>18}")
        for label, (nw, nc), (fw, fc) in rows:
            print(f"{label:<12} {nw:>9.2f} / {nc:<7.2f} {fw:>10.2f} / {fc:<9.2f} {nw / fw:>8.2f}x / {nc / fc:.2f}x")
        print("confusion matrices identical: yes (asserted for every point)")


if __name__ == "__main__":
    main()
