#!/usr/bin/env python3
"""Convert a Hugging Face checkpoint folder into a mixattn .bin (docs/FORMAT.md).

    python3 scripts/convert_hf.py HF_DIR OUT.bin [--dtype f32|f16|bf16|q8_0|q4_0]

Supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM,
Qwen3ForCausalLM (GQA-family layers: MHA, GQA or MQA; Qwen3 with its per-head
q/k norms), MixtralForCausalLM and Qwen3MoeForCausalLM (mixture-of-experts
feed-forwards), and DeepseekV2ForCausalLM / DeepseekV3ForCausalLM (MLA layers,
dense or mixture-of-experts, V3's fp8 e4m3 block-scaled weights dequantized
exactly). See docs/CONVERT.md for the mapping, the RoPE layout choice and what
is refused.

numpy and the standard library only. Every failure prints one line
`convert_hf: error: ...` and exits 1 without creating OUT (the file is written
by mixformat.write_model, atomically).
"""
import argparse
import json
import math
import os
import re
import signal
import sys


import numpy as np

import mixformat
import safetensors_np as st

PROG = "convert_hf"

ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "mistral",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
    "Qwen3MoeForCausalLM": "qwen3_moe",
    "MixtralForCausalLM": "mixtral",
    "DeepseekV2ForCausalLM": "deepseek_v2",
    "DeepseekV3ForCausalLM": "deepseek_v3",
}
MODEL_TYPES = {v: v for v in ARCHITECTURES.values()}
GQA_FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "qwen3_moe", "mixtral")
MLA_FAMILIES = ("deepseek_v2", "deepseek_v3")

# transformers config-class defaults for the ids (used only when the key is absent)
DEFAULT_IDS = {"llama": (1, 2), "mistral": (1, 2), "qwen2": (None, None),
               "qwen3": (None, None), "qwen3_moe": (None, None), "mixtral": (1, 2),
               "deepseek_v2": (1, 2), "deepseek_v3": (0, 1)}
DEFAULT_MAX_POS = 2048
U32_MAX = 2 ** 32 - 1


class ConvertError(Exception):
    pass


# --------------------------------------------------------------------------- config access

_MISSING = object()


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def cfg_int(cfg, key, default=_MISSING, minimum=1, none_ok=False):
    """An integer config value; absent -> default (error if none); null -> None if none_ok."""
    if key not in cfg:
        if default is _MISSING:
            raise ConvertError("config.json lacks %s" % key)
        return default
    v = cfg[key]
    if v is None:
        if none_ok:
            return None
        if default is not _MISSING:
            return default
        raise ConvertError("config.json: %s is null" % key)
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if not _is_int(v) or v < minimum or v > U32_MAX:
        raise ConvertError("config.json: %s must be an integer >= %d, got %r" % (key, minimum, v))
    return v


def num(v, what, positive=False, default=None):
    """A finite float from a config value; None -> default."""
    if v is None:
        if default is None:
            raise ConvertError("%s is missing or null" % what)
        return float(default)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ConvertError("%s must be a number, got %r" % (what, v))
    if positive and v <= 0:
        raise ConvertError("%s must be positive, got %r" % (what, v))
    return float(v)


def cfg_bool(cfg, key, default=False):
    v = cfg.get(key, default)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise ConvertError("config.json: %s must be true or false, got %r" % (key, v))
    return v


def token_id(cfg, key, default):
    v = cfg.get(key, default)
    if isinstance(v, list):
        v = v[0] if v else None
    if v is None:
        return -1
    if not _is_int(v) or v < 0 or v >= 2 ** 31:
        raise ConvertError("config.json: %s must be a token id, got %r" % (key, v))
    return v


def load_config(hf_dir):
    if not os.path.isdir(hf_dir):
        raise ConvertError("%s is not a directory" % hf_dir)
    path = os.path.join(hf_dir, "config.json")
    if not os.path.isfile(path):
        raise ConvertError("no config.json in %s" % hf_dir)
    try:
        with open(path, "rb") as f:
            cfg = json.loads(f.read().decode("utf-8"))
    except OSError as e:
        raise ConvertError("cannot read %s: %s" % (path, e.strerror or e))
    except (UnicodeDecodeError, ValueError) as e:
        raise ConvertError("%s is not valid JSON: %s" % (path, e))
    if not isinstance(cfg, dict):
        raise ConvertError("%s is not a JSON object" % path)
    return cfg


def family_of(cfg):
    archs = cfg.get("architectures")
    if isinstance(archs, list) and archs:
        a = archs[0]
        if a not in ARCHITECTURES:
            raise ConvertError("unsupported architecture %r (supported: %s)"
                               % (a, ", ".join(ARCHITECTURES)))
        return ARCHITECTURES[a]
    mt = cfg.get("model_type")
    if mt is None:
        raise ConvertError("config.json names no architecture (neither 'architectures' nor 'model_type')")
    if mt not in MODEL_TYPES:
        raise ConvertError("unsupported model_type %r (supported: %s)" % (mt, ", ".join(MODEL_TYPES)))
    return MODEL_TYPES[mt]


# --------------------------------------------------------------------------- RoPE

def rope_settings(cfg, max_pos):
    """-> (theta, rope_scaling dict for mixformat, params dict).

    Old form: top-level rope_theta, rope_scaling {"type"|"rope_type", ...}.
    transformers-5 form: rope_parameters {"rope_theta", "rope_type", ...}.
    As in transformers 5, a non-empty legacy rope_scaling wins over rope_parameters."""
    for key in ("rope_scaling", "rope_parameters"):
        if cfg.get(key) is not None and not isinstance(cfg[key], dict):
            raise ConvertError("config.json: %s must be an object or null" % key)
    p = cfg.get("rope_scaling") or cfg.get("rope_parameters") or {}
    if p and all(isinstance(v, dict) for v in p.values()):
        raise ConvertError("per-layer-type rope parameters (%s) are not supported"
                           % ", ".join(sorted(p)))
    theta = num(p.get("rope_theta", cfg.get("rope_theta")), "rope_theta", positive=True,
                default=10000.0)
    rtype = p.get("rope_type", p.get("type")) or "default"
    where = "rope %s" % rtype
    if rtype in ("default", "none"):
        return theta, None, p
    if rtype == "linear":
        return theta, dict(type="linear", factor=num(p.get("factor"), where + " factor",
                                                     positive=True)), p
    if rtype == "llama3":
        orig = p.get("original_max_position_embeddings")
        if not _is_int(orig) or orig <= 0:
            raise ConvertError("rope llama3 needs original_max_position_embeddings, got %r" % (orig,))
        lo = num(p.get("low_freq_factor"), where + " low_freq_factor", positive=True)
        hi = num(p.get("high_freq_factor"), where + " high_freq_factor", positive=True)
        if lo == hi:
            raise ConvertError("rope llama3: low_freq_factor equals high_freq_factor (%g)" % lo)
        return theta, dict(type="llama3", factor=num(p.get("factor"), where + " factor", positive=True),
                           low_freq_factor=lo, high_freq_factor=hi,
                           original_max_position_embeddings=orig), p
    if rtype == "yarn":
        orig = p.get("original_max_position_embeddings")
        if orig is None:
            orig = max_pos
        if not _is_int(orig) or orig <= 0:
            raise ConvertError("rope yarn: original_max_position_embeddings must be a positive "
                               "integer, got %r" % (orig,))
        factor = p.get("factor")
        factor = max_pos / orig if factor is None else num(factor, where + " factor", positive=True)
        if p.get("truncate", True) is False:
            raise ConvertError("rope yarn with truncate=false is not supported")
        return theta, dict(
            type="yarn", factor=float(factor), original_max_position_embeddings=orig,
            beta_fast=num(p.get("beta_fast"), where + " beta_fast", default=32.0),
            beta_slow=num(p.get("beta_slow"), where + " beta_slow", default=1.0),
            mscale=num(p.get("mscale"), where + " mscale", default=0.0),
            mscale_all_dim=num(p.get("mscale_all_dim"), where + " mscale_all_dim", default=0.0),
            attention_factor=num(p.get("attention_factor"), where + " attention_factor",
                                 default=0.0)), p
    raise ConvertError("unsupported rope type %r (supported: default, linear, llama3, yarn)"
                       % (rtype,))


# --------------------------------------------------------------------------- weights

class Weights:
    """Every tensor of model.safetensors or of the shards named by model.safetensors.index.json."""

    def __init__(self, hf_dir):
        single = os.path.join(hf_dir, "model.safetensors")
        index = os.path.join(hf_dir, "model.safetensors.index.json")
        self.where = {}
        try:
            if os.path.isfile(single):
                f = st.SafetensorsFile(single)
                for name in f.names():
                    self.where[name] = f
            elif os.path.isfile(index):
                self._open_index(hf_dir, index)
            else:
                other = [n for n in ("pytorch_model.bin", "pytorch_model.bin.index.json",
                                     "consolidated.00.pth") if os.path.exists(os.path.join(hf_dir, n))]
                hint = (" (found %s: PyTorch pickles are not supported; save as safetensors)"
                        % other[0]) if other else ""
                raise ConvertError("no model.safetensors or model.safetensors.index.json in %s%s"
                                   % (hf_dir, hint))
        except st.SafetensorsError as e:
            raise ConvertError(str(e))

    def _open_index(self, hf_dir, index):
        try:
            with open(index, "rb") as fh:
                idx = json.loads(fh.read().decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise ConvertError("%s is not valid JSON: %s" % (index, e))
        wm = idx.get("weight_map") if isinstance(idx, dict) else None
        if not isinstance(wm, dict) or not wm:
            raise ConvertError("%s has no weight_map" % index)
        files = {}
        for name, fname in wm.items():
            if not isinstance(fname, str) or os.path.basename(fname) != fname:
                raise ConvertError("%s: bad shard file name %r for %s" % (index, fname, name))
            if fname not in files:
                path = os.path.join(hf_dir, fname)
                if not os.path.isfile(path):
                    raise ConvertError("shard %s named by %s is missing" % (fname, index))
                files[fname] = st.SafetensorsFile(path)
            if name not in files[fname]:
                raise ConvertError("tensor %s is listed in %s but is not in %s" % (name, index, fname))
            self.where[name] = files[fname]

    def __contains__(self, name):
        return name in self.where

    def names(self):
        return list(self.where)

    def info(self, name):
        return self.where[name].info(name)

    def get(self, name):
        """float32 array; an fp8 tensor comes dequantized with its <name>_scale_inv."""
        try:
            a = self.where[name].get(name)
            if self.info(name)[0] == FP8:
                a = fp8_dequantize(a, self.where[name + "_scale_inv"].get(name + "_scale_inv"),
                                   self.fp8_block)
            return a
        except st.SafetensorsError as e:
            raise ConvertError(str(e))

    fp8_block = None  # (rows, cols) of a scale block, from quantization_config


FP8 = "F8_E4M3"


def fp8_dequantize(w8, scale_inv, block):
    """W[i, j] = W8[i, j] * scale_inv[i // b0, j // b1], one float32 product per weight
    (edge blocks partial), as DeepSeek's weight_dequant / fp8_cast_bf16 do."""
    b0, b1 = block
    R, C = w8.shape
    s = np.asarray(scale_inv, dtype=np.float32)
    full = np.repeat(np.repeat(s, b0, axis=0)[:R], b1, axis=1)[:, :C]
    return (np.asarray(w8, dtype=np.float32) * full).astype(np.float32)


def fp8_settings(cfg):
    """The fp8 block size from quantization_config, or None for unquantized checkpoints."""
    qc = cfg.get("quantization_config")
    if qc is None:
        return None
    if not isinstance(qc, dict):
        raise ConvertError("config.json: quantization_config must be an object")
    method = qc.get("quant_method")
    if method != "fp8":
        raise ConvertError("quantization_config quant_method %r is not supported (only fp8)"
                           % (method,))
    if qc.get("fmt", "e4m3") != "e4m3":
        raise ConvertError("fp8 format %r is not supported (only e4m3)" % (qc.get("fmt"),))
    b = qc.get("weight_block_size")
    if (not isinstance(b, list) or len(b) != 2 or
            not all(_is_int(x) and 0 < x <= U32_MAX for x in b)):
        raise ConvertError("quantization_config.weight_block_size must be two positive integers, "
                           "got %r" % (b,))
    return tuple(b)


class Lazy:
    """A tensor read from the checkpoint only when write_model encodes it."""

    def __init__(self, shape, fn):
        self.shape = tuple(shape)
        self._fn = fn

    def __array__(self, dtype=None, copy=None):
        a = np.asarray(self._fn(), dtype=np.float32)
        if a.shape != self.shape:  # cannot happen after the checks in plan()
            raise ConvertError("internal: %s read as %s" % (self.shape, a.shape))
        return a if dtype is None else a.astype(dtype, copy=False)


class LazyStack:
    """[E, ...] stacked from E checkpoint tensors, read one at a time when written."""

    def __init__(self, shape, fns):
        self.shape = tuple(shape)
        self._fns = fns

    def iter_rows(self):
        for fn in self._fns:
            a = np.asarray(fn(), dtype=np.float32)
            if a.shape != self.shape[1:]:
                raise ConvertError("internal: %s read as %s" % (self.shape[1:], a.shape))
            yield a

    def __array__(self, dtype=None, copy=None):
        a = np.stack(list(self.iter_rows()))
        return a if dtype is None else a.astype(dtype, copy=False)


# --------------------------------------------------------------------------- the plan

class Spec:
    """One output tensor: from HF tensor `src` of shape `src_shape`, optionally transformed;
    or (`stack`) the HF tensors `src` (a list), each of `src_shape`, stacked on a new axis 0."""

    def __init__(self, dst, src, src_shape, shape=None, fn=None, stack=False):
        self.dst, self.src, self.src_shape = dst, src, tuple(src_shape)
        self.stack = stack
        if stack:
            self.shape = (len(src),) + self.src_shape
        else:
            self.shape = tuple(shape) if shape is not None else self.src_shape
        self.fn = fn

    def sources(self):
        return list(self.src) if self.stack else [self.src]


def common_sizes(cfg):
    return dict(D=cfg_int(cfg, "hidden_size"), L=cfg_int(cfg, "num_hidden_layers"),
                H=cfg_int(cfg, "num_attention_heads"), I=cfg_int(cfg, "intermediate_size"),
                V=cfg_int(cfg, "vocab_size"))


def check_act(cfg):
    act = cfg.get("hidden_act", "silu")
    if act is None:
        act = "silu"
    if act not in ("silu", "swish"):  # transformers' ACT2FN maps both to SiLU
        raise ConvertError("hidden_act %r is not supported (only silu)" % (act,))


def ffn_specs(p, hp, D, I, bias):
    s = norm_specs(p, hp, D) + [
         Spec(p + "w1", hp + "mlp.gate_proj.weight", (I, D)),
         Spec(p + "w3", hp + "mlp.up_proj.weight", (I, D)),
         Spec(p + "w2", hp + "mlp.down_proj.weight", (D, I))]
    if bias:
        s += [Spec(p + "b1", hp + "mlp.gate_proj.bias", (I,)),
              Spec(p + "b3", hp + "mlp.up_proj.bias", (I,)),
              Spec(p + "b2", hp + "mlp.down_proj.bias", (D,))]
    return s


def norm_specs(p, hp, D):
    return [Spec(p + "attn_norm", hp + "input_layernorm.weight", (D,)),
            Spec(p + "ffn_norm", hp + "post_attention_layernorm.weight", (D,))]


def moe_specs(p, hp, D, E, Ie, Is, mod="mlp", names=("gate_proj", "up_proj", "down_proj"),
              router_bias=False, shared="shared_experts"):
    """Router, stacked routed experts and shared expert of one MoE layer (hub names)."""
    m = hp + mod + "."
    g, u, d = names
    ex = [m + "experts.%d." % e for e in range(E)]
    s = [Spec(p + "router", m + "gate.weight", (E, D)),
         Spec(p + "experts.w1", [x + g + ".weight" for x in ex], (Ie, D), stack=True),
         Spec(p + "experts.w3", [x + u + ".weight" for x in ex], (Ie, D), stack=True),
         Spec(p + "experts.w2", [x + d + ".weight" for x in ex], (D, Ie), stack=True)]
    if router_bias:
        s.append(Spec(p + "router_bias", m + "gate.e_score_correction_bias", (E,)))
    if Is:
        s += [Spec(p + "shared.w1", m + shared + ".gate_proj.weight", (Is, D)),
              Spec(p + "shared.w3", m + shared + ".up_proj.weight", (Is, D)),
              Spec(p + "shared.w2", m + shared + ".down_proj.weight", (D, Is))]
    return s


def check_router(what, E, K, G=1, TG=1, method="greedy"):
    if K > E:
        raise ConvertError("%s: num_experts_per_tok %d > the number of experts %d" % (what, K, E))
    if E % G:
        raise ConvertError("%s: the number of experts %d is not divisible by n_group %d"
                           % (what, E, G))
    if TG > G:
        raise ConvertError("%s: topk_group %d > n_group %d" % (what, TG, G))
    if K > TG * (E // G):
        raise ConvertError("%s: num_experts_per_tok %d is more than the %d experts of the %d "
                           "groups kept (topk_group)" % (what, K, TG * (E // G), TG))
    if method == "noaux_tc" and E // G < 2:
        raise ConvertError("%s: noaux_tc needs at least 2 experts per group (n_group %d, %d "
                           "experts)" % (what, G, E))


def moe_ffn(E, K, Ie, Is=0, scoring="softmax", method="greedy", G=1, TG=1, norm=False,
            scale=1.0):
    return dict(ffn="moe", n_experts=E, top_k=K, expert_hidden=Ie, shared_hidden=Is,
                scoring=scoring, topk_method=method, n_group=G, topk_group=TG,
                norm_topk_prob=norm, routed_scaling_factor=scale)


def gqa_ffn_plan(cfg, family, L, D, I, mlp_bias):
    """-> per layer (ffn dict, specs builder(p, hp)) for the GQA families."""
    if family == "mixtral":
        E = cfg_int(cfg, "num_local_experts", default=8)
        K = cfg_int(cfg, "num_experts_per_tok", default=2)
        check_router("mixtral", E, K)
        f = moe_ffn(E, K, I, norm=True)  # softmax, top-k, renormalised
        return [(f, lambda p, hp: norm_specs(p, hp, D) + moe_specs(
            p, hp, D, E, I, 0, mod="block_sparse_moe", names=("w1", "w3", "w2")))
            for _ in range(L)]
    if family == "qwen3_moe":
        # hub configs say num_experts; transformers 5 saves it as num_local_experts
        key = "num_experts" if "num_experts" in cfg else "num_local_experts"
        E = cfg_int(cfg, key, default=128, minimum=0, none_ok=True) or 0
        if "num_experts" in cfg and "num_local_experts" in cfg and \
                cfg["num_experts"] != cfg["num_local_experts"]:
            raise ConvertError("config.json: num_experts %r and num_local_experts %r disagree"
                               % (cfg["num_experts"], cfg["num_local_experts"]))
        K = cfg_int(cfg, "num_experts_per_tok", default=8)
        Ie = cfg_int(cfg, "moe_intermediate_size", default=768)
        step = cfg_int(cfg, "decoder_sparse_step", default=1)
        only = cfg.get("mlp_only_layers") or []
        if not isinstance(only, list) or not all(_is_int(x) for x in only):
            raise ConvertError("config.json: mlp_only_layers must be a list of layer indices")
        if E:
            check_router("qwen3_moe", E, K)
        f = moe_ffn(E, K, Ie, norm=cfg_bool(cfg, "norm_topk_prob", False))
        plan = []
        for n in range(L):
            if E and n not in only and (n + 1) % step == 0:
                plan.append((f, lambda p, hp: norm_specs(p, hp, D) + moe_specs(
                    p, hp, D, E, Ie, 0)))
            else:
                plan.append((dict(ffn="dense", hidden_dim=I),
                             lambda p, hp: ffn_specs(p, hp, D, I, mlp_bias)))
        return plan
    return [(dict(ffn="dense", hidden_dim=I), lambda p, hp: ffn_specs(p, hp, D, I, mlp_bias))
            for _ in range(L)]


def deepseek_ffn_plan(cfg, family, L, D, I, mlp_bias):
    """-> per layer (ffn dict, specs builder) for DeepSeek-V2/V3 (notes 4.1, 4.5)."""
    v3 = family == "deepseek_v3"
    dense = [(dict(ffn="dense", hidden_dim=I), lambda p, hp: ffn_specs(p, hp, D, I, mlp_bias))
             for _ in range(L)]
    E = cfg_int(cfg, "n_routed_experts", default=256 if v3 else 64, minimum=0, none_ok=True) or 0
    fkd = cfg_int(cfg, "first_k_dense_replace", default=3 if v3 else 0, minimum=0,
                  none_ok=True) or 0
    if not E or fkd >= L:
        return dense
    freq = cfg_int(cfg, "moe_layer_freq", default=1, none_ok=True) or 1
    if freq != 1:
        raise ConvertError("moe_layer_freq %d is not supported (transformers ignores it, "
                           "DeepSeek's own code does not)" % freq)
    if mlp_bias:
        raise ConvertError("mlp_bias with mixture-of-experts layers is not supported")
    K = cfg_int(cfg, "num_experts_per_tok", default=8 if v3 else None, none_ok=True)
    if K is None:
        raise ConvertError("config.json lacks num_experts_per_tok (layer %d is "
                           "mixture-of-experts)" % fkd)
    Ie = cfg_int(cfg, "moe_intermediate_size", default=2048 if v3 else 1407)
    Ns = cfg_int(cfg, "n_shared_experts", default=1 if v3 else 2, minimum=0, none_ok=True) or 0
    scale = num(cfg.get("routed_scaling_factor"), "routed_scaling_factor", positive=True,
                default=2.5 if v3 else 1.0)
    method = cfg.get("topk_method", "noaux_tc" if v3 else "greedy")
    scoring = cfg.get("scoring_func", "sigmoid" if v3 else "softmax")
    if v3:
        if method != "noaux_tc":
            raise ConvertError("unknown routing method topk_method=%r for DeepseekV3 (only "
                               "noaux_tc)" % (method,))
        if scoring != "sigmoid":
            raise ConvertError("scoring_func %r is not supported for DeepseekV3 (only sigmoid)"
                               % (scoring,))
        G = cfg_int(cfg, "n_group", default=8)
        TG = cfg_int(cfg, "topk_group", default=4)
        norm = cfg_bool(cfg, "norm_topk_prob", True)
    else:
        if method not in ("greedy", "group_limited_greedy"):
            raise ConvertError("unknown routing method topk_method=%r for DeepseekV2 (greedy or "
                               "group_limited_greedy)" % (method,))
        if scoring != "softmax":
            raise ConvertError("scoring_func %r is not supported for DeepseekV2 (only softmax)"
                               % (scoring,))
        if method == "group_limited_greedy":
            G, TG = cfg_int(cfg, "n_group"), cfg_int(cfg, "topk_group")
        else:
            G = TG = 1
        norm = False  # transformers' DeepseekV2TopkRouter never normalises (notes 4.5)
    check_router(family, E, K, G, TG, method)
    f = moe_ffn(E, K, Ie, Ns * Ie, "sigmoid" if v3 else "softmax", method, G, TG, norm, scale)
    return [dense[n] if n < fkd else
            (f, lambda p, hp: norm_specs(p, hp, D) + moe_specs(p, hp, D, E, Ie, Ns * Ie,
                                                              router_bias=v3))
            for n in range(L)]


def sliding_window_of(cfg, family, L):
    if family == "mistral":
        # MistralConfig's class default is 4096; null means no window
        w = cfg_int(cfg, "sliding_window", default=4096, none_ok=True)
        return w or 0
    if family == "mixtral":
        return cfg_int(cfg, "sliding_window", default=None, none_ok=True) or 0
    if family in ("qwen2", "qwen3", "qwen3_moe"):
        if not cfg_bool(cfg, "use_sliding_window", False):
            return 0
        w = cfg_int(cfg, "sliding_window", default=4096, none_ok=True)
        if w is None:
            return 0
        types = cfg.get("layer_types")
        if types is None:
            mwl = cfg_int(cfg, "max_window_layers", default=28, minimum=0)
            types = ["sliding_attention" if i >= mwl else "full_attention" for i in range(L)]
        if not isinstance(types, list) or len(types) != L:
            raise ConvertError("config.json: layer_types must list %d layers" % L)
        n_sliding = sum(1 for t in types if t == "sliding_attention")
        if n_sliding == 0:
            return 0
        if n_sliding != L:
            raise ConvertError(
                "use_sliding_window with %d of %d layers sliding (max_window_layers=%r) is not "
                "supported: the format has one window for every layer"
                % (n_sliding, L, cfg.get("max_window_layers", 28)))
        return w
    return 0


def plan_gqa(cfg, family):
    z = common_sizes(cfg)
    D, L, H, I, V = z["D"], z["L"], z["H"], z["I"], z["V"]
    Hkv = cfg_int(cfg, "num_key_value_heads", default=H, none_ok=True) or H
    if H % Hkv:
        raise ConvertError("num_attention_heads %d is not a multiple of num_key_value_heads %d"
                           % (H, Hkv))
    # Qwen3's config class defaults head_dim to 128; the others derive it
    d = cfg_int(cfg, "head_dim", default=128 if family in ("qwen3", "qwen3_moe") else None,
                none_ok=True)
    if d is None:
        if D % H:
            raise ConvertError("hidden_size %d is not a multiple of num_attention_heads %d and "
                               "config.json gives no head_dim" % (D, H))
        d = D // H
    max_pos = cfg_int(cfg, "max_position_embeddings", default=DEFAULT_MAX_POS)
    theta, scaling, rp = rope_settings(cfg, max_pos)
    prf = num(rp.get("partial_rotary_factor", cfg.get("partial_rotary_factor")),
              "partial_rotary_factor", positive=True, default=1.0)
    r = int(d * prf)
    if r <= 0 or r > d or r % 2:
        raise ConvertError("rotary width int(head_dim %d x partial_rotary_factor %g) = %d must be "
                           "even and in [2, head_dim]" % (d, prf, r))
    if family == "llama":
        ab = cfg_bool(cfg, "attention_bias")
        qb = kb = vb = ob = ab
        mlp_bias = cfg_bool(cfg, "mlp_bias")
    elif family == "qwen2":
        qb = kb = vb = True
        ob = False
        mlp_bias = False
    elif family in ("qwen3", "qwen3_moe"):
        qb = kb = vb = ob = cfg_bool(cfg, "attention_bias")
        mlp_bias = False
    else:  # mistral, mixtral: bias-free everywhere
        qb = kb = vb = ob = mlp_bias = False
    qk_norm = family in ("qwen3", "qwen3_moe")
    layer = dict(kind="gqa", n_heads=H, n_kv_heads=Hkv, head_dim=d, rope_dim=r,
                 q_bias=qb, k_bias=kb, v_bias=vb, o_bias=ob, qk_norm=qk_norm)
    ffn_plan = gqa_ffn_plan(cfg, family, L, D, I, mlp_bias)
    specs, layers = [], []
    for n in range(L):
        p, hp = "layers.%d." % n, "model.layers.%d." % n
        a = hp + "self_attn."
        specs += [Spec(p + "wq", a + "q_proj.weight", (H * d, D)),
                  Spec(p + "wk", a + "k_proj.weight", (Hkv * d, D)),
                  Spec(p + "wv", a + "v_proj.weight", (Hkv * d, D)),
                  Spec(p + "wo", a + "o_proj.weight", (D, H * d))]
        if qb:
            specs.append(Spec(p + "bq", a + "q_proj.bias", (H * d,)))
        if kb:
            specs.append(Spec(p + "bk", a + "k_proj.bias", (Hkv * d,)))
        if vb:
            specs.append(Spec(p + "bv", a + "v_proj.bias", (Hkv * d,)))
        if ob:
            specs.append(Spec(p + "bo", a + "o_proj.bias", (D,)))
        if qk_norm:
            specs += [Spec(p + "q_norm", a + "q_norm.weight", (d,)),
                      Spec(p + "k_norm", a + "k_norm.weight", (d,))]
        f, fspecs = ffn_plan[n]
        specs += fspecs(p, hp)
        layers.append(dict(layer, **f))
    mcfg = dict(dim=D, n_layers=L, vocab_size=V, max_seq_len=max_pos, hidden_dim=I,
                mlp_bias=mlp_bias, rope_theta=theta, rope_pairing="neox",
                rope_scaling=scaling, sliding_window=sliding_window_of(cfg, family, L))
    return mcfg, layers, specs


def plan_mla(cfg, family):
    z = common_sizes(cfg)
    D, L, H, I, V = z["D"], z["L"], z["H"], z["I"], z["V"]
    dq = cfg_int(cfg, "q_lora_rank", default=1536, minimum=0, none_ok=True) or 0
    dc = cfg_int(cfg, "kv_lora_rank", default=512)
    dn = cfg_int(cfg, "qk_nope_head_dim", default=128)
    dr = cfg_int(cfg, "qk_rope_head_dim", default=64)
    dv = cfg_int(cfg, "v_head_dim", default=128)
    if dr % 2:
        raise ConvertError("qk_rope_head_dim %d is odd" % dr)
    max_pos = cfg_int(cfg, "max_position_embeddings", default=DEFAULT_MAX_POS)
    theta, scaling, _ = rope_settings(cfg, max_pos)
    pairing = "interleaved"
    if family == "deepseek_v3" and not cfg_bool(cfg, "rope_interleave", True):
        pairing = "neox"
    ab = cfg_bool(cfg, "attention_bias")
    # transformers' DeepseekV2MLP is LlamaMLP (honours mlp_bias); V3's MLP has no biases
    mlp_bias = family == "deepseek_v2" and cfg_bool(cfg, "mlp_bias")
    layer = dict(kind="mla", n_heads=H, q_lora_rank=dq, kv_lora_rank=dc, qk_nope_head_dim=dn,
                 qk_rope_head_dim=dr, v_head_dim=dv,
                 q_bias=ab and dq > 0,  # transformers: q_proj never has a bias, q_a_proj does
                 kv_bias=ab, o_bias=ab)
    ffn_plan = deepseek_ffn_plan(cfg, family, L, D, I, mlp_bias)
    specs, layers = [], []
    for n in range(L):
        p, hp = "layers.%d." % n, "model.layers.%d." % n
        a = hp + "self_attn."
        if dq == 0:
            specs.append(Spec(p + "wq", a + "q_proj.weight", (H * (dn + dr), D)))
        else:
            specs += [Spec(p + "wq_a", a + "q_a_proj.weight", (dq, D)),
                      Spec(p + "q_a_norm", a + "q_a_layernorm.weight", (dq,)),
                      Spec(p + "wq_b", a + "q_b_proj.weight", (H * (dn + dr), dq))]
            if ab:
                specs.append(Spec(p + "bq_a", a + "q_a_proj.bias", (dq,)))
        specs += [Spec(p + "wkv_a", a + "kv_a_proj_with_mqa.weight", (dc + dr, D)),
                  Spec(p + "kv_a_norm", a + "kv_a_layernorm.weight", (dc,)),
                  Spec(p + "w_uk", a + "kv_b_proj.weight", (H * (dn + dv), dc), (H, dn, dc),
                       lambda w, H=H, dn=dn, dv=dv, dc=dc: w.reshape(H, dn + dv, dc)[:, :dn, :]),
                  Spec(p + "w_uv", a + "kv_b_proj.weight", (H * (dn + dv), dc), (H, dv, dc),
                       lambda w, H=H, dn=dn, dv=dv, dc=dc: w.reshape(H, dn + dv, dc)[:, dn:, :]),
                  Spec(p + "wo", a + "o_proj.weight", (D, H * dv))]
        if ab:
            specs += [Spec(p + "bkv_a", a + "kv_a_proj_with_mqa.bias", (dc + dr,)),
                      Spec(p + "bo", a + "o_proj.bias", (D,))]
        f, fspecs = ffn_plan[n]
        specs += fspecs(p, hp)
        layers.append(dict(layer, **f))
    mcfg = dict(dim=D, n_layers=L, vocab_size=V, max_seq_len=max_pos, hidden_dim=I,
                mlp_bias=mlp_bias, rope_theta=theta, rope_pairing=pairing,
                rope_scaling=scaling, sliding_window=0)
    return mcfg, layers, specs


_LAYER_RE = re.compile(r"^model\.layers\.(\d+)\.")


def build(cfg, weights):
    """-> (mixformat cfg, layers, {name: Lazy}, {name: HF name}, summary string).

    Checks everything (names, dtypes, shapes, leftovers) before any data is read."""
    family = family_of(cfg)
    check_act(cfg)
    if family in GQA_FAMILIES:
        mcfg, layers, specs = plan_gqa(cfg, family)
    else:
        mcfg, layers, specs = plan_mla(cfg, family)
    D, V = mcfg["dim"], mcfg["vocab_size"]
    tied = cfg_bool(cfg, "tie_word_embeddings", False)
    specs = [Spec("tok_embeddings", "model.embed_tokens.weight", (V, D)),
             Spec("norm", "model.norm.weight", (D,))] + specs
    if not tied:
        specs.append(Spec("output", "lm_head.weight", (V, D)))
    bos_d, eos_d = DEFAULT_IDS[family]
    mcfg.update(tied=tied, norm_eps=num(cfg.get("rms_norm_eps"), "rms_norm_eps", positive=True,
                                        default=1e-6),
                bos_id=token_id(cfg, "bos_token_id", bos_d),
                eos_id=token_id(cfg, "eos_token_id", eos_d))

    for key, what in (("bos_id", "bos_token_id"), ("eos_id", "eos_token_id")):
        if mcfg[key] >= V:
            raise ConvertError("config.json: %s %d is outside the vocabulary (vocab_size %d)"
                               % (what, mcfg[key], V))
    if mcfg["max_seq_len"] > mixformat.MAX_SIZE:
        raise ConvertError("config.json: max_position_embeddings %d is above what the runtime "
                           "accepts (%d)" % (mcfg["max_seq_len"], mixformat.MAX_SIZE))
    try:
        mixformat.check_config(mixformat.defaults(mcfg))
    except mixformat.FormatError as e:
        raise ConvertError("config.json: %s" % e)

    for s in specs:
        for src in s.sources():
            if src not in weights:
                raise ConvertError("missing tensor %s (needed for %s)" % (src, s.dst))
    block = fp8_settings(cfg)
    weights.fp8_block = block
    used = set()
    for s in specs:
        for src in s.sources():
            used.add(src)
            dtype, shape = weights.info(src)
            if dtype not in st.READABLE:
                raise ConvertError("tensor %s has dtype %s; only %s are supported"
                                   % (src, dtype, ", ".join(st.READABLE)))
            if tuple(shape) != s.src_shape:
                raise ConvertError("tensor %s has shape %s but config.json implies %s"
                                   % (src, list(shape), list(s.src_shape)))
            if dtype == FP8:
                check_fp8(weights, src, shape, block)
                used.add(src + "_scale_inv")
    L = mcfg["n_layers"]
    for name in weights.names():
        if name in used or ".rotary_emb." in name or name.endswith("rotary_emb.inv_freq"):
            continue
        m = _LAYER_RE.match(name)
        if m and int(m.group(1)) >= L:
            continue  # e.g. DeepSeek-V3's multi-token-prediction layer
        if name == "lm_head.weight" and tied:
            continue  # tied: transformers ties it to the embedding anyway
        raise ConvertError("unexpected tensor %s: config.json (%s) has no use for it"
                           % (name, family))

    def reader(s, src):
        def fn():
            a = weights.get(src)
            try:
                mixformat.check_finite(src, a)
            except mixformat.FormatError as e:
                raise ConvertError("%s; refusing to convert (for %s)" % (e, s.dst))
            return s.fn(a) if s.fn is not None else a
        return fn

    tensors = {s.dst: (LazyStack(s.shape, [reader(s, x) for x in s.src]) if s.stack else
                       Lazy(s.shape, reader(s, s.src))) for s in specs}
    l0 = layers[0]
    if l0["kind"] == "gqa":
        kind = ("MHA" if l0["n_kv_heads"] == l0["n_heads"] else
                "MQA" if l0["n_kv_heads"] == 1 else "GQA")
        desc = "%s H=%d Hkv=%d d=%d rope=%d" % (kind, l0["n_heads"], l0["n_kv_heads"],
                                                  l0["head_dim"], l0["rope_dim"])
    else:
        desc = "MLA H=%d dq=%d dc=%d dn=%d dr=%d dv=%d" % (
            l0["n_heads"], l0["q_lora_rank"], l0["kv_lora_rank"], l0["qk_nope_head_dim"],
            l0["qk_rope_head_dim"], l0["v_head_dim"])
    if l0.get("qk_norm"):
        desc += " qk-norm"
    moe = [l for l in layers if l.get("ffn") == "moe"]
    if moe:
        f = moe[0]
        desc += ", %d MoE layers (%d experts top-%d of width %d, shared %d, %s %s%s)" % (
            len(moe), f["n_experts"], f["top_k"], f["expert_hidden"], f["shared_hidden"],
            f["scoring"], f["topk_method"], ", fp8 dequantized" if block else "")
    summary = "%s: %d layers %s, D=%d, V=%d, rope %s/%s" % (
        family, L, desc, D, V, mcfg["rope_pairing"],
        (mcfg["rope_scaling"] or {}).get("type", "none"))
    return mcfg, layers, tensors, {s.dst: s.src for s in specs}, summary


def check_fp8(weights, name, shape, block):
    """An fp8 weight needs quantization_config and a float32 <name>_scale_inv of shape
    [ceil(rows / b0), ceil(cols / b1)]."""
    if block is None:
        raise ConvertError("tensor %s is fp8 but config.json has no fp8 quantization_config"
                           % name)
    if len(shape) != 2:
        raise ConvertError("fp8 tensor %s has %d dimensions; only matrices are supported"
                           % (name, len(shape)))
    sname = name + "_scale_inv"
    if sname not in weights:
        raise ConvertError("fp8 tensor %s has no scale %s" % (name, sname))
    sdt, sshape = weights.info(sname)
    want = (-(-shape[0] // block[0]), -(-shape[1] // block[1]))
    if sdt != "F32":
        raise ConvertError("scale %s has dtype %s, expected F32" % (sname, sdt))
    if tuple(sshape) != want:
        raise ConvertError("scale %s has shape %s, expected %s for a %s weight in %dx%d blocks"
                           % (sname, list(sshape), list(want), list(shape), block[0], block[1]))


def check_f16_range(tensors, names, sources):
    """Wrap tensors stored as f16 so that a finite value beyond f16's range is an error, not inf."""
    def checked(read, name):
        def fn():
            a = np.asarray(read())
            finite = a[np.isfinite(a)]
            if finite.size and float(np.max(np.abs(finite))) > 65504.0:
                raise ConvertError("tensor %s (%s) has values beyond the f16 range; use --dtype "
                                   "bf16 or f32" % (sources[name], name))
            return a
        return fn

    for name in names:
        t = tensors[name]
        if isinstance(t, LazyStack):  # expert by expert: never the whole stack at once
            tensors[name] = LazyStack(t.shape, [checked(f, name) for f in t._fns])
        else:
            tensors[name] = Lazy(t.shape, checked(lambda t=t: t, name))


# --------------------------------------------------------------------------- tokenizer.model

def _varint(buf, i):
    v, shift = 0, 0
    while True:
        if i >= len(buf) or shift > 63:
            raise ValueError("truncated varint at byte %d" % i)
        b = buf[i]
        i += 1
        v |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return v, i


def _proto_fields(buf):
    """(field number, wire type, value) of one protobuf message; ValueError if malformed."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        field, wt = key >> 3, key & 7
        if field == 0:
            raise ValueError("field number 0 at byte %d" % i)
        if wt == 0:
            v, i = _varint(buf, i)
        elif wt == 1:
            v, i = buf[i:i + 8], i + 8
        elif wt == 5:
            v, i = buf[i:i + 4], i + 4
        elif wt == 2:
            n, i = _varint(buf, i)
            v, i = buf[i:i + n], i + n
        else:
            raise ValueError("unsupported wire type %d at byte %d" % (wt, i))
        if i > len(buf):
            raise ValueError("field %d runs past the end" % field)
        yield field, wt, v


def spm_piece_count(data):
    """Pieces in a serialized SentencePiece ModelProto (field 1: repeated pieces, each
    with field 1: the piece string). ValueError if the bytes are not such a message."""
    n = 0
    for field, wt, v in _proto_fields(data):
        if field != 1:
            continue
        if wt != 2:
            raise ValueError("pieces field has wire type %d" % wt)
        piece = [pv for pf, pw, pv in _proto_fields(v) if pf == 1 and pw == 2]
        if len(piece) != 1:
            raise ValueError("piece %d has no text" % n)
        piece[0].decode("utf-8")  # UnicodeDecodeError is a ValueError
        n += 1
    if n == 0:
        raise ValueError("no pieces")
    return n


def read_tokenizer_model(path, vocab_size):
    """The bytes of tokenizer.model, checked: it parses and its vocabulary matches."""
    with open(path, "rb") as f:
        tok = f.read()
    try:
        n = spm_piece_count(tok)
    except ValueError as e:
        raise ConvertError("%s is not a SentencePiece model (%s)" % (path, e))
    if n != vocab_size:
        raise ConvertError("%s has %d pieces but config.json's vocab_size is %d; ./run would "
                           "refuse the pair" % (path, n, vocab_size))
    return tok


def convert(hf_dir, out, dtype="f32", log=None):
    out_dir = os.path.dirname(os.path.abspath(out))
    if os.path.isdir(out):
        raise ConvertError("output %s is a directory" % out)
    if not os.path.isdir(out_dir):
        raise ConvertError("output directory %s does not exist" % out_dir)
    cfg = load_config(hf_dir)
    family_of(cfg)  # fail on the architecture before touching the weights
    weights = Weights(hf_dir)
    mcfg, layers, tensors, sources, summary = build(cfg, weights)

    tok_kind, tok, tok_config = tokenizer_files(hf_dir, cfg)

    # norms and biases (every 1-D tensor) and the routers stay f32 whatever --dtype says
    small = {n: "f32" for n, t in tensors.items()
             if len(t.shape) == 1 or n.endswith(".router")}
    if dtype == "f16":
        check_f16_range(tensors, [n for n in tensors if n not in small], sources)
    # q8_0/q4_0: a few tensors stay at higher precision (docs/QUANT.md), as in quantize.py
    mixformat.write_model(out, mcfg, layers, tensors, tokenizer_bytes=tok, dtype=dtype,
                          dtypes=small, tokenizer_kind=tok_kind, tokenizer_config=tok_config,
                          overrides=mixformat.default_overrides(dtype, mcfg))
    if not tok:  # warn only once the file exists: a failure prints exactly one line
        print("%s: warning: no tokenizer.model or tokenizer.json in %s; ./run will need -z PATH "
              "or --tokens" % (PROG, hf_dir), file=sys.stderr)
    if log:
        print("%s: wrote %s (%s, %d tensors, %s%s)" % (
            PROG, out, summary, len(tensors), dtype,
            ", %s tokenizer %d bytes" % (tok_kind, len(tok)) if tok else ", no tokenizer"),
            file=log)


# --- tokenizer ---------------------------------------------------------------------

def _read_json(path, what):
    try:
        with open(path, "rb") as f:
            raw = f.read()
        return raw, json.loads(raw.decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ConvertError("%s: not valid JSON (%s)" % (what, e))


def _id_list(v, what):
    ids = v if isinstance(v, list) else [v] if v is not None else []
    for i in ids:
        if not _is_int(i) or i < 0 or i >= 2 ** 31:
            raise ConvertError("%s: eos_token_id must be token ids, got %r" % (what, v))
    return ids


def tokenizer_files(hf_dir, cfg):
    """What the .bin embeds: (kind, tokenizer bytes, tokenizer-config records).

    tokenizer.model (SentencePiece) when the folder has one, else the raw tokenizer.json
    (the runtime parses it, docs/TOKENIZER.md); tokenizer.json first for a model with a
    chat template. The records (docs/FORMAT.md) hold
    "config.json": a digest of tokenizer_config.json (bos_token, eos_token, add_bos_token,
    add_eos_token, clean_up_tokenization_spaces) with eos_token_id = every end id of generation_config.json and
    config.json, and the compiled chat template (scripts/chat_template.py)."""
    spm = os.path.join(hf_dir, "tokenizer.model")
    tj_path = os.path.join(hf_dir, "tokenizer.json")
    tc_path = os.path.join(hf_dir, "tokenizer_config.json")
    tc = _read_json(tc_path, "tokenizer_config.json")[1] if os.path.isfile(tc_path) else {}
    tj = None
    # A chat template writes special tokens as text (</s>, <|im_end|>): transformers'
    # tokenizer matches them, the SentencePiece library would split them, so a chat
    # model is embedded with its tokenizer.json when it has one (docs/CHAT.md).
    chat = isinstance(tc, dict) and tc.get("chat_template") is not None
    if os.path.isfile(spm) and not (chat and os.path.isfile(tj_path)):
        kind = "sentencepiece"
        tok = read_tokenizer_model(spm, cfg.get("vocab_size"))
    elif os.path.isfile(tj_path):
        kind = "hf"
        tok, tj = _read_json(tj_path, "tokenizer.json")
        if not isinstance(tj, dict) or not isinstance(tj.get("model"), dict):
            raise ConvertError("tokenizer.json: no 'model' object")
    else:
        return "none", b"", None
    if not isinstance(tc, dict):
        raise ConvertError("tokenizer_config.json: not an object")
    gc_path = os.path.join(hf_dir, "generation_config.json")
    gc = _read_json(gc_path, "generation_config.json")[1] if os.path.isfile(gc_path) else {}
    if not isinstance(gc, dict):
        raise ConvertError("generation_config.json: not an object")
    digest = {k: tc[k] for k in ("bos_token", "eos_token", "add_bos_token", "add_eos_token",
                                 "clean_up_tokenization_spaces") if k in tc}
    for k in ("bos_token", "eos_token"):  # {"content": ...} objects -> their content
        if isinstance(digest.get(k), dict):
            digest[k] = digest[k].get("content")
    ends = []
    for v, what in ((gc.get("eos_token_id"), "generation_config.json"),
                    (cfg.get("eos_token_id"), "config.json")):
        ends += [i for i in _id_list(v, what) if i not in ends]
    if ends:
        digest["eos_token_id"] = ends
    records = {"config.json": json.dumps(digest, ensure_ascii=False, sort_keys=True).encode()}
    if tc.get("chat_template") is not None:
        import chat_template  # scripts/chat_template.py: compiled at conversion time
        records.update(chat_template.config_records(tc, tj))
    return kind, tok, records


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, "%s: error: %s (usage: %s HF_DIR OUT.bin [--dtype f32|f16|bf16|q8_0|q4_0])\n"
                  % (PROG, message, os.path.basename(sys.argv[0])))


def main(argv=None):
    ap = _Parser(prog=PROG, description="Convert a Hugging Face checkpoint folder (config.json + "
                 "safetensors) into a mixattn .bin. See docs/CONVERT.md.")
    ap.add_argument("hf_dir", metavar="HF_DIR")
    ap.add_argument("out", metavar="OUT.bin")
    ap.add_argument("--dtype", choices=("f32", "f16", "bf16", "q8_0", "q4_0"), default="f32",
                    help="storage dtype of the matrices (1-D norms and biases stay f32; q8_0/q4_0: "
                    "ggml blocks, rows not a multiple of 32 in bf16, docs/QUANT.md)")
    args = ap.parse_args(argv)
    try:
        convert(args.hf_dir, args.out, args.dtype, log=sys.stdout)
    except (ConvertError, mixformat.FormatError, st.SafetensorsError) as e:
        msg = str(e)
    except OSError as e:
        msg = "%s%s" % (e.strerror or e, ": %s" % e.filename if e.filename else "")
    except MemoryError:
        msg = "out of memory"
    except Exception as e:  # no tracebacks for users; still one line
        msg = "internal error (%s): %s" % (type(e).__name__, e)
    else:
        return 0
    print("%s: error: %s" % (PROG, " ".join(msg.split())), file=sys.stderr)
    return 1


class Terminated(BaseException):
    """SIGTERM / SIGHUP: unwinds like Ctrl-C, so write_model removes its temporary file."""


def _on_signal(signum, frame):
    raise Terminated(signum)


if __name__ == "__main__":
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("%s: error: interrupted" % PROG, file=sys.stderr)
        sys.exit(130)
    except Terminated as t:
        print("%s: error: terminated by %s" % (PROG, signal.Signals(t.args[0]).name),
              file=sys.stderr)
        sys.exit(128 + t.args[0])
