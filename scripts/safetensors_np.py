"""A tiny safetensors reader and writer: numpy and the standard library only.

File layout (https://github.com/huggingface/safetensors):

    u64 little-endian N | N bytes of JSON header | raw tensor data

The header maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]}
(offsets relative to the first byte after the header) and may hold a
"__metadata__" dict of strings.

Reading:
    f = SafetensorsFile("model.safetensors")    # parses and validates the header only
    f.names(); f.info(name) -> (dtype, shape); f.get(name) -> float32 ndarray

Only F32, F16, BF16 and F8_E4M3 tensors can be read as numbers (BF16 is widened
exactly, uint16 << 16; F8_E4M3, DeepSeek-V3's fp8 "e4m3fn", through a 256-entry
table, also exact); asking for any other dtype raises SafetensorsError.

Writing (for tests and tools):
    save_file({"w": array}, "model.safetensors", dtypes={"w": "BF16"})
"""
import json
import os
import struct

import numpy as np

from mixformat import from_bf16_bits, to_bf16_bits  # the one bf16 codec

# dtype name -> element size in bytes (every dtype the format defines, so that the
# header of a file holding unsupported dtypes can still be validated)
DTYPE_SIZE = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1,
    "F4": 1, "F6_E2M3": 1, "F6_E3M2": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8, "C64": 8,
}
READABLE = ("F32", "F16", "BF16", "F8_E4M3")


def _e4m3_table():
    """float32 value of every float8_e4m3fn byte: sign, 4 exponent bits (bias 7),
    3 mantissa bits; exponent 0 is subnormal (m/8 * 2^-6); S.1111.111 is NaN; no inf."""
    t = np.empty(256, dtype=np.float32)
    for b in range(256):
        e, m = (b >> 3) & 15, b & 7
        if e == 15 and m == 7:
            v = float("nan")
        elif e == 0:
            v = m / 8.0 * 2.0 ** -6
        else:
            v = (1.0 + m / 8.0) * 2.0 ** (e - 7)
        t[b] = -v if b & 0x80 else v
    return t


E4M3 = _e4m3_table()
MAX_HEADER = 100 * 1024 * 1024  # the reference implementation's limit


class SafetensorsError(ValueError):
    pass


class SafetensorsFile:
    """The header of one .safetensors file, validated; tensors are read on demand."""

    def __init__(self, path):
        self.path = path
        try:
            size = os.path.getsize(path)
            with open(path, "rb") as f:
                head = f.read(8)
                if len(head) < 8:
                    raise SafetensorsError("%s: truncated safetensors file (%d bytes, no header length)"
                                           % (path, len(head)))
                (n,) = struct.unpack("<Q", head)
                if n > MAX_HEADER:
                    raise SafetensorsError("%s: safetensors header length %d is absurd" % (path, n))
                if 8 + n > size:
                    raise SafetensorsError("%s: truncated safetensors file (header of %d bytes, file of %d)"
                                           % (path, n, size))
                raw = f.read(n)
        except OSError as e:
            raise SafetensorsError("%s: %s" % (path, e.strerror or e))
        try:
            header = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise SafetensorsError("%s: safetensors header is not valid JSON (%s)" % (path, e))
        if not isinstance(header, dict):
            raise SafetensorsError("%s: safetensors header is not a JSON object" % path)
        self.metadata = header.pop("__metadata__", None) or {}
        self.data_start = 8 + n
        data_size = size - self.data_start
        self._info = {}
        for name, e in header.items():
            if not isinstance(e, dict):
                raise SafetensorsError("%s: bad header entry for %s" % (path, name))
            dtype, shape, offs = e.get("dtype"), e.get("shape"), e.get("data_offsets")
            if dtype not in DTYPE_SIZE:
                raise SafetensorsError("%s: tensor %s has unknown dtype %r" % (path, name, dtype))
            if (not isinstance(shape, list) or
                    not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)):
                raise SafetensorsError("%s: tensor %s has a bad shape %r" % (path, name, shape))
            if (not isinstance(offs, list) or len(offs) != 2 or
                    not all(isinstance(o, int) and not isinstance(o, bool) for o in offs)):
                raise SafetensorsError("%s: tensor %s has bad data_offsets %r" % (path, name, offs))
            begin, end = offs
            if not 0 <= begin <= end:
                raise SafetensorsError("%s: tensor %s has bad data_offsets %r" % (path, name, offs))
            if end > data_size:
                raise SafetensorsError("%s: truncated safetensors file: tensor %s ends at byte %d of "
                                       "the data, which holds only %d" % (path, name, end, data_size))
            count = 1
            for s in shape:
                count *= s
            if (end - begin) != count * DTYPE_SIZE[dtype]:
                raise SafetensorsError("%s: tensor %s holds %d bytes but %s %s needs %d"
                                       % (path, name, end - begin, dtype, shape,
                                          count * DTYPE_SIZE[dtype]))
            self._info[name] = (dtype, tuple(shape), begin, end)
        # no two tensors may share bytes (the reference reader demands the same): an
        # overlapping header would silently alias one tensor's data into another's
        spans = sorted((b, e, n) for n, (_, _, b, e) in self._info.items() if e > b)
        for (b0, e0, n0), (b1, e1, n1) in zip(spans, spans[1:]):
            if b1 < e0:
                raise SafetensorsError("%s: tensors %s [%d, %d) and %s [%d, %d) overlap in the "
                                       "data section" % (path, n0, b0, e0, n1, b1, e1))

    def names(self):
        return list(self._info)

    def __contains__(self, name):
        return name in self._info

    def info(self, name):
        """(dtype name, shape tuple)"""
        dtype, shape, _, _ = self._info[name]
        return dtype, shape

    def get(self, name):
        """The tensor as a float32 ndarray of its shape."""
        dtype, shape, begin, end = self._info[name]
        if dtype not in READABLE:
            raise SafetensorsError("%s: tensor %s has dtype %s; only %s are supported"
                                   % (self.path, name, dtype, ", ".join(READABLE)))
        try:
            with open(self.path, "rb") as f:
                f.seek(self.data_start + begin)
                raw = f.read(end - begin)
        except OSError as e:
            raise SafetensorsError("%s: %s" % (self.path, e.strerror or e))
        if len(raw) != end - begin:
            raise SafetensorsError("%s: truncated safetensors file while reading %s" % (self.path, name))
        if dtype == "F32":
            a = np.frombuffer(raw, dtype="<f4").astype(np.float32)
        elif dtype == "F16":
            a = np.frombuffer(raw, dtype="<f2").astype(np.float32)
        elif dtype == "F8_E4M3":
            a = E4M3[np.frombuffer(raw, dtype=np.uint8)]
        else:
            a = from_bf16_bits(np.frombuffer(raw, dtype="<u2"))
        return a.reshape(shape)


_NP_TO_ST = {
    np.dtype(np.float32): "F32", np.dtype(np.float16): "F16", np.dtype(np.float64): "F64",
    np.dtype(np.int8): "I8", np.dtype(np.uint8): "U8", np.dtype(np.int16): "I16",
    np.dtype(np.int32): "I32", np.dtype(np.int64): "I64", np.dtype(np.bool_): "BOOL",
}


def _encode(a, dtype):
    if dtype == "BF16":
        return to_bf16_bits(np.asarray(a, dtype=np.float32)).astype("<u2").tobytes()
    if dtype == "F8_E4M3":  # the caller gives the raw bytes as uint8
        return np.ascontiguousarray(a, dtype=np.uint8).tobytes()
    np_dt = {v: k for k, v in _NP_TO_ST.items()}.get(dtype)
    if np_dt is None:
        raise SafetensorsError("cannot write dtype %s" % dtype)
    return np.ascontiguousarray(a, dtype=np_dt.newbyteorder("<")).tobytes()


def save_file(tensors, path, dtypes=None, metadata=None):
    """Write {name: ndarray} as safetensors.

    The dtype of each tensor is `dtypes[name]` if given (e.g. "BF16", "F16", "F32",
    "I64"), else the array's own dtype. Tensors are written in name order, the header's
    keys sorted and the header padded with spaces to a multiple of 8 bytes, as the
    reference writer does; the bytes depend only on the arguments (train.py's HF export
    is sha-pinned in weights/training/hf_check.json)."""
    dtypes = dtypes or {}
    header, blobs, off = {}, [], 0
    if metadata is not None:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name in sorted(tensors):
        a = np.asarray(tensors[name])
        dt = dtypes.get(name) or _NP_TO_ST.get(a.dtype)
        if dt is None:
            raise SafetensorsError("cannot write numpy dtype %s" % a.dtype)
        data = _encode(a, dt)
        header[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    hjson = json.dumps(header, separators=(",", ":"), sort_keys=True).encode("utf-8")
    hjson += b" " * (-len(hjson) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for data in blobs:
            f.write(data)
