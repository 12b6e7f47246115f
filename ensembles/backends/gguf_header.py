"""A GGUF file's header read in one pass: its scalar metadata and where its tensors end.

gguf's own GGUFReader builds a numpy view per element of every array (2 s for SmolLM2's header, tens of
seconds for Gemma's 262k-token vocabulary on a busy CPU); registering a model needs a few keys and the
tensors' extent, so this walk skips arrays by their lengths and keeps only scalars and strings. The
value types, block sizes and default alignment are gguf's constants.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gguf.constants import GGML_QUANT_SIZES, GGUF_DEFAULT_ALIGNMENT, GGMLQuantizationType, GGUFValueType

_SCALARS = {
    GGUFValueType.UINT8: "<B",
    GGUFValueType.INT8: "<b",
    GGUFValueType.UINT16: "<H",
    GGUFValueType.INT16: "<h",
    GGUFValueType.UINT32: "<I",
    GGUFValueType.INT32: "<i",
    GGUFValueType.FLOAT32: "<f",
    GGUFValueType.BOOL: "<?",
    GGUFValueType.UINT64: "<Q",
    GGUFValueType.INT64: "<q",
    GGUFValueType.FLOAT64: "<d",
}
# No real header holds more; a count past these is a corrupt file, not one to walk.
MAX_ITEMS = 1 << 26
MAX_STRING = 1 << 24


class HeaderError(ValueError):
    """The bytes are not a whole GGUF header (cut short, or not GGUF at all)."""


@dataclass(frozen=True)
class GGUFHeader:
    version: int
    fields: dict[str, Any]  # scalar and string values; an array's value is its item count
    tensor_count: int
    tensors_end: int  # the byte offset just past the last tensor's data


class _Cursor:
    def __init__(self, data: Any) -> None:
        self.data, self.at = data, 0

    def take(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        if self.at + size > len(self.data):
            raise HeaderError(f"the header ends early, at byte {len(self.data)}")
        (value,) = struct.unpack_from(fmt, self.data, self.at)
        self.at += size
        return value

    def string(self) -> str:
        size = self.take("<Q")
        if size > MAX_STRING or self.at + size > len(self.data):
            raise HeaderError(f"a string of {size} bytes at byte {self.at} runs past the header")
        text = bytes(self.data[self.at : self.at + size]).decode("utf-8", errors="replace")
        self.at += size
        return text

    def skip_value(self, kind: int) -> None:
        if kind == GGUFValueType.STRING:
            size = self.take("<Q")  # read before the add: ``self.at += self.take(...)`` reads at first
            self.at += size
        elif kind == GGUFValueType.ARRAY:
            item, count = self.take("<I"), self.take("<Q")
            if count > MAX_ITEMS:
                raise HeaderError(f"an array of {count} items")
            if item in _SCALARS:
                self.at += count * struct.calcsize(_SCALARS[GGUFValueType(item)])
            else:
                for _ in range(count):
                    self.skip_value(item)
        elif kind in _SCALARS:
            self.at += struct.calcsize(_SCALARS[GGUFValueType(kind)])
        else:
            raise HeaderError(f"unknown value type {kind}")
        if self.at > len(self.data):
            raise HeaderError(f"the header ends early, at byte {len(self.data)}")


def read_header(path: Path) -> GGUFHeader:
    """The metadata and tensor extent of the GGUF file at ``path`` (little-endian, version 2 or 3)."""
    with path.open("rb") as fh:
        if path.stat().st_size < 24:
            raise HeaderError("the file is shorter than a GGUF header")
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return _walk(_Cursor(data), path.stat().st_size)


def _walk(cursor: _Cursor, size: int) -> GGUFHeader:
    if cursor.take("<4s") != b"GGUF":
        raise HeaderError("bad magic bytes")
    version = cursor.take("<I")
    if version not in (2, 3):
        raise HeaderError(f"GGUF version {version} (big-endian, or unknown): versions 2 and 3 are read")
    tensor_count, kv_count = cursor.take("<Q"), cursor.take("<Q")
    if tensor_count > MAX_ITEMS or kv_count > MAX_ITEMS:
        raise HeaderError(f"{tensor_count} tensors and {kv_count} keys")
    fields: dict[str, Any] = {}
    for _ in range(kv_count):
        key, kind = cursor.string(), cursor.take("<I")
        if kind == GGUFValueType.STRING:
            fields[key] = cursor.string()
        elif kind in _SCALARS:
            fields[key] = cursor.take(_SCALARS[GGUFValueType(kind)])
        elif kind == GGUFValueType.ARRAY:
            start = cursor.at
            cursor.skip_value(kind)
            fields[key] = struct.unpack_from("<Q", cursor.data, start + 4)[0]
        else:
            raise HeaderError(f"unknown value type {kind} for {key}")
    end = 0
    for _ in range(tensor_count):
        name, dims = cursor.string(), cursor.take("<I")
        if dims > 8:
            raise HeaderError(f"tensor {name} has {dims} dimensions")
        elements = 1
        for _ in range(dims):
            elements *= cursor.take("<Q")
        kind, offset = cursor.take("<I"), cursor.take("<Q")
        try:
            block, block_bytes = GGML_QUANT_SIZES[GGMLQuantizationType(kind)]
        except (ValueError, KeyError):
            raise HeaderError(f"tensor {name} has unknown type {kind}") from None
        end = max(end, offset + elements // block * block_bytes)
    alignment = fields.get("general.alignment", GGUF_DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or isinstance(alignment, bool) or alignment <= 0:
        raise HeaderError(f"general.alignment is {alignment!r}, not a positive whole number")
    data_start = -(-cursor.at // alignment) * alignment
    return GGUFHeader(version=version, fields=fields, tensor_count=tensor_count, tensors_end=data_start + end)
