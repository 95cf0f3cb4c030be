"""python -m fusion: build the merge kernel now and say which engine merges use."""

from fusion import native

print(f"merge engine: {native.describe()}")
