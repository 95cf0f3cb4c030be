"""Speed and memory of one self-training iteration (experiments.selftraining.loop.train_step).

1. Miniature recipe on CPU: iterations/s, CPU seconds per iteration (robust to a busy
   machine) and peak resident memory, for mini_r18 / mini_mitb0 and each recipe mode.
2. Paper-size recipe on a GPU (skipped with a message when CUDA is absent): MiT-B5 and
   ResNet-101 DAFormer at 512 x 512 crops, batch 2 source + 2 target, in float32, bf16
   autocast and channels-last, against DAFormer's published 16 h for 40k iterations on an
   RTX 2080 Ti (1.44 s per iteration).

    .venv/bin/python benchmarks/train.py [--iters 20] [--threads 1] [--size 128x64]
        [--gpu-iters 10] [--gpu-only] [--out FILE.json]

Batches are synthetic (random images, blocky random labels): the data pipeline is not timed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from experiments.selftraining import checkpoints as ckpt  # noqa: E402
from experiments.selftraining import recipe as st  # noqa: E402
from experiments.infra.logs import quiet_libraries  # noqa: E402
from experiments.selftraining.loop import build_optimizer, train_step  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DAFORMER_S_PER_ITER = 16 * 3600 / 40_000  # DAFormer paper, RTX 2080 Ti


def synthetic_batch(size: tuple[int, int], batch: int, device: torch.device, g: torch.Generator) -> dict:
    h, w = size
    blocks = torch.randint(19, (2 * batch, 1, max(1, h // 8), max(1, w // 8)), generator=g).float()
    labels = F.interpolate(blocks, size=(h, w), mode="nearest")[:, 0].long()
    images = torch.rand(2 * batch, 3, h, w, generator=g)
    return {k: v.to(device) for k, v in {"source": images[:batch], "source_label": labels[:batch],
                                          "target": images[batch:], "target_label": labels[batch:]}.items()}


def measure(segmentor: str, recipe: str, size: tuple[int, int], iters: int, device: torch.device,
            autocast: bool = False, channels_last: bool = False) -> dict:
    from experiments.models.segmentors import build_segmentor

    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        cfg = compose("train", overrides=[f"segmentor={segmentor}", f"recipe={recipe}", "init=same_random"])
    torch.manual_seed(0)
    student = build_segmentor(cfg.segmentor.name)
    student.to(device)
    teacher = None
    if cfg.recipe.mode == "selftrain":
        import copy

        teacher = copy.deepcopy(student)
    imagenet = None
    if cfg.recipe.feature_distance.enabled:
        imagenet = build_segmentor(cfg.segmentor.name).backbone
        imagenet.to(device)
        imagenet.eval()
    if channels_last:
        for net in (student, teacher, imagenet):
            if net is not None:
                net.to(memory_format=torch.channels_last)
    nets = {"student": student, "teacher": teacher, "imagenet": imagenet}
    optimizer, scheduler = build_optimizer(cfg, student)
    g = torch.Generator().manual_seed(0)
    batch = synthetic_batch(size, int(cfg.data.source_batch), device, g)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()

    def step(it: int) -> None:
        if teacher is not None and it > 0:
            st.ema_update(teacher, student, it)
        optimizer.zero_grad(set_to_none=True)
        with amp:
            train_step(cfg, nets, batch, ckpt.iteration_generator(0, it, 2))
        optimizer.step()
        scheduler.step()

    for it in range(2):  # warm-up (kernel selection, allocator)
        step(it)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    wall, cpu = time.perf_counter(), time.process_time()
    for it in range(2, 2 + iters):
        step(it)
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    out = {"segmentor": segmentor, "recipe": recipe, "size": f"{size[1]}x{size[0]}", "iters_per_s": iters / wall,
           "cpu_s_per_iter": cpu / iters, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        out.update(peak_gpu_gb=torch.cuda.max_memory_allocated() / 2**30, autocast_bf16=autocast,
                   channels_last=channels_last, hours_per_40k=40_000 / out["iters_per_s"] / 3600,
                   speedup_vs_daformer_2080ti=DAFORMER_S_PER_ITER * out["iters_per_s"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--size", default="128x64", help="miniature WIDTH x HEIGHT")
    parser.add_argument("--gpu-iters", type=int, default=10)
    parser.add_argument("--gpu-only", action="store_true", help="skip the miniature CPU section")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    quiet_libraries()
    torch.set_num_threads(args.threads)
    width, height = (int(v) for v in args.size.lower().split("x"))
    results = []
    for segmentor in () if args.gpu_only else ("mini_r18", "mini_mitb0"):
        for recipe in ("daformer", "source_only"):
            r = measure(segmentor, recipe, (height, width), args.iters, torch.device("cpu"))
            results.append(r)
            print(f"cpu {segmentor:11s} {recipe:12s} {r['iters_per_s']:6.2f} it/s  "
                  f"{r['cpu_s_per_iter'] * 1000:6.1f} ms CPU/it  peak RSS {r['peak_rss_mb']:.0f} MB")
    if not torch.cuda.is_available():
        print("no CUDA device: paper-size MiT-B5 / R101 recipe timings skipped")
    else:
        for segmentor in ("daformer_mitb5", "daformer_r101"):
            for autocast, channels_last in ((False, False), (True, False), (True, True)):
                r = measure(segmentor, "daformer", (512, 512), args.gpu_iters, torch.device("cuda"),
                            autocast, channels_last)
                results.append(r)
                print(f"gpu {segmentor:15s} bf16={autocast!s:5s} channels_last={channels_last!s:5s} "
                      f"{r['iters_per_s']:5.2f} it/s  {r['hours_per_40k']:5.1f} h/40k "
                      f"(DAFormer 2080 Ti: 16 h)  peak {r['peak_gpu_gb']:.1f} GB")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
