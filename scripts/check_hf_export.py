#!/usr/bin/env python3
"""Loads a `halfgrad gpt export --out DIR` folder with Hugging Face transformers and
prints the mean next-byte cross-entropy (natural log) of a text, defined exactly as
`halfgrad gpt eval --text FILE` defines it, so the two numbers can be compared:

    halfgrad gpt export --checkpoint run.safetensors --out run-hf
    halfgrad gpt eval --checkpoint run.safetensors --text data/kjv.txt --json
    python3 scripts/check_hf_export.py run-hf --text data/kjv.txt

The windows are non-overlapping: window i has inputs bytes[i*T .. i*T+T] and targets
bytes[i*T+1 .. i*T+T+1] for every i with i*T+T+1 <= len, T = n_positions. The model
runs in f32 (TF32 off) in eval mode. Prints one JSON object: val_loss, windows, tokens,
parameters, and the first window's logits checksum for a quick look.
"""
import argparse
import json

import torch
import torch.nn.functional as F
from transformers import GPT2LMHeadModel


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", help="folder with config.json and model.safetensors")
    ap.add_argument("--text", required=True, help="the text file to score (bytes are tokens)")
    ap.add_argument("--batch", type=int, default=64, help="windows per forward pass")
    ap.add_argument("--max-windows", type=int, default=0, help="score only the first N windows (0: all)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args()

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model = GPT2LMHeadModel.from_pretrained(a.dir, torch_dtype=torch.float32).to(a.device).eval()
    # The export ties the LM head to the token embedding: check transformers did too.
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr(), "LM head not tied"
    t = model.config.n_positions
    raw = open(a.text, "rb").read()
    if max(raw, default=0) >= model.config.vocab_size:
        raise SystemExit(f"the text has byte {max(raw)}, outside the vocabulary of {model.config.vocab_size}")
    windows = (len(raw) - 1) // t if len(raw) > t else 0
    if a.max_windows:
        windows = min(windows, a.max_windows)
    if windows == 0:
        raise SystemExit(f"{a.text}: {len(raw)} bytes is shorter than block + 1 = {t + 1}")
    data = torch.tensor(list(raw[: windows * t + 1]), dtype=torch.long)
    total, first = 0.0, None
    with torch.no_grad():
        for s in range(0, windows, a.batch):
            idx = range(s, min(s + a.batch, windows))
            x = torch.stack([data[i * t : i * t + t] for i in idx]).to(a.device)
            y = torch.stack([data[i * t + 1 : i * t + t + 1] for i in idx]).to(a.device)
            logits = model(input_ids=x).logits.float()
            if first is None:
                first = logits[0].double().sum().item()
            total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum").item()
    print(json.dumps({
        "val_loss": total / (windows * t),
        "windows": windows,
        "tokens": windows * t,
        "parameters": sum(p.numel() for p in model.parameters()),
        "first_window_logit_sum": first,
    }))


if __name__ == "__main__":
    main()
