"""Reading the models to merge and writing the merged one.

Training checkpoints follow mmseg / DAFormer: ``{"state_dict": {...}, "meta": ...}``
where a self-training run stores its networks side by side under prefixes
(``model.`` the student, ``ema_model.`` the EMA teacher, ``imnet_model.`` the
frozen ImageNet model of the feature distance). Plain mmseg checkpoints and
safetensors files hold a single network without prefix.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

NETWORK_PREFIXES = {"student": "model.", "teacher": "ema_model.", "imagenet": "imnet_model."}


def load_checkpoint(path: str | os.PathLike, network: str = "student") -> dict[str, torch.Tensor]:
    """The state dict of one network in a checkpoint, keys without their prefix.

    ``network``: ``student``, ``teacher`` or ``imagenet``. A checkpoint without
    network prefixes (plain mmseg, safetensors, a merged model) holds one network
    and is returned whole. Raises FileNotFoundError / ValueError naming the file.
    """
    path = Path(path)
    if network not in NETWORK_PREFIXES:
        raise ValueError(f"network {network!r} unknown; choose one of {sorted(NETWORK_PREFIXES)}")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            raw: Any = load_file(path)
        else:  # weights_only: a checkpoint file must not be able to run code
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"cannot read checkpoint {path}: {type(error).__name__}: {error}") from error
    if isinstance(raw, Mapping) and "state_dict" in raw:
        raw = raw["state_dict"]
    if not isinstance(raw, Mapping) or not raw or not all(
            isinstance(v, torch.Tensor) for v in raw.values()):
        raise ValueError(f"checkpoint {path} holds no state dict of tensors")
    return select_network(raw, network, source=str(path))


def select_network(state_dict: Mapping[str, torch.Tensor], network: str,
                   source: str = "state dict") -> dict[str, torch.Tensor]:
    """Keys of ``network`` with the prefix stripped; the whole dict when it has no prefixes."""
    present = sorted(p for p in NETWORK_PREFIXES.values() if any(k.startswith(p) for k in state_dict))
    if not present:
        return dict(state_dict)
    prefix = NETWORK_PREFIXES[network]
    if prefix not in present:
        raise ValueError(f"checkpoint {source} has no {network} network (prefix {prefix!r}); "
                         f"available prefixes: {present}")
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path``, renamed onto it only when the body succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def sha256_of(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _unshared(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous tensors with no two sharing memory, as safetensors requires."""
    seen: set[int] = set()
    result = {}
    for key, tensor in state_dict.items():
        tensor = tensor.detach().cpu().contiguous()
        pointer = tensor.untyped_storage().data_ptr()
        if pointer in seen and tensor.numel() > 0:
            tensor = tensor.clone()
        seen.add(tensor.untyped_storage().data_ptr())
        result[key] = tensor
    return result


def _read_json(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        content = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"corrupt manifest {path}: {error}") from error
    if not isinstance(content, dict):
        raise ValueError(f"manifest {path} is not a JSON object")
    return content


def save_merged(state_dict: Mapping[str, torch.Tensor], out_dir: str | os.PathLike,
                meta: Mapping[str, Any] | None = None,
                manifest_name: str | None = "manifest.json") -> dict[str, Path]:
    """Write ``merged.safetensors`` and an mmseg-loadable ``merged.pth``, each atomically.

    ``merged.pth`` is ``{"state_dict": ..., "meta": meta}`` with plain keys, so
    mmseg's ``load_checkpoint`` (or ``model.load_state_dict(strict=True)``)
    reads it directly. ``meta`` must be JSON-serialisable. Unless
    ``manifest_name`` is None, a manifest lists each file with its sha256 under
    ``files`` (entries of an existing manifest of that name are kept).
    Returns the written paths by role.
    """
    out_dir = Path(out_dir)
    meta = json.loads(json.dumps(dict(meta or {}), default=str))  # plain types only
    tensors = _unshared(state_dict)
    paths = {"safetensors": out_dir / "merged.safetensors", "pth": out_dir / "merged.pth"}
    # Both files are renamed into place only once both are written, so a failure
    # never leaves a new safetensors file beside an old .pth.
    with atomic_file(paths["safetensors"]) as tmp_safetensors, atomic_file(paths["pth"]) as tmp_pth:
        save_file(tensors, str(tmp_safetensors), metadata={"format": "pt", "meta": json.dumps(meta)})
        torch.save({"state_dict": tensors, "meta": meta}, tmp_pth)
    if manifest_name is not None:
        files = {p.name: {"sha256": sha256_of(p), "bytes": p.stat().st_size} for p in paths.values()}
        paths["manifest"] = out_dir / manifest_name
        # A manifest already there (a run folder's) keeps its other entries.
        manifest = _read_json(paths["manifest"])
        manifest.update(files=files, num_tensors=len(tensors), merged_meta=meta)
        with atomic_file(paths["manifest"]) as tmp:
            tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return paths
