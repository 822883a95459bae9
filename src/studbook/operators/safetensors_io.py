"""safetensors files of a merge: headers and tensors read one at a time, written streamed.

Inputs are `model.safetensors` or shards listed by `model.safetensors.index.json` (what
`save_pretrained` and mergekit write). The output is written header first, tensor by
tensor, optionally in shards laid out by mergekit's rule (`shard_layout`).
"""

from __future__ import annotations

from pathlib import Path

from studbook.core.errors import StudbookError


def read_header(folder: Path) -> tuple[dict[str, Path], dict[str, tuple[tuple[int, ...], str]]]:
    """tensor -> the file holding it, and tensor -> (shape, dtype), from the headers only.
    A folder holds `model.safetensors`, or shards listed by `model.safetensors.index.json`
    (what `save_pretrained` and mergekit write; mergekit reads the same two)."""
    import json

    from safetensors import safe_open

    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        files = {name: folder / shard for name, shard in weight_map.items()}
    else:
        single = sorted(folder.glob("*.safetensors"))
        if len(single) != 1:
            raise StudbookError(f"expected model.safetensors or an index of shards, found "
                                f"{len(single)} safetensors file(s)", file=str(folder))
        files = None
    shapes, where = {}, {}
    for file in sorted(set(files.values())) if files else single:
        with safe_open(str(file), framework="pt") as handle:
            for name in handle.keys():
                piece = handle.get_slice(name)
                shapes[name] = (tuple(piece.get_shape()), piece.get_dtype())
                where[name] = file
    if files and set(files) != set(shapes):
        raise StudbookError("the shard index and the shards list different tensors", file=str(index))
    return where, dict(sorted(shapes.items()))


def read_tensor(file: Path, name: str):
    from safetensors import safe_open

    with safe_open(str(file), framework="pt") as handle:  # closed at once: unmapped
        return handle.get_tensor(name)


# safetensors dtype names <-> torch, and their sizes in bytes
_ST_DTYPES = {"F32": ("float32", 4), "F16": ("float16", 2), "BF16": ("bfloat16", 2),
              "F64": ("float64", 8)}
_TORCH_TO_ST = {name: (code, size) for code, (name, size) in _ST_DTYPES.items()}


def torch_dtype(name: str):
    import torch

    return getattr(torch, _ST_DTYPES[name][0] if name in _ST_DTYPES else name)


class SafetensorsWriter:
    """Writes a safetensors file tensor by tensor, in the order of the planned header.

    safetensors' own `save_file` needs every tensor in memory and serialises a full copy;
    a merge knows every output shape and dtype up front (from its inputs' headers), so
    the header is written first and each merged tensor is appended and dropped. The
    file is read back by safetensors itself, which checks the offsets.
    """

    def __init__(self, path: Path, plan: dict[str, tuple[tuple[int, ...], str]]):
        import json
        import math

        self.path, self.order, self.written = Path(path), list(plan), 0
        header, offset = {}, 0
        self.dtypes = {}
        for name, (shape, dtype) in plan.items():
            code, size = _TORCH_TO_ST[dtype] if dtype in _TORCH_TO_ST else (dtype, _ST_DTYPES[dtype][1])
            self.dtypes[name] = _ST_DTYPES[code][0]
            length = math.prod(shape) * size
            header[name] = {"dtype": code, "shape": list(shape), "data_offsets": [offset, offset + length]}
            offset += length
        header["__metadata__"] = {"format": "pt"}
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)  # the data section starts 8-byte aligned
        self.header = raw

    def __enter__(self) -> "SafetensorsWriter":
        self.handle = open(self.path, "wb")
        self.handle.write(len(self.header).to_bytes(8, "little") + self.header)
        return self

    def write(self, name: str, tensor) -> None:
        import torch

        expected = self.order[self.written]
        if name != expected:
            raise RuntimeError(f"tensor '{name}' written out of order (expected '{expected}')")
        tensor = tensor.to(getattr(torch, self.dtypes[name])).contiguous()
        if tensor.numel():  # a byte view of the tensor: no copy
            self.handle.write(tensor.reshape(-1).view(torch.uint8).numpy())
        self.written += 1

    def __exit__(self, kind, value, traceback) -> None:
        self.handle.close()
        if kind is None and self.written != len(self.order):
            raise RuntimeError(f"{self.written} of {len(self.order)} tensors written")


def parse_size(value: str | int | None) -> int | None:
    """mergekit's `parse_kmb`: 20000, "20K", "5M", "5B" -> bytes (mergekit's help says
    parameters; its writer compares bytes)."""
    if value is None or isinstance(value, int):
        return value
    text = str(value).strip().upper()
    scale = {"K": 10**3, "M": 10**6, "B": 10**9}.get(text[-1:], 1)
    try:
        return int(float(text[:-1] if scale != 1 else text) * scale)
    except ValueError:
        raise StudbookError(f"'{value}' is not a size (e.g. 20000, 20K, 5M, 5B)", key="out_shard_size") from None


def shard_layout(plan: dict[str, tuple[tuple[int, ...], str]], max_bytes: int | None) -> list[list[str]]:
    """mergekit's writer rule: tensors in write order fill a shard; one that would make a
    non-empty shard exceed `max_bytes` opens the next."""
    import math

    shards, size = [[]], 0
    for name, (shape, dtype) in plan.items():
        code = _TORCH_TO_ST[dtype][0] if dtype in _TORCH_TO_ST else dtype
        length = math.prod(shape) * _ST_DTYPES[code][1]
        if max_bytes is not None and shards[-1] and size + length > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += length
    return shards


def writer_bytes(shape_dtype) -> int:
    import math

    code = _TORCH_TO_ST[shape_dtype[1]][0] if shape_dtype[1] in _TORCH_TO_ST else shape_dtype[1]
    return math.prod(shape_dtype[0]) * _ST_DTYPES[code][1]
