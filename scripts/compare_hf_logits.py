#!/usr/bin/env python3
"""Compares kiln's GPU logits with HF transformers on the same safetensors (the GPU machine).

    compare_hf_logits.py FIXTURE_DIR [FIXTURE_DIR ...]

Each FIXTURE_DIR is a model folder written by scripts/make_fixture.py in which
tests/runtime/cuda/cuda_backend_gpu_test.cc left kiln-trace.json (the prompt and the token fed at
each decode step) and kiln-logits.f32 (kiln's logits after the prompt and after each fed token).
transformers runs prompt + fed tokens as one fp32 forward on the GPU, with the weights rounded to
bf16 first as kiln stores them (so the comparison measures the computation); the logits at the same
positions are compared: relative L2 error per position (bound 2e-2, bf16 activations) and argmax
agreement (bound 99%). Prints one row per fixture; exits 1 when a bound fails.
"""
import json
import os
import sys

import numpy as np


def compare(d):
    import torch
    from transformers import AutoModelForCausalLM
    trace = json.load(open(os.path.join(d, "kiln-trace.json")))
    prompt, fed, steps = trace["prompt"], trace["fed"], trace["steps"]
    kiln = np.fromfile(os.path.join(d, "kiln-logits.f32"), dtype="<f4").reshape(steps, -1)
    model = AutoModelForCausalLM.from_pretrained(d, torch_dtype=torch.float32).cuda().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    ids = torch.tensor([prompt + fed], device="cuda")
    with torch.no_grad():
        hf = model(ids).logits[0].float().cpu().numpy()
    rows = hf[len(prompt) - 1: len(prompt) - 1 + steps]
    rel = np.linalg.norm(kiln - rows, axis=1) / np.linalg.norm(rows, axis=1)
    agree = float(np.mean(kiln.argmax(1) == rows.argmax(1)))
    return float(rel.max()), agree, steps


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    ok = True
    print(f"{'fixture':32} {'positions':>9} {'max rel err':>12} {'argmax equal':>13}  verdict")
    for d in sys.argv[1:]:
        name = os.path.basename(os.path.normpath(d))
        if not os.path.exists(os.path.join(d, "kiln-trace.json")):
            print(f"{name:32} {'-':>9} {'-':>12} {'-':>13}  SKIP (no kiln trace)")
            continue
        try:
            rel, agree, n = compare(d)
        except Exception as ex:  # report and continue with the other fixtures
            print(f"{name:32} {'-':>9} {'-':>12} {'-':>13}  ERROR {type(ex).__name__}: {ex}")
            ok = False
            continue
        good = rel <= 2e-2 and agree >= 0.99
        ok &= good
        print(f"{name:32} {n:9d} {rel:12.3g} {agree:13.1%}  {'PASS' if good else 'FAIL'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
