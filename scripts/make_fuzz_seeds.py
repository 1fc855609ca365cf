#!/usr/bin/env python3
"""Writes the seed corpora of kiln's fuzz targets (fuzz/*_fuzz.cc), one folder per target, from
tiny models made by make_fixture.py (generated at CI time, never committed):

    make_fuzz_seeds.py OUT     # OUT/{gguf,safetensors,config_json,tokenizer_json,ir_text,plan}/

Inputs that once crashed or hung a reader live in tests/fuzz_regressions/<target>/ and are added
to the seeds, so every fuzz run starts by replaying them.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Small enough that every seed is tens of kilobytes (libFuzzer mutates each input whole).
TINY = {"architectures": ["LlamaForCausalLM"], "hidden_size": 16, "intermediate_size": 32,
        "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
        "max_position_embeddings": 64, "torch_dtype": "float32"}
VARIANTS = [
    TINY,
    dict(TINY, architectures=["Qwen2ForCausalLM"], tie_word_embeddings=True,
         sliding_window=32, use_sliding_window=False, rms_norm_eps=1e-6),
    dict(TINY, architectures=["MistralForCausalLM"], sliding_window=32, rope_theta=1e6),
    dict(TINY, rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                             "high_freq_factor": 4.0, "original_max_position_embeddings": 16},
         head_dim=16, bos_token_id=1, eos_token_id=2),
]

SMALL_IR = """graph @g {
  symbol T <= 8
  symbol S <= 2
  input %x : f32[T,4]
  input %qo : i32[S+1]
  param @w : f32[3,4]
  %0 = matmul(%x, @w) : f32[T,3]
  %1 = exp(%0) : f32[T,3]
  %2 = reduce_sum(%1) : f32[T,1]
  %3 = div(%1, %2) : f32[T,3]
  output y = %3
}
"""

PLAN_MANIFEST = {
    "format_version": 1, "kiln_version": "0.1.0", "arch": "sm_90a", "nvrtc_version": "13.0",
    "model": {"summary": "llama: seed"}, "ir": SMALL_IR,
    "kernels": [{"key": "k", "entry": "k", "family": "rope", "cubin_blob": 0, "ptx_blob": 1,
                 "source_blob": 2, "registers": 32, "shared_bytes": 0}],
    "launches": [], "gemms": [], "weights": [
        {"name": "embed", "dtype": "f32", "shape": [4, 4], "blob": 0},
        {"name": "lm_head", "dtype": "f32", "shape": [4, 4], "file": "/nonexistent/w.bin",
         "offset": 0, "size": 64, "xxh3": 1}],
    "blobs": [], "kv_plan": {"page_size": 16, "layout": "NHD"},
}


# A tensor-parallel manifest's own fields: ranks, collectives, per-rank weights of column parts.
PLAN_TP_MANIFEST = dict(PLAN_MANIFEST, format_version=3, ranks=2, collectives=[
    {"node": 3, "kind": "all_reduce", "dtype": "bf16", "in": "%2", "out": "%3", "outer": "T",
     "inner": 8},
    {"node": 7, "kind": "all_gather", "dtype": "f32", "in": "%6", "out": "%7", "outer": "S",
     "inner": 16}], weights=PLAN_MANIFEST["weights"] + [
    {"name": "o.shard", "rank": r, "dtype": "f32", "shape": [4, 2],
     "parts": [{"source": "lm_head", "cols": [2 * r, 2 * r + 2]}]} for r in (0, 1)])


def write(path, data):
    with open(path, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    dirs = {t: os.path.join(out, t) for t in
            ("gguf", "safetensors", "config_json", "tokenizer_json", "ir_text", "plan")}
    for d in dirs.values():
        os.makedirs(d, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for i, cfg in enumerate(VARIANTS):
            cfg_path = os.path.join(tmp, f"config{i}.json")
            write(cfg_path, json.dumps(cfg))
            model = os.path.join(tmp, f"m{i}")
            types = "f32,q4_0" if i == 0 else "q8_0"
            subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "make_fixture.py"),
                            "--config", cfg_path, "--out", model, "--gguf-type", types],
                           check=True, stdout=subprocess.DEVNULL)
            for name in os.listdir(model):
                src = os.path.join(model, name)
                if name.endswith(".gguf"):
                    shutil.copy(src, os.path.join(dirs["gguf"], f"m{i}.{name}"))
                elif name == "model.safetensors":
                    shutil.copy(src, os.path.join(dirs["safetensors"], f"m{i}.safetensors"))
                elif name == "config.json":
                    shutil.copy(src, os.path.join(dirs["config_json"], f"m{i}.json"))
            with open(os.path.join(model, "tokenizer.json"), "rb") as f:
                tok = f.read()
            with open(os.path.join(model, "tokenizer_config.json"), "rb") as f:
                tok_cfg = f.read()
            if i == 0:  # the tokenizers are the same across variants
                write(os.path.join(dirs["tokenizer_json"], "tokenizer.json"), tok)
                write(os.path.join(dirs["tokenizer_json"], "with_config"), tok + b"\0" + tok_cfg)
    for name in os.listdir(os.path.join(ROOT, "tests", "ir", "testdata")):
        if name.endswith(".kir"):
            shutil.copy(os.path.join(ROOT, "tests", "ir", "testdata", name),
                        os.path.join(dirs["ir_text"], name))
    write(os.path.join(dirs["ir_text"], "small.kir"), SMALL_IR)
    # Even first byte: the rest is a manifest the target wraps with valid checksums.
    write(os.path.join(dirs["plan"], "manifest"), b"\0" + json.dumps(PLAN_MANIFEST).encode())
    write(os.path.join(dirs["plan"], "manifest_tp"), b"\0" + json.dumps(PLAN_TP_MANIFEST).encode())
    regressions = os.path.join(ROOT, "tests", "fuzz_regressions")
    for target, d in dirs.items():
        src = os.path.join(regressions, target)
        if os.path.isdir(src):
            for name in os.listdir(src):
                shutil.copy(os.path.join(src, name), os.path.join(d, "regression." + name))
    for target, d in sorted(dirs.items()):
        print(f"make_fuzz_seeds: {target}: {len(os.listdir(d))} seeds")


if __name__ == "__main__":
    main()
