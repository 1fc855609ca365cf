#!/usr/bin/env python3
"""Writes a random-weight HF model folder for benchmarks at a given shape, fast: the same layout
scripts/make_fixture.py writes (config.json, tokenizer files, safetensors shards), but the values
are drawn on the GPU with torch instead of numpy, so the 16 GB Llama-3-8B shape takes seconds of
compute instead of minutes. Values are not make_fixture's (benchmarks measure the shape, not the
values); correctness checks use make_fixture.py itself.

    make_bench_model.py --config shared/models/llama3-8b.config.json --out DIR [--shards 4]
"""
import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
import make_fixture as mf  # noqa: E402


def torch_generate(seed, name, shape, kind):
    g = torch.Generator(device="cuda")
    g.manual_seed((seed * 1000003 + mf.zlib.crc32(name.encode())) & 0x7FFFFFFFFFFFFFFF)
    cols = shape[-1]
    rows = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
    step = max(1, (1 << 26) // cols)
    scale = {"embed": 1.0, "matrix": 1.0 / mf.math.sqrt(cols), "norm": 0.1, "bias": 0.1}[kind]
    for r in range(0, rows, step):
        n = min(step, rows - r)
        x = torch.randn((n, cols), generator=g, device="cuda", dtype=torch.float32) * scale
        if kind == "norm":
            x += 1.0
        yield x


def torch_round_to(x, dtype):
    t = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[dtype]
    y = x.to(t)
    raw = y.view(torch.int16 if dtype != "f32" else torch.int32).cpu().numpy().tobytes()
    return raw, None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "f16"])
    ap.add_argument("--shards", type=int, default=1)
    a = ap.parse_args()
    mf.generate = torch_generate
    mf.round_to = torch_round_to
    sys.argv = [sys.argv[0], "--config", a.config, "--out", a.out, "--dtype", a.dtype, "--no-gguf",
                "--shards", str(a.shards)]
    mf.main()


if __name__ == "__main__":
    main()
