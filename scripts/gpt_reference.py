#!/usr/bin/env python3
"""PyTorch reference for `halfgrad gpt train`: the same byte-level GPT-2, data, split,
schedule, optimizer, initialisation distribution and number of steps, printing the
validation loss so the two can be compared (issue 13: f32 within 2% of PyTorch).

The batch order differs (torch's generator draws the windows), everything else follows
halfgrad:
- data: the file's bytes; train = the first 90% (floor(len * 9 / 10) bytes), validation =
  the rest. A training sequence is a window of block + 1 bytes at a uniform random start
  in the training bytes (inputs = the first block bytes, targets = the next block).
- validation loss: the mean next-byte cross-entropy (natural log) over the validation
  bytes' non-overlapping windows (window i: inputs bytes[i*T .. i*T+T], targets shifted
  by one), at most --eval-windows of them evenly spaced (window floor(j * W / K) for j in
  0..K when there are W > K windows); --eval-windows 0 takes all (`halfgrad gpt eval`).
- model: token + learned position embedding, pre-LayerNorm blocks (causal multi-head
  attention, 4x GELU-tanh MLP), final LayerNorm, LM head tied to the token embedding,
  no dropout, LayerNorm eps 1e-5.
- init: GPT-2's: N(0, 0.02) for embeddings and weights, N(0, 0.02 / sqrt(2 n_layer)) for
  the attention and MLP output projections, LayerNorm 1 / 0, biases 0.
- optimizer: AdamW on every parameter (one group: weight decay on all, as halfgrad's
  AdamW), global gradient-norm clipping, lr(step) = lr * factor(step) with linear warmup
  ((s + 1) / warmup for s < warmup) then half a cosine to 0 at --steps.
- f32 throughout (TF32 off), unless --autocast bf16|f16 (then torch.autocast with a
  GradScaler for f16).

Run on a machine with PyTorch:
    python3 scripts/gpt_reference.py --data data/kjv.txt --steps 500
It prints a line per evaluation and one JSON object at the end.
"""
import argparse
import json
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, c, n_head):
        super().__init__()
        self.n_head = n_head
        self.ln_1 = nn.LayerNorm(c, eps=1e-5)
        self.c_attn = nn.Linear(c, 3 * c)
        self.c_proj = nn.Linear(c, c)
        self.ln_2 = nn.LayerNorm(c, eps=1e-5)
        self.c_fc = nn.Linear(c, 4 * c)
        self.mlp_proj = nn.Linear(4 * c, c)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(c, dim=2)
        hd = c // self.n_head
        q, k, v = (z.view(b, t, self.n_head, hd).transpose(1, 2) for z in (q, k, v))
        s = (q @ k.transpose(-2, -1)).float() * (1.0 / math.sqrt(hd))
        mask = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        p = s.masked_fill(~mask, float("-inf")).softmax(dim=-1).to(v.dtype)
        y = (p @ v).transpose(1, 2).reshape(b, t, c)
        x = x + self.c_proj(y)
        x = x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))
        return x


class GPT(nn.Module):
    def __init__(self, vocab, block, n_layer, n_head, n_embd):
        super().__init__()
        self.wte = nn.Embedding(vocab, n_embd)
        self.wpe = nn.Embedding(block, n_embd)
        self.h = nn.ModuleList(Block(n_embd, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd, eps=1e-5)
        proj_std = 0.02 / math.sqrt(2 * n_layer)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight") or name.endswith("mlp_proj.weight"):
                nn.init.normal_(p, 0.0, proj_std)
            elif name.startswith("ln") or ".ln_" in name:
                nn.init.ones_(p) if name.endswith("weight") else nn.init.zeros_(p)
            elif name.endswith("bias"):
                nn.init.zeros_(p)
            else:
                nn.init.normal_(p, 0.0, 0.02)

    def forward(self, idx, targets=None):
        t = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(t, device=idx.device))
        for blk in self.h:
            x = blk(x)
        logits = self.ln_f(x) @ self.wte.weight.t()
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.reshape(-1))
        return logits, loss


def factor(step, warmup, total):
    if step < warmup:
        return (step + 1) / warmup
    if step >= total:
        return 0.0
    t = (step - warmup) / max(total - warmup, 1)
    return 0.5 * (1.0 + math.cos(math.pi * t))


def eval_windows(data, block, k):
    w = (len(data) - 1) // block  # every i with i*T + T + 1 <= len
    idx = list(range(w)) if k == 0 or w <= k else [j * w // k for j in range(k)]
    return idx


@torch.no_grad()
def evaluate(model, val, block, windows, device, ctx, chunk=256):
    total, count = 0.0, 0
    for s in range(0, len(windows), chunk):
        starts = windows[s : s + chunk]
        x = torch.stack([val[i * block : i * block + block] for i in starts]).to(device)
        y = torch.stack([val[i * block + 1 : i * block + block + 1] for i in starts]).to(device)
        with ctx():
            logits, _ = model(x)
        loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), y.reshape(-1), reduction="sum")
        total += loss.item()
        count += y.numel()
    return total / count


@torch.no_grad()
def sample(model, prompt, tokens, block, device, temperature=0.8, top_k=40, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    idx = torch.tensor([list(prompt)], dtype=torch.long, device=device)
    for _ in range(tokens):
        logits, _ = model(idx[:, -block:])
        logits = logits[0, -1].float().cpu() / temperature
        v, _ = torch.topk(logits, top_k)
        logits[logits < v[-1]] = -float("inf")
        nxt = torch.multinomial(logits.softmax(-1), 1, generator=g)
        idx = torch.cat([idx, nxt.view(1, 1).to(device)], dim=1)
    return bytes(idx[0].tolist()).decode("utf-8", errors="replace")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data/kjv.txt")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--embd", type=int, default=64)
    ap.add_argument("--block", type=int, default=64)
    ap.add_argument("--vocab", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--warmup", type=int, default=None, help="default: min(100, steps / 10)")
    ap.add_argument("--lr", type=float, default=6e-3)
    ap.add_argument("--beta1", type=float, default=0.9)
    ap.add_argument("--beta2", type=float, default=0.99)
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--eval-windows", type=int, default=64)
    ap.add_argument("--full-eval", action="store_true", help="also report the loss over every validation window")
    ap.add_argument("--autocast", choices=["off", "bf16", "f16"], default="off")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--sample-tokens", type=int, default=300)
    a = ap.parse_args()

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(a.seed)
    raw = open(a.data, "rb").read()
    data = torch.tensor(list(raw), dtype=torch.long)
    n_train = len(raw) * 9 // 10
    train, val = data[:n_train], data[n_train:]
    windows = eval_windows(val, a.block, a.eval_windows)
    warmup = a.warmup if a.warmup is not None else min(100, a.steps // 10)

    model = GPT(a.vocab, a.block, a.layers, a.heads, a.embd).to(a.device)
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(a.beta1, a.beta2), eps=1e-8, weight_decay=a.weight_decay)
    dtype = {"bf16": torch.bfloat16, "f16": torch.float16}.get(a.autocast)
    ctx = (lambda: torch.autocast(device_type="cuda", dtype=dtype)) if dtype else (lambda: torch.autocast(device_type="cuda", enabled=False))
    scaler = torch.amp.GradScaler(enabled=a.autocast == "f16")
    g = torch.Generator().manual_seed(a.seed)

    print(f"model: {a.layers} layers, {a.heads} heads, width {a.embd}, block {a.block}, {params} parameters; "
          f"data {len(raw)} bytes ({n_train} train), {len(windows)} eval windows; device {a.device}")
    start = time.time()
    val_loss = evaluate(model, val, a.block, windows, a.device, ctx)
    print(f"step {0:6d}  val loss {val_loss:.4f}")
    loss = torch.tensor(float("nan"))
    for step in range(a.steps):
        for group in opt.param_groups:
            group["lr"] = a.lr * factor(step, warmup, a.steps)
        starts = torch.randint(0, n_train - a.block, (a.batch,), generator=g)
        x = torch.stack([train[s : s + a.block] for s in starts.tolist()]).to(a.device)
        y = torch.stack([train[s + 1 : s + a.block + 1] for s in starts.tolist()]).to(a.device)
        with ctx():
            _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), a.clip)
        scaler.step(opt)
        scaler.update()
        if (step + 1) % a.eval_every == 0 and step + 1 < a.steps:
            val_loss = evaluate(model, val, a.block, windows, a.device, ctx)
            print(f"step {step + 1:6d}  train loss {loss.item():.4f}  val loss {val_loss:.4f}")
    seconds = time.time() - start
    val_loss = evaluate(model, val, a.block, windows, a.device, ctx)
    result = {
        "steps": a.steps, "batch": a.batch, "lr": a.lr, "warmup": warmup, "weight_decay": a.weight_decay,
        "betas": [a.beta1, a.beta2], "layers": a.layers, "heads": a.heads, "embd": a.embd, "block": a.block,
        "parameters": params, "autocast": a.autocast, "seed": a.seed, "train_loss": loss.item(),
        "val_loss": val_loss, "eval_windows": len(windows), "seconds": seconds,
    }
    if a.full_eval:
        all_windows = eval_windows(val, a.block, 0)
        result["val_loss_all_windows"] = evaluate(model, val, a.block, all_windows, a.device, ctx)
        result["all_windows"] = len(all_windows)
    if a.sample_tokens > 0:
        result["sample"] = sample(model, b"And ", a.sample_tokens, a.block, a.device)
        print("sample:", result["sample"])
    print(json.dumps(result))


if __name__ == "__main__":
    main()
