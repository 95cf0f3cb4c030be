"""Merge speed against the memory-copy bound, and peak memory of streaming merges.

    python benchmarks/merge.py [--models resnet101 mitb5] [--repeats 5]
    python benchmarks/merge.py --methods all [--repeats 1]    # the literature's data-free merges

Members are state dicts of mmseg's ResNetV1c-101 and MiT-B5 backbones (random
init, perturbed per member, BatchNorm statistics and counters set per member).
A merge of K models must read K models and write one new one, so the bound is
the time to clone one member (read it, write it into new memory) plus the time
to read the other K - 1 once; bound and merge are timed alternately in the same
process on the same tensors, and the best of ``--repeats`` runs is kept. The
merge is timed on both engines (``fusion.native``): the compiled one-pass
kernel and torch operations (``MTDA_NATIVE=0``), which give the same result.
Peak resident memory is measured in a fresh subprocess per merge
(``VmHWM``, else ``resource.getrusage``), above the process's memory after imports, in units of
one model's bytes.

``--methods`` times the data-free merges from the literature instead
(``fusion.task_arithmetic``, ``ties_merging``, ``dare``, ``model_breadcrumbs``,
``tsv_merge``, ``iso_c``, ``iso_cts``, each at its config's defaults): theta_0
is the unperturbed network, the bound is cloning it plus reading the K members
once (every method reads K + 1 models and writes one), and the figure is how
many times the bound a merge takes. The default run is unchanged without it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch

import fusion
from fusion import native

BACKBONES = {
    "resnet101": dict(type="ResNetV1c", depth=101),
    "mitb5": dict(type="MixVisionTransformer", embed_dims=64, num_layers=[3, 6, 40, 3],
                  num_heads=[1, 2, 5, 8]),
}


# Data-free merges, as f(base, members), at the defaults of configs/fusion/<name>.yaml
# (scale 1/K where the config's 0.5 stands for K = 2).
METHODS = {
    "task_arithmetic": lambda base, members: fusion.task_arithmetic(base, members, 1.0 / len(members)),
    "ties": lambda base, members: fusion.ties_merging(base, members),
    "dare": lambda base, members: fusion.dare(base, members, scale=1.0 / len(members)),
    "breadcrumbs": lambda base, members: fusion.model_breadcrumbs(base, members, scale=1.0 / len(members)),
    "tsv_merge": lambda base, members: fusion.tsv_merge(base, members),
    "iso_c": lambda base, members: fusion.iso_c(base, members),
    "iso_cts": lambda base, members: fusion.iso_cts(base, members),
}


def build_reference(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """The randomly initialised backbone every member is perturbed from (theta_0)."""
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    register_all_modules()
    torch.manual_seed(seed)
    return MODELS.build(BACKBONES[name]).state_dict()


def build_members(name: str, count: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    return perturb(build_reference(name, seed), count)


def perturb(reference: dict[str, torch.Tensor], count: int) -> list[dict[str, torch.Tensor]]:
    members = []
    for _ in range(count):
        member = {}
        for key, value in reference.items():
            if key.endswith("num_batches_tracked"):
                member[key] = torch.randint(1, 40_000, (), dtype=value.dtype)
            elif key.endswith("running_var"):
                member[key] = torch.rand_like(value) + 0.5
            elif value.is_floating_point():
                member[key] = value + 0.01 * torch.randn_like(value)
            else:
                member[key] = value.clone()
        members.append(member)
    return members


def model_bytes(state_dict: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in state_dict.values())


def time_clone(state_dict: dict[str, torch.Tensor]) -> float:
    """Read one model and write it into new memory, as a merge writes its result."""
    start = time.perf_counter()
    copies = {key: value.clone() for key, value in state_dict.items()}
    elapsed = time.perf_counter() - start
    del copies
    return elapsed


def time_read(state_dict: dict[str, torch.Tensor]) -> float:
    """Read one model once (a sum is the cheapest full read torch offers)."""
    start = time.perf_counter()
    for value in state_dict.values():
        value.sum()
    return time.perf_counter() - start


def use_engine(name: str) -> None:
    os.environ["MTDA_NATIVE"] = "1" if name == "compiled" else "0"
    native.reset()
    native.kernel()  # build/load outside the timed region


def time_merge(members: list[dict[str, torch.Tensor]], engine: str) -> float:
    use_engine(engine)
    start = time.perf_counter()
    merged = fusion.merge_linear(members)
    elapsed = time.perf_counter() - start
    del merged
    return elapsed


def speed(name: str, members: list[dict[str, torch.Tensor]], repeats: int,
          engines: list[str]) -> list[dict]:
    rows = []
    for count in (2, 4):
        bounds, merges = [], {engine: [] for engine in engines}
        for _ in range(repeats):  # alternate, so load changes hit all alike
            reads = sum(time_read(member) for member in members[1:count])
            bounds.append(time_clone(members[0]) + reads)
            for engine in engines:
                merges[engine].append(time_merge(members[:count], engine))
        for engine in engines:
            rows.append(dict(model=name, K=count, engine=engine, merge_s=min(merges[engine]),
                             bound_s=min(bounds),
                             fraction_of_bound=min(bounds) / min(merges[engine])))
    return rows


def method_speed(name: str, base: dict[str, torch.Tensor], members: list[dict[str, torch.Tensor]],
                 methods: list[str], repeats: int) -> Iterator[dict]:
    """One row per (K, method), as soon as it is measured (a full run takes minutes)."""
    for count in (2, 4):
        inputs = members[:count]
        # A few tries first (the first ones pay for page faults), then one more
        # beside every merge, so load changes hit both alike; the best so far counts.
        bounds = [time_clone(base) + sum(map(time_read, inputs)) for _ in range(5)]
        for method in methods:
            merges = []
            for _ in range(repeats):
                bounds.append(time_clone(base) + sum(map(time_read, inputs)))
                start = time.perf_counter()
                merged = METHODS[method](base, inputs)
                merges.append(time.perf_counter() - start)
                del merged
            yield dict(model=name, K=count, method=method, merge_s=min(merges),
                       bound_s=min(bounds), times_bound=min(merges) / min(bounds))


def peak_rss() -> int:
    """This process's peak resident memory in bytes.

    Linux keeps ``ru_maxrss`` across exec, so a child started by a large parent
    would report the parent's peak; the address space's own high-water mark
    (``VmHWM``) starts afresh at exec and is used where it exists.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _child(mode: str, paths: list[str], out_path: str) -> None:
    """Runs in a fresh process: one merge, then its peak RSS above the baseline."""
    from safetensors.torch import load_file, save_file

    baseline = peak_rss()
    if mode == "streaming":
        fusion.merge_safetensors_files(paths, out_path=out_path)
    else:
        save_file(fusion.merge_linear([load_file(p) for p in paths]), out_path)
    peak = peak_rss()
    print(json.dumps({"baseline": baseline, "peak": peak}))


def peak_memory(name: str, members: list[dict[str, torch.Tensor]], workdir: Path) -> list[dict]:
    from safetensors.torch import load_file, save_file

    paths = []
    for index, member in enumerate(members):
        paths.append(str(workdir / f"{name}_{index}.safetensors"))
        save_file(member, paths[-1])
    one_model = model_bytes(members[0])
    rows = {}
    for mode in ("in_memory", "streaming"):
        out = workdir / f"{name}_{mode}.safetensors"
        result = subprocess.run([sys.executable, __file__, "--child", mode, str(out), *paths],
                                capture_output=True, text=True, check=True)
        figures = json.loads(result.stdout.strip().splitlines()[-1])
        rows[mode] = dict(model=name, K=len(paths), mode=mode,
                          peak_above_baseline_models=(figures["peak"] - figures["baseline"]) / one_model,
                          peak_total_models=figures["peak"] / one_model)
    streamed, loaded = load_file(workdir / f"{name}_streaming.safetensors"), \
        load_file(workdir / f"{name}_in_memory.safetensors")
    rows["streaming"]["equals_in_memory"] = all(torch.equal(streamed[k], loaded[k]) for k in loaded)
    for path in workdir.iterdir():
        path.unlink()
    return list(rows.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(BACKBONES), choices=list(BACKBONES))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads; the merge is memory-bound, and one thread "
                             "avoids stalls when other processes share the cores")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--methods", nargs="+", choices=[*METHODS, "all"],
                        help="time these data-free merges (or all) instead of the default figures")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    engines = ["compiled", "torch"] if native.kernel() is not None else ["torch"]
    print(f"engine: {native.describe()}")
    results = {"threads": torch.get_num_threads(), "cpus": os.cpu_count(), "engine": native.describe(),
               "speed": [], "memory": []}
    if args.methods:
        methods = list(METHODS) if "all" in args.methods else list(dict.fromkeys(args.methods))
        use_engine(engines[0])
        results["methods"] = []
        for name in args.models:
            base = build_reference(name)
            members = perturb(base, 4)
            print(f"{name}: {len(base)} tensors, {model_bytes(base) / 2**20:.1f} MiB per model")
            for row in method_speed(name, base, members, methods, args.repeats):
                results["methods"].append(row)
                print(f"  K={row['K']} {row['method']:>15}: merge {row['merge_s']:8.2f} s, copy bound "
                      f"{row['bound_s'] * 1e3:7.1f} ms, {row['times_bound']:8.1f} x the bound", flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        return
    for name in args.models:
        members = build_members(name, 4)
        size = model_bytes(members[0]) / 2**20
        print(f"{name}: {len(members[0])} tensors, {size:.1f} MiB per model")
        for row in speed(name, members, args.repeats, engines):
            results["speed"].append(row)
            print(f"  K={row['K']} {row['engine']:>8}: merge {row['merge_s'] * 1e3:7.1f} ms, copy bound "
                  f"{row['bound_s'] * 1e3:7.1f} ms, fraction of bound {row['fraction_of_bound']:.2f}")
        use_engine(engines[0])
        with tempfile.TemporaryDirectory(prefix="merge_bench_") as workdir:
            for row in peak_memory(name, members, Path(workdir)):
                results["memory"].append(row)
                print(f"  K={row['K']} {row['mode']:>9}: peak RSS above baseline "
                      f"{row['peak_above_baseline_models']:.2f} x one model "
                      f"(total {row['peak_total_models']:.2f} x)"
                      + (f", equals in-memory: {row['equals_in_memory']}" if "equals_in_memory" in row else ""))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2], sys.argv[4:], sys.argv[3])
    else:
        main()
