#!/usr/bin/env python3
"""PyTorch CPU baseline for `autoif bench train`: the same DPO step on the same weights.

One step = reference forward (no grad) + policy forward and backward + gradient clipping to
norm 1 + AdamW update (full fine-tuning: float32 weights, gradients and AdamW state, a frozen
float32 reference, plain autograd), for --pairs pairs whose prompts and responses all have
fixed lengths (so no padding: the strongest layout for torch). Batched over all 2·pairs
sequences (or --micro-batch pairs at a time, gradients accumulated), lm_head only at the
scored positions, like the Go trainer. Prints progress lines and, last, one JSON line with the
process's peak RSS.

With --lora-rank R the step trains a LoRA adapter instead (PEFT's rule as two plain low-rank
matrices per projection on all seven projections: y = x·Wᵀ + b + (alpha/R)·(x·Aᵀ)·Bᵀ, A from
kaiming_uniform(a=√5), B zero, dropout 0): the base stays frozen in float32 (torch's CPU
matmuls are fastest there; the Go trainer keeps a BF16 checkpoint in BF16), the reference is
the base with the adapter off (no second copy), and AdamW and clipping see the adapter only.

    OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 scripts/torch_train_bench.py --model DIR --threads 2
"""
import argparse
import json
import math
import os
import resource
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its thread pool

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_golden as tg  # noqa: E402

torch.set_grad_enabled(True)


def load(d):
    with open(os.path.join(d, "config.json")) as f:
        c = json.load(f)
    cfg = dict(hidden=c["hidden_size"], inter=c["intermediate_size"], layers=c["num_hidden_layers"],
               heads=c["num_attention_heads"], kv=c.get("num_key_value_heads") or c["num_attention_heads"],
               vocab=c["vocab_size"], theta=c.get("rope_theta", 10000.0), tied=c.get("tie_word_embeddings", False),
               eps=c.get("rms_norm_eps", 1e-6), rope_scaling=c.get("rope_scaling"))
    cfg["head_dim"] = c.get("head_dim") or cfg["hidden"] // cfg["heads"]
    return cfg, tg.read_safetensors(os.path.join(d, "model.safetensors"))


def seq_logps(cfg, W, ids, prompt_len, lora=None):
    """Summed log-probs of ids[:, prompt_len:] given the rest; ids is [B, T] (no padding).
    lora, when given, is (adapter tensors by module name, scaling)."""
    B, T = ids.shape
    H, KV, d, eps = cfg["heads"], cfg["kv"], cfg["head_dim"], cfg["eps"]
    inp = ids[:, :-1]
    L = T - 1
    x = W["model.embed_tokens.weight"][inp]
    freqs = torch.outer(torch.arange(L).float(), tg.inv_freq(cfg))
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos(), emb.sin()
    mask = torch.full((L, L), float("-inf")).triu(1)

    def lin(name, h):
        y = h @ W[name + ".weight"].T
        b = W.get(name + ".bias")
        y = y + b if b is not None else y
        if lora is not None and name in lora[0]:
            a, bb = lora[0][name]
            y = y + (h @ a.T) @ bb.T * lora[1]
        return y

    for i in range(cfg["layers"]):
        p = f"model.layers.{i}."
        h = tg.rms_norm(x, W[p + "input_layernorm.weight"], eps)
        q = lin(p + "self_attn.q_proj", h).view(B, L, H, d).transpose(1, 2)
        k = lin(p + "self_attn.k_proj", h).view(B, L, KV, d).transpose(1, 2)
        v = lin(p + "self_attn.v_proj", h).view(B, L, KV, d).transpose(1, 2)
        q = q * cos + tg.rotate_half(q) * sin
        k = k * cos + tg.rotate_half(k) * sin
        k = k.repeat_interleave(H // KV, dim=1)
        v = v.repeat_interleave(H // KV, dim=1)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d) + mask, dim=-1)
        o = (att @ v).transpose(1, 2).reshape(B, L, H * d)
        x = x + lin(p + "self_attn.o_proj", o)
        h = tg.rms_norm(x, W[p + "post_attention_layernorm.weight"], eps)
        x = x + lin(p + "mlp.down_proj", torch.nn.functional.silu(lin(p + "mlp.gate_proj", h)) * lin(p + "mlp.up_proj", h))
    x = tg.rms_norm(x, W["model.norm.weight"], eps)
    head = W["model.embed_tokens.weight"] if cfg["tied"] else W["lm_head.weight"]
    logits = x[:, prompt_len - 1:, :] @ head.T
    lp = torch.log_softmax(logits, dim=-1)
    return lp.gather(-1, ids[:, prompt_len:].unsqueeze(-1)).squeeze(-1).sum(-1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--response-len", type=int, default=64)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--micro-batch", type=int, default=0, help="pairs per forward/backward (0: all)")
    ap.add_argument("--lora-rank", type=int, default=0, help="train a LoRA adapter of this rank (0: every weight)")
    ap.add_argument("--lora-alpha", type=float, default=8.0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cfg, W = load(a.model)
    g = torch.Generator().manual_seed(a.seed)
    n = a.pairs
    prompt = torch.randint(3, cfg["vocab"], (n, a.prompt_len), generator=g)
    chosen = torch.randint(3, cfg["vocab"], (n, a.response_len), generator=g)
    rejected = torch.randint(3, cfg["vocab"], (n, a.response_len), generator=g)
    ids = torch.cat((torch.cat((prompt, chosen), 1), torch.cat((prompt, rejected), 1)), 0)
    lora = None
    if a.lora_rank > 0:
        r = a.lora_rank
        mods = {}
        for i in range(cfg["layers"]):
            for t in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"):
                name = f"model.layers.{i}.{'self_attn' if t[0] in 'qkvo' else 'mlp'}.{t}"
                n_out, n_in = W[name + ".weight"].shape
                A = torch.empty(r, n_in)
                torch.nn.init.kaiming_uniform_(A, a=math.sqrt(5))
                mods[name] = (A.requires_grad_(True), torch.zeros(n_out, r, requires_grad=True))
        lora = (mods, a.lora_alpha / r)
        ref, policy = W, W  # frozen; the reference is the same weights without the adapter
        trainable = [t for ab in mods.values() for t in ab]
    else:
        ref = {k: v.clone() for k, v in W.items()}
        policy = {k: v.clone().requires_grad_(True) for k, v in W.items()}
        trainable = list(policy.values())
        del W
    # The Go trainer's defaults: AdamW at 1e-6, betas (0.9, 0.999), eps 1e-8, no weight decay.
    opt = torch.optim.AdamW(trainable, lr=1e-6, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    mb = a.micro_batch if a.micro_batch > 0 else n
    best = best_cpu = None
    for step in range(a.steps + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for lo in range(0, n, mb):
            hi = min(lo + mb, n)
            part = torch.cat((ids[lo:hi], ids[n + lo:n + hi]), 0)
            b = hi - lo
            with torch.no_grad():
                r = seq_logps(cfg, ref, part, a.prompt_len)
            lp = seq_logps(cfg, policy, part, a.prompt_len, lora)
            logits = (lp[:b] - r[:b]) - (lp[b:] - r[b:])
            loss = -torch.nn.functional.logsigmoid(a.beta * logits).sum() / n
            loss.backward()
            total += loss.item()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        sec, cpu = time.perf_counter() - t0, time.process_time() - c0
        print(f"torch step {step}: {sec:.3f}s ({cpu:.3f} CPU-s) loss {total:.5f}", file=sys.stderr)
        if step > 0:
            best = sec if best is None else min(best, sec)
            best_cpu = cpu if best_cpu is None else min(best_cpu, cpu)
    print(json.dumps({"step_s": best, "step_cpu_s": best_cpu, "pairs_per_s": n / best, "threads": a.threads,
                      "micro_batch": mb, "lora_rank": a.lora_rank, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
