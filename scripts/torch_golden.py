#!/usr/bin/env python3
"""Write golden checkpoints and logits for the Go model package.

An independent PyTorch implementation of the Llama / Qwen2 decoder (plain torch, no
transformers) builds small random models, saves them in Hugging Face layout and records the
logits of a fixed token sequence. Go's tests (model/golden_test.go) load the committed files and
compare. Run with the system interpreter that has torch:

    /usr/bin/python3 scripts/torch_golden.py model/testdata/golden

With --check DIR (and a PEFT LoRA adapter in DIR/adapter, if present) it instead reads a checkpoint written by Go (config.json +
model.safetensors), runs this reference on the ids of DIR/tokens.json and writes
DIR/torch_logits.safetensors, so Go's tests can check that what it writes is what an
independent reader reads.
"""
import json
import math
import os
import struct
import sys

import torch

torch.set_grad_enabled(False)

# Tiny shapes keep the committed files to a few hundred KB; weights are drawn with a larger
# std than HF's 0.02 so the logits are far from uniform and a wrong op cannot hide.
CONFIGS = {
    # MHA, no bias, tied embeddings, theta 1e4, F32 file.
    "llama_mha_tied_f32": dict(arch="LlamaForCausalLM", hidden=32, inter=64, layers=2, heads=4, kv=4,
                               vocab=96, theta=1e4, tied=True, dtype="F32", seed=1),
    # GQA, untied, theta 1e6, BF16 file.
    "llama_gqa_untied_bf16": dict(arch="LlamaForCausalLM", hidden=32, inter=48, layers=2, heads=4, kv=2,
                                  vocab=96, theta=1e6, tied=False, dtype="BF16", seed=2),
    # Qwen2: q/k/v bias, GQA, untied, theta 1e6, F32.
    "qwen2_gqa_bias_f32": dict(arch="Qwen2ForCausalLM", hidden=32, inter=64, layers=2, heads=4, kv=1,
                               vocab=96, theta=1e6, tied=False, dtype="F32", seed=3),
    # Qwen2: MHA, tied, theta 1e4, BF16.
    "qwen2_mha_tied_bf16": dict(arch="Qwen2ForCausalLM", hidden=32, inter=64, layers=2, heads=2, kv=2,
                                vocab=96, theta=1e4, tied=True, dtype="BF16", seed=4),
    # Qwen2 GQA saved as F16 (the reader converts F16 too).
    "qwen2_gqa_untied_f16": dict(arch="Qwen2ForCausalLM", hidden=32, inter=32, layers=1, heads=4, kv=2,
                                 vocab=96, theta=1e6, tied=False, dtype="F16", seed=6),
    # Llama with attention_bias (q/k/v and o), head_dim != hidden/heads, llama3 RoPE scaling.
    "llama_bias_headdim_rope3_f32": dict(arch="LlamaForCausalLM", hidden=32, inter=48, layers=2, heads=4, kv=2,
                                         head_dim=12, vocab=96, theta=5e5, tied=True, dtype="F32", seed=5,
                                         attention_bias=True,
                                         rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                                                           high_freq_factor=4.0, original_max_position_embeddings=8)),
}

TOKENS = [1, 17, 5, 88, 42, 3, 3, 60, 95, 0, 21, 77, 8, 13, 50, 64, 2, 31, 70, 11]


def rms_norm(x, w, eps):
    var = x.pow(2).mean(-1, keepdim=True)
    return w * (x * torch.rsqrt(var + eps))


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def inv_freq(cfg):
    d = cfg["head_dim"]
    inv = 1.0 / (cfg["theta"] ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))
    rs = cfg.get("rope_scaling")
    if rs:
        factor, lo, hi = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
        old = rs["original_max_position_embeddings"]
        lo_w, hi_w = old / lo, old / hi
        wavelen = 2 * math.pi / inv
        scaled = torch.where(wavelen > lo_w, inv / factor, inv)
        smooth = (old / wavelen - lo) / (hi - lo)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < hi_w) * ~(wavelen > lo_w)
        inv = torch.where(medium, smoothed, scaled)
    return inv


def forward(cfg, W, tokens, lora=None):
    """Full causal forward of one sequence; returns [T, vocab] float32 logits. lora, when
    given, is (tensors, scaling) of a PEFT adapter, applied by PEFT's names and rule."""
    T = len(tokens)
    H, KV, d = cfg["heads"], cfg["kv"], cfg["head_dim"]
    eps = cfg["eps"]
    x = W["model.embed_tokens.weight"][torch.tensor(tokens)]
    pos = torch.arange(T).float()
    freqs = torch.outer(pos, inv_freq(cfg))
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos(), emb.sin()
    mask = torch.full((T, T), float("-inf")).triu(1)

    def lin(name, inp):
        y = inp @ W[name + ".weight"].T
        b = W.get(name + ".bias")
        y = y + b if b is not None else y
        if lora is not None:
            # peft.tuners.lora.Linear.forward: result + lora_B(lora_A(dropout(x))) * scaling
            tensors, scaling = lora
            a = tensors.get("base_model.model." + name + ".lora_A.weight")
            if a is not None:
                y = y + (inp @ a.T) @ tensors["base_model.model." + name + ".lora_B.weight"].T * scaling
        return y

    for i in range(cfg["layers"]):
        p = f"model.layers.{i}."
        h = rms_norm(x, W[p + "input_layernorm.weight"], eps)
        q = lin(p + "self_attn.q_proj", h).view(T, H, d).transpose(0, 1)
        k = lin(p + "self_attn.k_proj", h).view(T, KV, d).transpose(0, 1)
        v = lin(p + "self_attn.v_proj", h).view(T, KV, d).transpose(0, 1)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(H // KV, dim=0)
        v = v.repeat_interleave(H // KV, dim=0)
        att = (q @ k.transpose(1, 2)) / math.sqrt(d) + mask
        att = torch.softmax(att.float(), dim=-1)
        o = (att @ v).transpose(0, 1).reshape(T, H * d)
        x = x + lin(p + "self_attn.o_proj", o)
        h = rms_norm(x, W[p + "post_attention_layernorm.weight"], eps)
        g = lin(p + "mlp.gate_proj", h)
        u = lin(p + "mlp.up_proj", h)
        x = x + lin(p + "mlp.down_proj", torch.nn.functional.silu(g) * u)
    x = rms_norm(x, W["model.norm.weight"], eps)
    head = W["model.embed_tokens.weight"] if cfg["tied"] else W["lm_head.weight"]
    return x @ head.T


def make_weights(cfg):
    g = torch.Generator().manual_seed(cfg["seed"])
    h, i, v = cfg["hidden"], cfg["inter"], cfg["vocab"]
    q, kv = cfg["heads"] * cfg["head_dim"], cfg["kv"] * cfg["head_dim"]

    def rnd(*shape, std=0.2):
        return torch.randn(*shape, generator=g) * std

    W = {"model.embed_tokens.weight": rnd(v, h, std=1.0)}
    bias_qkv = cfg["arch"] == "Qwen2ForCausalLM" or cfg.get("attention_bias", False)
    bias_o = cfg["arch"] == "LlamaForCausalLM" and cfg.get("attention_bias", False)
    for l in range(cfg["layers"]):
        p = f"model.layers.{l}."
        W[p + "input_layernorm.weight"] = 1 + rnd(h, std=0.1)
        W[p + "self_attn.q_proj.weight"] = rnd(q, h)
        W[p + "self_attn.k_proj.weight"] = rnd(kv, h)
        W[p + "self_attn.v_proj.weight"] = rnd(kv, h)
        W[p + "self_attn.o_proj.weight"] = rnd(h, q)
        if bias_qkv:
            W[p + "self_attn.q_proj.bias"] = rnd(q, std=0.5)
            W[p + "self_attn.k_proj.bias"] = rnd(kv, std=0.5)
            W[p + "self_attn.v_proj.bias"] = rnd(kv, std=0.5)
        if bias_o:
            W[p + "self_attn.o_proj.bias"] = rnd(h, std=0.5)
        W[p + "post_attention_layernorm.weight"] = 1 + rnd(h, std=0.1)
        W[p + "mlp.gate_proj.weight"] = rnd(i, h)
        W[p + "mlp.up_proj.weight"] = rnd(i, h)
        W[p + "mlp.down_proj.weight"] = rnd(h, i)
    W["model.norm.weight"] = 1 + rnd(h, std=0.1)
    if not cfg["tied"]:
        W["lm_head.weight"] = rnd(v, h)
    if cfg["dtype"] in ("BF16", "F16"):
        # The file holds 16-bit values; the reference runs on exactly those values in
        # float32, as the Go loader does.
        half = torch.bfloat16 if cfg["dtype"] == "BF16" else torch.float16
        W = {k: t.to(half).float() for k, t in W.items()}
    return W


def write_safetensors(path, tensors, dtype):
    """Minimal safetensors writer (the safetensors package is not a dependency)."""
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        if dtype == "BF16":
            raw = t.to(torch.bfloat16).view(torch.int16).numpy().astype("<i2").tobytes()
        elif dtype == "F16":
            raw = t.to(torch.float16).numpy().astype("<f2").tobytes()
        else:
            raw = t.to(torch.float32).numpy().astype("<f4").tobytes()
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    header["__metadata__"] = {"format": "pt"}
    hj = json.dumps(header, separators=(",", ":")).encode()
    hj += b" " * (-len(hj) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for b in blobs:
            f.write(b)


def hf_config(cfg):
    c = {
        "architectures": [cfg["arch"]],
        "model_type": "qwen2" if cfg["arch"] == "Qwen2ForCausalLM" else "llama",
        "hidden_size": cfg["hidden"],
        "intermediate_size": cfg["inter"],
        "num_hidden_layers": cfg["layers"],
        "num_attention_heads": cfg["heads"],
        "num_key_value_heads": cfg["kv"],
        "rms_norm_eps": cfg["eps"],
        "rope_theta": cfg["theta"],
        "vocab_size": cfg["vocab"],
        "max_position_embeddings": 64,
        "tie_word_embeddings": cfg["tied"],
        "hidden_act": "silu",
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": {"BF16": "bfloat16", "F16": "float16"}.get(cfg["dtype"], "float32"),
        "rope_scaling": cfg.get("rope_scaling"),
    }
    if "explicit_head_dim" in cfg:
        c["head_dim"] = cfg["head_dim"]
    if cfg["arch"] == "LlamaForCausalLM":
        c["attention_bias"] = cfg.get("attention_bias", False)
        c["mlp_bias"] = False
    else:
        c["use_sliding_window"] = False
    return c


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, end = e["data_offsets"]
        raw = bytearray(data[8 + n + b:8 + n + end])
        if e["dtype"] == "F32":
            t = torch.frombuffer(raw, dtype=torch.float32)
        elif e["dtype"] == "BF16":
            t = torch.frombuffer(raw, dtype=torch.bfloat16).float()
        else:
            raise ValueError(f"{path}: tensor {name}: dtype {e['dtype']}")
        out[name] = t.reshape(e["shape"])
    return out


def check(d):
    with open(os.path.join(d, "config.json")) as f:
        c = json.load(f)
    cfg = dict(arch=c["architectures"][0], hidden=c["hidden_size"], inter=c["intermediate_size"],
               layers=c["num_hidden_layers"], heads=c["num_attention_heads"],
               kv=c.get("num_key_value_heads") or c["num_attention_heads"],
               vocab=c["vocab_size"], theta=c.get("rope_theta", 10000.0),
               tied=c.get("tie_word_embeddings", False), eps=c.get("rms_norm_eps", 1e-6),
               rope_scaling=c.get("rope_scaling"))
    cfg["head_dim"] = c.get("head_dim") or cfg["hidden"] // cfg["heads"]
    W = read_safetensors(os.path.join(d, "model.safetensors"))
    with open(os.path.join(d, "tokens.json")) as f:
        tokens = json.load(f)
    lora = None
    ad = os.path.join(d, "adapter")
    if os.path.exists(os.path.join(ad, "adapter_config.json")):
        with open(os.path.join(ad, "adapter_config.json")) as f:
            ac = json.load(f)
        r = ac["r"]
        scaling = ac["lora_alpha"] / (math.sqrt(r) if ac.get("use_rslora") else r)
        lora = (read_safetensors(os.path.join(ad, "adapter_model.safetensors")), scaling)
    logits = forward(cfg, W, tokens, lora)
    write_safetensors(os.path.join(d, "torch_logits.safetensors"), {"logits": logits}, "F32")


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        check(sys.argv[2])
        return
    out = sys.argv[1] if len(sys.argv) > 1 else "model/testdata/golden"
    for name, cfg in CONFIGS.items():
        cfg = dict(cfg)
        cfg.setdefault("eps", 1e-6)
        if "head_dim" in cfg:
            cfg["explicit_head_dim"] = True
        else:
            cfg["head_dim"] = cfg["hidden"] // cfg["heads"]
        W = make_weights(cfg)
        logits = forward(cfg, W, TOKENS)
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(hf_config(cfg), f, indent=2)
        write_safetensors(os.path.join(d, "model.safetensors"), W, cfg["dtype"])
        write_safetensors(os.path.join(d, "logits.safetensors"), {"logits": logits}, "F32")
        with open(os.path.join(d, "tokens.json"), "w") as f:
            json.dump(TOKENS, f)
        print(name, "logits std %.3f" % logits.std().item(), "max %.3f" % logits.abs().max().item())


if __name__ == "__main__":
    main()
