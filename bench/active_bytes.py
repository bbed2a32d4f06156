#!/usr/bin/env python3
"""Bytes of weights one decode step reads, and which experts a run touched.

    bench/active_bytes.py MODEL.bin             active weight bytes per token (JSON)
    bench/active_bytes.py MODEL.bin --resident  also: per MoE layer, how many experts have
                                                pages in the page cache (run after
                                                `echo 1 > /proc/sys/vm/drop_caches` and a
                                                decode run: the experts the router chose)

Active bytes per token: every matrix of attention, dense and shared feed-forward, the
router, the output head, top_k of the n_experts routed experts (each expert's share of
the stacked experts.w1/w3/w2), norms, and ONE row of tok_embeddings (a lookup, not a
matmul). This is the denominator of decode's memory-bandwidth bound for a MoE model;
`./run --info`'s weight_bytes_per_token counts every expert.
"""
import ctypes
import json
import mmap
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
import mixformat  # noqa: E402

PAGE = mmap.PAGESIZE


def active_bytes(cfg, layers, tensors):
    total = 0
    per = {}
    for name, t in tensors.items():
        if name == "tok_embeddings":
            b = t.nbytes // t.shape[0]
        elif ".experts." in name:
            n = int(name.split(".")[1])
            b = t.nbytes * layers[n]["top_k"] // layers[n]["n_experts"]
        else:
            b = t.nbytes
        kind = name.split(".")[-1] if name.startswith("layers.") else name
        if ".experts." in name:
            kind = "experts (top_k)"
        elif ".shared." in name:
            kind = "shared experts"
        elif kind in ("w1", "w2", "w3"):
            kind = "dense ffn"
        elif kind in ("wq", "wq_a", "wq_b", "wkv_a", "w_uk", "w_uv", "wo", "wk", "wv"):
            kind = "attention"
        elif kind.endswith("norm") or kind.startswith("b"):
            kind = "norms+biases"
        per[kind] = per.get(kind, 0) + b
        total += b
    return total, per


def resident_experts(path, layers, tensors):
    """Per MoE layer: experts whose w1 rows have a page resident in the page cache."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    size = os.path.getsize(path)
    fd = os.open(path, os.O_RDONLY)
    addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
    os.close(fd)
    if addr in (None, ctypes.c_void_p(-1).value):
        sys.exit("active_bytes: mmap failed")
    vec = (ctypes.c_ubyte * ((size + PAGE - 1) // PAGE))()
    if libc.mincore(ctypes.c_void_p(addr), ctypes.c_size_t(size), vec) != 0:
        sys.exit("active_bytes: mincore failed (errno %d)" % ctypes.get_errno())
    out = {}
    for n, l in enumerate(layers):
        if l["ffn"] != "moe":
            continue
        t = tensors["layers.%d.experts.w1" % n]
        per = t.nbytes // l["n_experts"]
        hit = 0
        for e in range(l["n_experts"]):
            lo, hi = (t._off + e * per) // PAGE, (t._off + (e + 1) * per - 1) // PAGE
            # an expert counts as used when most of its pages are resident (readahead may
            # bring in the edge of a neighbour)
            if sum(vec[p] & 1 for p in range(lo, hi + 1)) * 2 > hi - lo + 1:
                hit += 1
        out[n] = hit
    return out


def main():
    if len(sys.argv) not in (2, 3) or (len(sys.argv) == 3 and sys.argv[2] != "--resident"):
        sys.exit("usage: active_bytes.py MODEL.bin [--resident]")
    cfg, layers, tensors, _ = mixformat.open_model(sys.argv[1])
    total, per = active_bytes(cfg, layers, tensors)
    r = dict(active_weight_bytes_per_token=total, by_part=per)
    if len(sys.argv) == 3:
        res = resident_experts(sys.argv[1], layers, tensors)
        r["resident_experts_per_moe_layer"] = res
        if res:
            r["resident_experts_mean"] = sum(res.values()) / len(res)
    print(json.dumps(r))


if __name__ == "__main__":
    main()
