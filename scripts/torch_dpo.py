#!/usr/bin/env python3
"""Independent PyTorch DPO step for the Go trainer's parity test.

Builds a tiny Qwen2-style model (GQA, q/k/v bias, untied head) with torch_golden.py's plain
PyTorch forward, a reference model (the policy plus small noise, so the first step's loss is
not exactly ln 2), and four preference pairs given as token ids (one step at the CLI's default
--batch-size 4). It computes TRL's sigmoid dpo_loss (beta 0.1, sums of completion-token
log-probs, batch mean), the gradients by autograd, and one plain SGD step (no clipping, no
momentum), and writes the fixture the Go test reads without Python:

    DIR/policy/{config.json,model.safetensors}     starting policy
    DIR/reference/{config.json,model.safetensors}  frozen reference
    DIR/pairs.jsonl                                {"prompt_ids","chosen_ids","rejected_ids"}
    DIR/expected.safetensors                       policy weights after the step
    DIR/expected.json                              loss, rewards, grad norm, lr, beta

Run with the system interpreter that has torch:

    /usr/bin/python3 scripts/torch_dpo.py trainer/testdata/dpo_parity

With --lora it instead trains a LoRA adapter (PEFT's rule, written out as two plain low-rank
matrices per projection, no peft needed: y = x·Wᵀ + b + (alpha/r)·(x·Aᵀ)·Bᵀ on all seven
projections, dropout 0) on the frozen policy, the reference being the policy with the adapter
off, and writes

    DIR/policy/{config.json,model.safetensors}     frozen base (and reference)
    DIR/adapter/{adapter_config.json,adapter_model.safetensors}   starting adapter
    DIR/pairs.jsonl
    DIR/expected.safetensors                       adapter after the step (PEFT names)
    DIR/expected.json

    /usr/bin/python3 scripts/torch_dpo.py --lora trainer/testdata/dpo_lora_parity

The starting adapter's A is PEFT's default init (kaiming_uniform(a=√5): U(±1/√in)); its B is
small noise rather than PEFT's zeros, as after some training, so that A has a gradient too.

The Go side must match with `autoif train dpo --model DIR/policy --ref DIR/reference
--pairs DIR/pairs.jsonl --optim sgd --lr 1 --steps 1 --max-grad-norm 0 --out OUT`
(trainer/parity_test.go runs the same path with micro-batches of 2, accumulated).
"""
import json
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_golden as tg  # noqa: E402  (it turns autograd off at import)

torch.set_grad_enabled(True)

CFG = dict(arch="Qwen2ForCausalLM", hidden=32, inter=48, layers=2, heads=4, kv=2, vocab=96,
           theta=1e6, tied=False, dtype="F32", seed=11, eps=1e-6)
CFG["head_dim"] = CFG["hidden"] // CFG["heads"]
BETA = 0.1
LR = 1.0


def make_pairs(n=4, seed=3):
    g = torch.Generator().manual_seed(seed)

    def toks(k):
        return [int(x) for x in torch.randint(3, CFG["vocab"], (k,), generator=g)]

    pairs = []
    for i in range(n):
        pl = 2 + i % 4
        pairs.append(dict(prompt_ids=[1] + toks(pl), chosen_ids=toks(1 + (i * 3) % 6) + [2],
                          rejected_ids=toks(2 + (i * 5) % 5) + [2]))
    return pairs


def seq_logp(W, prompt, completion, lora=None):
    """Sum over completion tokens of log-softmax(logits) at the token."""
    ids = prompt + completion
    logits = tg.forward(CFG, W, ids[:-1], lora)
    lp = torch.log_softmax(logits, dim=-1)
    idx = torch.arange(len(prompt) - 1, len(ids) - 1)
    return lp[idx, torch.tensor(completion)].sum()


def dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    chosen_logratios = policy_chosen_logps - ref_chosen_logps
    rejected_logratios = policy_rejected_logps - ref_rejected_logps
    logits = chosen_logratios - rejected_logratios
    losses = -torch.nn.functional.logsigmoid(beta * logits)
    chosen_rewards = beta * chosen_logratios.detach()
    rejected_rewards = beta * rejected_logratios.detach()
    return losses, chosen_rewards, rejected_rewards


def save_model(d, W):
    os.makedirs(d, exist_ok=True)
    tg.write_safetensors(os.path.join(d, "model.safetensors"), W, "F32")
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(tg.hf_config(CFG), f, indent=2)


LORA = dict(r=4, alpha=6.0, lr=0.5, targets=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])


def lora_modules():
    for i in range(CFG["layers"]):
        for t in LORA["targets"]:
            part = "self_attn" if t[0] in "qkvo" else "mlp"
            yield f"model.layers.{i}.{part}.{t}"


def main_lora(out):
    torch.manual_seed(0)
    W = tg.make_weights(CFG)
    W_shape = {k: v.shape for k, v in W.items()}
    g = torch.Generator().manual_seed(5)
    r = LORA["r"]
    adapter = {}
    for m in lora_modules():
        n_out, n_in = W_shape[m + ".weight"]
        bound = 1 / math.sqrt(n_in)
        adapter[f"base_model.model.{m}.lora_A.weight"] = (torch.rand(r, n_in, generator=g) * 2 - 1) * bound
        adapter[f"base_model.model.{m}.lora_B.weight"] = 0.05 * torch.randn(n_out, r, generator=g)
    pairs = make_pairs()
    save_model(os.path.join(out, "policy"), W)
    ad = os.path.join(out, "adapter")
    os.makedirs(ad, exist_ok=True)
    tg.write_safetensors(os.path.join(ad, "adapter_model.safetensors"), adapter, "F32")
    with open(os.path.join(ad, "adapter_config.json"), "w") as f:
        json.dump({"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": "../policy",
                   "r": r, "lora_alpha": LORA["alpha"], "lora_dropout": 0.0, "target_modules": LORA["targets"],
                   "bias": "none", "fan_in_fan_out": False, "use_rslora": False, "use_dora": False}, f, indent=2)
    with open(os.path.join(out, "pairs.jsonl"), "w") as f:
        for p in pairs:
            f.write(json.dumps(p) + "\n")

    scaling = LORA["alpha"] / r
    with torch.no_grad():  # the reference: the base with the adapter off
        ref_c = torch.stack([seq_logp(W, p["prompt_ids"], p["chosen_ids"]) for p in pairs])
        ref_r = torch.stack([seq_logp(W, p["prompt_ids"], p["rejected_ids"]) for p in pairs])
    params = {k: v.clone().requires_grad_(True) for k, v in adapter.items()}
    lora = (params, scaling)
    pol_c = torch.stack([seq_logp(W, p["prompt_ids"], p["chosen_ids"], lora) for p in pairs])
    pol_r = torch.stack([seq_logp(W, p["prompt_ids"], p["rejected_ids"], lora) for p in pairs])
    losses, cr, rr = dpo_loss(pol_c, pol_r, ref_c, ref_r, BETA)
    loss = losses.mean()
    loss.backward()
    grad_norm = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in params.values())).item()
    torch.optim.SGD(list(params.values()), lr=LORA["lr"]).step()
    tg.write_safetensors(os.path.join(out, "expected.safetensors"), {k: v.detach() for k, v in params.items()}, "F32")
    exp = {
        "beta": BETA, "lr": LORA["lr"], "rank": r, "alpha": LORA["alpha"], "loss": loss.item(), "grad_norm": grad_norm,
        "rewards/chosen": cr.mean().item(), "rewards/rejected": rr.mean().item(),
        "rewards/accuracies": (cr > rr).float().mean().item(),
        "logps/chosen": pol_c.mean().item(), "logps/rejected": pol_r.mean().item(),
        "torch_version": torch.__version__,
    }
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(exp, f, indent=2)
    print(json.dumps(exp))


def main():
    args = sys.argv[1:]
    if args and args[0] == "--lora":
        main_lora(args[1] if len(args) > 1 else "trainer/testdata/dpo_lora_parity")
        return
    out = args[0] if args else "trainer/testdata/dpo_parity"
    torch.manual_seed(0)
    W = tg.make_weights(CFG)
    g = torch.Generator().manual_seed(99)
    R = {k: v + 0.02 * torch.randn(v.shape, generator=g) for k, v in W.items()}
    pairs = make_pairs()
    save_model(os.path.join(out, "policy"), W)
    save_model(os.path.join(out, "reference"), R)
    with open(os.path.join(out, "pairs.jsonl"), "w") as f:
        for p in pairs:
            f.write(json.dumps(p) + "\n")

    with torch.no_grad():
        ref_c = torch.stack([seq_logp(R, p["prompt_ids"], p["chosen_ids"]) for p in pairs])
        ref_r = torch.stack([seq_logp(R, p["prompt_ids"], p["rejected_ids"]) for p in pairs])
    params = {k: v.clone().requires_grad_(True) for k, v in W.items()}
    pol_c = torch.stack([seq_logp(params, p["prompt_ids"], p["chosen_ids"]) for p in pairs])
    pol_r = torch.stack([seq_logp(params, p["prompt_ids"], p["rejected_ids"]) for p in pairs])
    losses, cr, rr = dpo_loss(pol_c, pol_r, ref_c, ref_r, BETA)
    loss = losses.mean()
    loss.backward()
    grad_norm = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in params.values())).item()
    opt = torch.optim.SGD(list(params.values()), lr=LR)
    opt.step()
    tg.write_safetensors(os.path.join(out, "expected.safetensors"), {k: v.detach() for k, v in params.items()}, "F32")
    exp = {
        "beta": BETA, "lr": LR, "loss": loss.item(), "grad_norm": grad_norm,
        "rewards/chosen": cr.mean().item(), "rewards/rejected": rr.mean().item(),
        "rewards/accuracies": (cr > rr).float().mean().item(),
        "logps/chosen": pol_c.mean().item(), "logps/rejected": pol_r.mean().item(),
        "torch_version": torch.__version__,
    }
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(exp, f, indent=2)
    print(json.dumps(exp))


if __name__ == "__main__":
    main()
