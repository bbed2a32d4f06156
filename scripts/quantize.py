#!/usr/bin/env python3
"""Re-encode a mixattn checkpoint in another weight type (docs/FORMAT.md).

    python3 scripts/quantize.py IN.bin OUT.bin --type q8_0|q4_0|bf16|f16|f32
                                [--keep PATTERN=TYPE ...] [--plain]

Every matrix is stored in --type; 1-D tensors (norms, biases) are f32; a matrix
whose rows are not a multiple of 32 values cannot hold a block type and becomes
bf16. Unless --plain is given, a few tensors are kept at higher precision by
default (measured in docs/QUANT.md):
    --type q4_0: the output head (`output`, or the tied `tok_embeddings`) -> q8_0
--keep overrides any tensor by fnmatch pattern, e.g. --keep 'tok_embeddings=bf16'
--keep '*.w_uk=bf16' (repeatable; the first matching pattern wins).

Streams: the input is memory-mapped and each tensor is decoded and re-encoded a
piece at a time, so memory stays bounded whatever the model size. OUT is written
to a temp file in its folder and renamed at the end: on any error, Ctrl-C or
SIGTERM nothing is left behind. Failures print one line `quantize: error: ...`
and exit 1. numpy and the standard library only.
"""
import argparse
import os
import signal
import sys


import mixformat

PROG = "quantize"
TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0")


def parse_keep(items):
    out = {}
    for item in items or ():
        pattern, sep, dt = item.rpartition("=")
        if not sep or not pattern or dt not in TYPES:
            raise mixformat.FormatError("--keep needs PATTERN=TYPE with TYPE one of %s, got %r"
                                        % ("|".join(TYPES), item))
        out[pattern] = dt
    return out


def quantize(src, dst, dtype, keep=None, plain=False, log=None):
    if os.path.isdir(dst):
        raise mixformat.FormatError("output %s is a directory" % dst)
    if os.path.exists(dst) and os.path.samefile(src, dst):
        raise mixformat.FormatError("output is the input file")
    cfg, layers, tensors, tok = mixformat.open_model(src)
    overrides = dict(keep or {})
    if not plain:
        for k, v in mixformat.default_overrides(dtype, cfg).items():
            overrides.setdefault(k, v)
    expected = mixformat.expected_tensors(cfg, layers)
    for pattern, dt in overrides.items():  # refuse impossible overrides before writing
        for name, shape in expected.items():
            mixformat.storage_dtype(name, shape, dtype, {pattern: dt})
    # the tokenizer travels unchanged: its kind, bytes and config blob
    tok_kind, tok_bytes, tok_config = mixformat.read_tokenizer(src)
    mixformat.write_model(dst, cfg, layers, tensors, tokenizer_bytes=tok_bytes, dtype=dtype,
                          overrides=overrides, tokenizer_kind=tok_kind,
                          tokenizer_config=tok_config or None)
    if log:
        kinds = {}
        for name, t in mixformat.open_model(dst)[2].items():
            kinds[t.dtype] = kinds.get(t.dtype, 0) + 1
        print("%s: wrote %s (%s; %s; %d bytes, was %d)" % (
            PROG, dst, dtype, ", ".join("%d %s" % (n, k) for k, n in sorted(kinds.items())),
            os.path.getsize(dst), os.path.getsize(src)), file=log)


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, "%s: error: %s (usage: %s IN.bin OUT.bin --type %s)\n"
                  % (PROG, message, os.path.basename(sys.argv[0]), "|".join(TYPES)))


def _on_sigterm(signum, frame):
    raise KeyboardInterrupt  # unwinds through write_model, which removes its temp file


def main(argv=None):
    ap = _Parser(prog=PROG, description="Re-encode a mixattn checkpoint (docs/QUANT.md).")
    ap.add_argument("src", metavar="IN.bin")
    ap.add_argument("dst", metavar="OUT.bin")
    ap.add_argument("--type", required=True, choices=TYPES, help="storage type of the matrices")
    ap.add_argument("--keep", action="append", metavar="PATTERN=TYPE",
                    help="store tensors matching PATTERN (fnmatch) in TYPE")
    ap.add_argument("--plain", action="store_true",
                    help="no default higher-precision tensors: every matrix in --type")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        quantize(args.src, args.dst, args.type, parse_keep(args.keep), args.plain, log=sys.stdout)
    except mixformat.FormatError as e:
        msg = str(e)
    except OSError as e:
        msg = "%s%s" % (e.strerror or e, ": %s" % e.filename if e.filename else "")
    except MemoryError:
        msg = "out of memory"
    except KeyboardInterrupt:
        msg = "interrupted; %s not written" % args.dst
    except Exception as e:  # no tracebacks for users; still one line
        msg = "internal error (%s): %s" % (type(e).__name__, e)
    else:
        return 0
    print("%s: error: %s" % (PROG, " ".join(msg.split())), file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
