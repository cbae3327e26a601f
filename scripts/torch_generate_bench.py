#!/usr/bin/env python3
"""PyTorch eager baseline for `autoif bench generate`.

Loads the same HF-layout checkpoint as the Go bench (config.json + model.safetensors, read
with numpy: the safetensors package is not a dependency), then times KV-cache decode with
temperature-1 sampling at each batch size. Made as strong as eager torch allows: all cores,
passive OpenMP waiting, inference_mode, a preallocated KV cache, GQA without copying K/V, and
per batch size the fastest of its matmul kernels and of float32 and bfloat16 compute
(--dtypes; bfloat16 halves the bytes a decode step reads, but this torch has no BLAS and its
bfloat16 kernels may be slower: the trial decides).

    OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 scripts/torch_generate_bench.py --model DIR \
        --batches 1,8 --prompt-len 16 --new-tokens 64 --threads 2

The last line of output is JSON: {"tokens_per_s": {"1": x, "8": y}, "tokens_per_cpu_s": {...},
"linear_mode": {...}, "dtype": {"1": "float32" | "bfloat16", ...}, ...}
(tokens per second of process CPU time, the figure least moved by other load on the machine).
"""
import os

# Must be set before torch (and its OpenMP runtime) loads: spinning threads steal the cores
# the Go side and the other batch size need.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import math
import struct
import time

import numpy as np
import torch
import torch.nn.functional as F


class Lin:
    """y = x·Wᵀ + b through the kernel Lin.mode selects.

    Debian's torch has no MKL/OpenBLAS (BLAS_INFO=generic), and which of its kernels is
    fastest depends on the shape: F.linear's transposed GEMM, mv over [out, in] for one row,
    or mm against a pre-transposed [in, out] copy. The bench tries each per batch size and
    keeps the fastest, so the baseline is the best this torch can do.
    """

    mode = "mm"
    modes = ("mm", "mv", "linear")

    def __init__(self, w, b):
        self.src_w, self.src_b = w, b
        self.set_dtype(torch.float32)

    def set_dtype(self, dt):
        # Drop the old copies first: the 0.5B model's two layouts are 4 GB in float32.
        self.w = self.wt = None
        self.w = self.src_w.to(dt).contiguous()
        self.wt = self.w.t().contiguous()
        self.b = None if self.src_b is None else self.src_b.to(dt)

    def __call__(self, x):
        if Lin.mode == "linear":
            return F.linear(x, self.w, self.b)
        shape = x.shape[:-1]
        x2 = x.reshape(-1, x.shape[-1])
        if x2.shape[0] == 1 and Lin.mode == "mv":
            y = torch.mv(self.w, x2[0]).unsqueeze(0)
            if self.b is not None:
                y += self.b
        elif self.b is not None:
            y = torch.addmm(self.b, x2, self.wt)
        else:
            y = torch.mm(x2, self.wt)
        return y.view(*shape, y.shape[-1])


def read_safetensors(path):
    # Memory-mapped and widened in place: reading a 0.5B BF16 file whole and widening it through
    # temporaries would peak gigabytes above the weights themselves.
    data = np.memmap(path, dtype=np.uint8, mode="r")
    (n,) = struct.unpack("<Q", data[:8].tobytes())
    header = json.loads(data[8:8 + n].tobytes())
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, end = e["data_offsets"]
        raw = data[8 + n + b:8 + n + end]
        if e["dtype"] == "F32":
            arr = raw.view("<f4").copy()
        elif e["dtype"] == "BF16":
            arr = np.empty(raw.size // 2, dtype=np.uint32)
            arr[:] = raw.view("<u2")
            arr <<= 16
            arr = arr.view(np.float32)
        elif e["dtype"] == "F16":
            arr = raw.view("<f2").astype(np.float32)
        else:
            raise ValueError(f"{path}: tensor {name}: dtype {e['dtype']} not supported")
        out[name] = torch.from_numpy(arr.reshape(e["shape"]))
    return out


class Model:
    def __init__(self, d):
        with open(os.path.join(d, "config.json")) as f:
            c = json.load(f)
        self.c = c
        self.W = read_safetensors(os.path.join(d, "model.safetensors"))
        self.h = c["hidden_size"]
        self.H = c["num_attention_heads"]
        self.KV = c.get("num_key_value_heads") or self.H
        self.d = c.get("head_dim") or self.h // self.H
        self.L = c["num_hidden_layers"]
        self.eps = c.get("rms_norm_eps", 1e-6)
        if c.get("rope_scaling"):
            raise SystemExit("rope_scaling not supported by the bench baseline")
        theta = c.get("rope_theta", 10000.0)
        self.inv_freq = 1.0 / (theta ** (torch.arange(0, self.d, 2, dtype=torch.int64).float() / self.d))
        head = self.W["model.embed_tokens.weight"] if c.get("tie_word_embeddings") else self.W["lm_head.weight"]
        self.vocab = head.shape[0]
        self.head = Lin(head, None)
        self.dt = torch.float32
        W = self.W
        self.layers = []
        for i in range(self.L):
            p = f"model.layers.{i}."
            g = lambda n: W.get(p + n)
            self.layers.append(dict(
                ln1=g("input_layernorm.weight"), ln2=g("post_attention_layernorm.weight"),
                q=Lin(g("self_attn.q_proj.weight"), g("self_attn.q_proj.bias")),
                k=Lin(g("self_attn.k_proj.weight"), g("self_attn.k_proj.bias")),
                v=Lin(g("self_attn.v_proj.weight"), g("self_attn.v_proj.bias")),
                o=Lin(g("self_attn.o_proj.weight"), g("self_attn.o_proj.bias")),
                gate=Lin(g("mlp.gate_proj.weight"), None), up=Lin(g("mlp.up_proj.weight"), None),
                down=Lin(g("mlp.down_proj.weight"), None)))

    def set_dtype(self, dt):
        self.dt = dt
        self.head.set_dtype(dt)
        for l in self.layers:
            for k in ("q", "k", "v", "o", "gate", "up", "down"):
                l[k].set_dtype(dt)

    def rms(self, x, w):
        # In float32 whatever the compute dtype, as transformers' LlamaRMSNorm does.
        x = x.float()
        return (w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))).to(self.dt)

    def rope(self, x, cos, sin):
        h = x.shape[-1] // 2
        rot = torch.cat((-x[..., h:], x[..., :h]), dim=-1)
        return x * cos + rot * sin

    def forward(self, tokens, kcache, vcache, start):
        """tokens [B, T] at positions start..start+T-1; returns last-position logits [B, V]."""
        B, T = tokens.shape
        H, KV, d = self.H, self.KV, self.d
        x = F.embedding(tokens, self.W["model.embed_tokens.weight"]).to(self.dt)
        pos = torch.arange(start, start + T, dtype=torch.float32)
        freqs = torch.outer(pos, self.inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos()[None, None].to(self.dt), emb.sin()[None, None].to(self.dt)
        end = start + T
        mask = None
        if T > 1:
            mask = torch.full((T, end), float("-inf")).triu(start + 1).to(self.dt)
        for i, l in enumerate(self.layers):
            hs = self.rms(x, l["ln1"])
            q = l["q"](hs).view(B, T, H, d).transpose(1, 2)
            k = l["k"](hs).view(B, T, KV, d).transpose(1, 2)
            v = l["v"](hs).view(B, T, KV, d).transpose(1, 2)
            q = self.rope(q, cos, sin)
            k = self.rope(k, cos, sin)
            kcache[i][:, :, start:end] = k
            vcache[i][:, :, start:end] = v
            K = kcache[i][:, :, :end]
            V = vcache[i][:, :, :end]
            # GQA without repeat_interleave: group query heads under their KV head.
            qg = q.reshape(B, KV, (H // KV) * T, d)
            att = torch.matmul(qg, K.transpose(-1, -2)) * (1.0 / math.sqrt(d))
            if mask is not None:
                att = att.view(B, KV, H // KV, T, end) + mask
                att = att.view(B, KV, (H // KV) * T, end)
            att = torch.softmax(att, dim=-1)
            o = torch.matmul(att, V).view(B, H, T, d).transpose(1, 2).reshape(B, T, H * d)
            x = x + l["o"](o)
            hs = self.rms(x, l["ln2"])
            x = x + l["down"](F.silu(l["gate"](hs)) * l["up"](hs))
        x = self.rms(x[:, -1], self.W["model.norm.weight"])
        return self.head(x).float()


def bench(m, batch, prompt_len, new_tokens, seed):
    g = torch.Generator().manual_seed(seed)
    V = m.vocab
    max_len = prompt_len + new_tokens
    kcache = [torch.zeros(batch, m.KV, max_len, m.d, dtype=m.dt) for _ in range(m.L)]
    vcache = [torch.zeros(batch, m.KV, max_len, m.d, dtype=m.dt) for _ in range(m.L)]
    prompt = torch.randint(0, V, (batch, prompt_len), generator=g)
    logits = m.forward(prompt, kcache, vcache, 0)
    pos = prompt_len
    t0, c0 = time.perf_counter(), time.process_time()
    for step in range(new_tokens):
        probs = torch.softmax(logits, dim=-1)
        tok = torch.multinomial(probs, 1, generator=g)
        if step == new_tokens - 1:
            break
        logits = m.forward(tok, kcache, vcache, pos)
        pos += 1
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    toks = batch * (new_tokens - 1)
    return toks / secs, toks / cpu if cpu > 0 else 0.0


def dtype_name(dt):
    return str(dt).split(".")[-1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--prompt-len", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--dtypes", default="float32,bfloat16", help="compute dtypes to try; the fastest per batch size is timed")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    m = Model(a.model)
    batches = [int(x) for x in a.batches.split(",")]
    dtypes = [getattr(torch, d) for d in a.dtypes.split(",")]
    out, per_cpu, modes, chosen = {}, {}, {}, {}
    with torch.inference_mode():
        # Trial every (dtype, kernel) per batch size on a short decode, dtype by dtype so that
        # only one dtype's weights are held at a time.
        trial = {b: {} for b in batches}
        for dt in dtypes:
            m.set_dtype(dt)
            bench(m, 1, a.prompt_len, 4, a.seed)  # warm up allocator and kernels
            for b in batches:
                for mode in Lin.modes:
                    Lin.mode = mode
                    trial[b][(dt, mode)] = bench(m, b, a.prompt_len, 8, a.seed)[0]
        for dt in dtypes:
            todo = [b for b in batches if max(trial[b], key=trial[b].get)[0] == dt]
            if not todo:
                continue
            m.set_dtype(dt)
            for b in todo:
                _, Lin.mode = max(trial[b], key=trial[b].get)
                modes[str(b)], chosen[str(b)] = Lin.mode, dtype_name(dt)
                out[str(b)], per_cpu[str(b)] = bench(m, b, a.prompt_len, a.new_tokens, a.seed)
                tried = ", ".join(f"{dtype_name(d)} {k} {v:.1f}" for (d, k), v in trial[b].items())
                print(f"torch batch {b}: {out[str(b)]:.1f} tokens/s with {chosen[str(b)]} {Lin.mode} (trial: {tried})", flush=True)
    print(json.dumps({"tokens_per_s": out, "tokens_per_cpu_s": per_cpu, "linear_mode": modes, "dtype": chosen,
                      "threads": torch.get_num_threads(), "torch": torch.__version__}))


if __name__ == "__main__":
    main()
