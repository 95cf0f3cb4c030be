"""Evaluation overhead and metric accumulation speed.

1. Throughput of ``experiments.inference.evaluation.evaluate_model`` (stacking, normalisation,
   forward, upsampling, argmax, confusion update) against the bare forward pass
   ``segment(model, x)`` on the same, already normalised batches. Target: ratio
   (evaluation images/s over forward images/s) >= 0.95.
2. Confusion accumulation with ``experiments.inference.confusion.ConfusionMatrix`` against mmseg's
   ``IoUMetric.process`` on the same predictions, with the mIoU of both compared.

    .venv/bin/python benchmarks/evaluate.py [--segmentor mini_r18] [--images 32]
        [--size 128x64] [--batch-size 4] [--metric-size 1024x512] [--repeats 3] [--threads N]

Sizes are WIDTH x HEIGHT. Runs on CUDA when available unless ``--device cpu``.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from analysis import metrics as M  # noqa: E402
from experiments.inference.confusion import ConfusionMatrix  # noqa: E402
from experiments.inference.evaluation import evaluate_model  # noqa: E402
from experiments.models.segmentors import build_segmentor, normalize, segment  # noqa: E402


def _size(text: str) -> tuple[int, int]:
    width, height = (int(v) for v in text.lower().split("x"))
    return height, width


def _best(fn, repeats: int) -> float:
    """Best wall time of ``repeats`` runs (after one warm-up), in seconds."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def throughput(segmentor: str, images: int, size: tuple[int, int], batch_size: int,
               device: torch.device, repeats: int) -> dict:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = build_segmentor(segmentor).to(device).eval()
    dataset = [{"image": rng.integers(0, 256, (*size, 3), dtype=np.uint8),
                "label": rng.integers(0, 19, size, dtype=np.uint8), "path": str(i)}
               for i in range(images)]
    batches = [normalize(np.stack([d["image"] for d in dataset[i:i + batch_size]]), device)
               for i in range(0, images, batch_size)]

    def bare() -> None:
        with torch.inference_mode():
            for x in batches:
                segment(model, x)
        if device.type == "cuda":
            torch.cuda.synchronize()

    def full() -> None:
        evaluate_model(model, dataset, batch_size=batch_size, device=device, progress=False)

    # Interleave the two so drifting machine load hits both alike.
    bare_t, full_t = [], []
    for _ in range(repeats):
        bare_t.append(_best(bare, 1))
        full_t.append(_best(full, 1))
    bare_s, full_s = min(bare_t), min(full_t)
    return {"forward_img_s": images / bare_s, "evaluate_img_s": images / full_s,
            "ratio": bare_s / full_s}


def accumulation(images: int, size: tuple[int, int], repeats: int) -> dict:
    from mmseg.evaluation import IoUMetric

    rng = np.random.default_rng(1)
    preds = [torch.from_numpy(rng.integers(0, 19, size)) for _ in range(images)]
    labels = []
    for _ in range(images):
        label = rng.integers(0, 19, size)
        label[rng.random(size) < 0.1] = 255
        labels.append(torch.from_numpy(label))
    confusion = ConfusionMatrix(19)
    metric = IoUMetric()
    metric.dataset_meta = {"classes": [str(c) for c in range(19)]}
    samples = [[{"pred_sem_seg": {"data": p[None]}, "gt_sem_seg": {"data": g[None]}}]
               for p, g in zip(preds, labels)]

    def ours() -> None:
        confusion.reset()
        for p, g in zip(preds, labels):
            confusion.update(p, g)

    def mmseg() -> None:
        metric.results.clear()
        for sample in samples:
            metric.process({}, sample)

    ours_s, mmseg_s = _best(ours, repeats), _best(mmseg, repeats)
    areas = [sum(parts) for parts in zip(*metric.results)]
    reference = float(np.nanmean(IoUMetric.total_area_to_metrics(*areas, ["mIoU"])["IoU"]))
    return {"ours_ms_per_img": 1000 * ours_s / images, "mmseg_ms_per_img": 1000 * mmseg_s / images,
            "speedup": mmseg_s / ours_s,
            "miou_difference": abs(M.mean_iou(confusion.matrix) - reference)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--segmentor", default="mini_r18")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--size", type=_size, default=(64, 128))
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--metric-size", type=_size, default=(512, 1024))
    parser.add_argument("--metric-images", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (1 gives stable figures on a busy machine)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"device {device}, torch threads {torch.get_num_threads()}")
    t = throughput(args.segmentor, args.images, args.size, args.batch_size, device, args.repeats)
    h, w = args.size
    print(f"[throughput] {args.segmentor} {w}x{h}, batch {args.batch_size}: forward "
          f"{t['forward_img_s']:.1f} img/s, evaluate {t['evaluate_img_s']:.1f} img/s, "
          f"ratio {t['ratio']:.3f} (target >= 0.95)")
    a = accumulation(args.metric_images, args.metric_size, args.repeats)
    h, w = args.metric_size
    print(f"[accumulation] {w}x{h}: ConfusionMatrix {a['ours_ms_per_img']:.2f} ms/img, "
          f"mmseg IoUMetric {a['mmseg_ms_per_img']:.2f} ms/img, speedup {a['speedup']:.2f}x, "
          f"|mIoU difference| {a['miou_difference']:.1e}")


if __name__ == "__main__":
    main()
