"""``python -m experiments.miniature --out data/mini --seed 0 --size 128x64 --train 100 --val 50``."""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from experiments.miniature.builder import DATASETS, DEFAULTS, generate  # noqa: E402


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT, e.g. 128x64; got {text!r}") from None
    return width, height


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Generate the miniature benchmark (a stand-in for the real datasets).")
    parser.add_argument("--out", default="data/mini", help="output folder (default data/mini)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=_size, default=DEFAULTS["size"], help="WIDTHxHEIGHT (default 128x64)")
    parser.add_argument("--train", type=int, default=DEFAULTS["n_train"], help="train images per target")
    parser.add_argument("--val", type=int, default=DEFAULTS["n_val"], help="val images per target")
    parser.add_argument("--source", type=int, default=DEFAULTS["n_source"], help="images per source (gta, synthia)")
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=None)
    parser.add_argument("--workers", type=int, default=None, help="processes (default min(2, cores))")
    parser.add_argument("--force", action="store_true", help="regenerate even when present")
    parser.add_argument("--no-preview", action="store_true", help="skip preview.png")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    out = generate(args.out, seed=args.seed, size=args.size, n_train=args.train, n_val=args.val,
                   n_source=args.source, datasets=args.datasets, force=args.force, workers=args.workers,
                   preview=not args.no_preview)  # fmt: skip
    print(f"miniature benchmark at {out} ({time.perf_counter() - start:.1f} s); see {out / 'README.md'}")


if __name__ == "__main__":
    main()
