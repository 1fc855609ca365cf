#!/usr/bin/env python3
"""Runs hand-made hostile inputs through a Release `kiln` and tabulates what each reader did:

    hostile_inputs.py --kiln build/tools/kiln --work DIR [--mutations N]

Per reader (GGUF, safetensors, config.json, tokenizer.json, IR text, plan) it builds targeted
attacks (huge counts, NaN/inf hyper-parameters, overlapping or reversed offsets, wrong JSON types,
deep nesting, FIFOs and /dev/zero, binary input, ...) plus N random truncations and byte flips of a
valid tiny model from make_fixture.py, runs each under /usr/bin/time -v with a timeout, and prints
a markdown table: inputs, rejected (exit 1 with a message), accepted (exit 0), crashed (a signal,
a sanitizer report or no message), hung (past the timeout), and the worst peak RSS.
"""
import argparse
import json
import os
import random
import re
import shutil
import struct
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 20
TINY = {"architectures": ["LlamaForCausalLM"], "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
        "max_position_embeddings": 64, "torch_dtype": "float32"}


class Tally:
    def __init__(self):
        self.rows = {}

    def run(self, reader, label, argv):
        row = self.rows.setdefault(reader, {"inputs": 0, "rejected": 0, "accepted": 0,
                                            "accepted_labels": [],
                                            "crashed": [], "hung": [], "peak_kb": 0,
                                            "peak_label": ""})
        row["inputs"] += 1
        cmd = ["/usr/bin/time", "-v", "timeout", "-s", "KILL", str(TIMEOUT)] + argv
        p = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
        m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)
        kb = int(m.group(1)) if m else 0
        if kb > row["peak_kb"]:
            row["peak_kb"], row["peak_label"] = kb, label
        err = p.stderr.split("\tCommand being timed")[0]
        signaled = re.search(r"Command terminated by signal (\d+)", p.stderr)
        exit_m = re.search(r"Exit status: (\d+)", p.stderr)
        status = int(exit_m.group(1)) if exit_m else -1
        if signaled and signaled.group(1) == "9":
            row["hung"].append(label)
        elif signaled or status >= 128 or "Sanitizer" in err or "terminate called" in err:
            row["crashed"].append(f"{label}: {err.strip()[-200:]}")
        elif status == 0:
            row["accepted"] += 1
            if not re.match(r"(flip|truncate)\d+$", label):
                row["accepted_labels"].append(label)
        elif err.strip():
            row["rejected"] += 1
        else:
            row["crashed"].append(f"{label}: exit {status} without a message")

    def table(self):
        out = ["| reader | inputs | rejected | accepted | crashed | hung | peak RSS (worst case) |",
               "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
        for reader, r in self.rows.items():
            out.append(f"| {reader} | {r['inputs']} | {r['rejected']} | {r['accepted']} | "
                       f"{len(r['crashed'])} | {len(r['hung'])} | {r['peak_kb'] / 1024:.0f} MB "
                       f"({r['peak_label']}) |")
        for reader, r in self.rows.items():
            if r["accepted_labels"]:
                out.append(f"- accepted {reader} (targeted): {', '.join(r['accepted_labels'])}")
        for reader, r in self.rows.items():
            for c in r["crashed"]:
                out.append(f"- CRASH {reader}: {c}")
            for h in r["hung"]:
                out.append(f"- HANG {reader}: {h}")
        return "\n".join(out)


def mutations(data, n, rng):
    """n random truncations and 1-4 byte flips of `data`."""
    for i in range(n):
        b = bytearray(data)
        if i % 4 == 0:
            yield f"truncate{i}", bytes(b[:rng.randrange(len(b))])
            continue
        for _ in range(rng.randint(1, 4)):
            pos = rng.randrange(len(b))
            b[pos] = rng.choice(b"0123456789\"{}[],:-eE.\xff\x00") if rng.random() < 0.5 \
                else rng.randrange(256)
        yield f"flip{i}", bytes(b)


def patch_gguf_value(data, key, fmt, value):
    """The GGUF with metadata `key`'s value (after its u32 type) replaced by struct `fmt`."""
    k = key.encode()
    i = data.find(struct.pack("<Q", len(k)) + k)
    assert i >= 0, key
    at = i + 8 + len(k) + 4
    size = struct.calcsize("<" + fmt)
    return data[:at] + struct.pack("<" + fmt, value) + data[at + size:]


def gguf_type_of(data, key):
    k = key.encode()
    i = data.find(struct.pack("<Q", len(k)) + k)
    return struct.unpack_from("<I", data, i + 8 + len(k))[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--mutations", type=int, default=200)
    a = ap.parse_args()
    kiln = os.path.abspath(a.kiln)
    work = os.path.abspath(a.work)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    rng = random.Random(16)
    cfg_path = os.path.join(work, "config.in.json")
    with open(cfg_path, "w") as f:
        json.dump(TINY, f)
    model = os.path.join(work, "model")
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "make_fixture.py"), "--config",
                    cfg_path, "--out", model, "--gguf-type", "f32,q8_0"], check=True,
                   stdout=subprocess.DEVNULL)
    t = Tally()
    run_gen = ["run", "-n", "2", "--device", "cpu", "-p", "Hello"]

    # --- GGUF: kiln run (reader, config, tokenizer, weights, generation) ---
    gguf = open(os.path.join(model, "model.f32.gguf"), "rb").read()
    g_path = os.path.join(work, "x.gguf")

    def gguf_case(label, data):
        with open(g_path, "wb") as f:
            f.write(data)
        t.run("GGUF", label, [kiln] + run_gen[:1] + [g_path] + run_gen[1:])

    gguf_case("valid", gguf)
    bc_type = gguf_type_of(gguf, "llama.block_count")
    bc_fmt = {4: "I", 10: "Q", 5: "i"}[bc_type]
    for v in [0, 3, 1000, 2**31 - 1, 2**31, 2**32 - 1] + ([2**32, 2**63 - 1] if bc_fmt == "Q" else []):
        gguf_case(f"block_count={v}", patch_gguf_value(gguf, "llama.block_count", bc_fmt, v))
    for key in ["llama.rope.freq_base", "llama.attention.layer_norm_rms_epsilon"]:
        for v in [float("nan"), float("inf"), -1.0, 0.0]:
            gguf_case(f"{key}={v}", patch_gguf_value(gguf, key, "f", v))
    for key in ["llama.attention.head_count", "llama.attention.head_count_kv",
                "llama.embedding_length", "llama.feed_forward_length", "llama.context_length"]:
        fmt = {4: "I", 10: "Q", 5: "i"}[gguf_type_of(gguf, key)]
        for v in [0, 3, 7, 2**31 - 1]:
            gguf_case(f"{key}={v}", patch_gguf_value(gguf, key, fmt, v))
    for off, v, label in [(8, 2**63, "tensor_count=2^63"), (16, 2**63, "kv_count=2^63"),
                          (8, 2**32, "tensor_count=2^32")]:
        gguf_case(label, gguf[:off] + struct.pack("<Q", v) + gguf[off + 8:])
    for label, data in mutations(gguf, a.mutations, rng):
        gguf_case(label, data)
    for special in ["/dev/zero", "fifo"]:
        p = os.path.join(work, "special.gguf")
        if os.path.lexists(p):
            os.remove(p)
        if special == "fifo":
            os.mkfifo(p)
        else:
            os.symlink(special, p)
        t.run("GGUF", special, [kiln, "run", p, "-n", "1", "-p", "x"])

    # --- HF directory pieces: config.json, safetensors, tokenizer.json through kiln run ---
    hf = os.path.join(work, "hf")

    def hf_case(reader, label, config=None, st=None, tok=None, special=None):
        shutil.rmtree(hf, ignore_errors=True)
        os.makedirs(hf)
        for name in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]:
            shutil.copy(os.path.join(model, name), os.path.join(hf, name))
        for name, data in [("config.json", config), ("model.safetensors", st),
                           ("tokenizer.json", tok)]:
            if data is not None:
                with open(os.path.join(hf, name), "wb") as f:
                    f.write(data if isinstance(data, bytes) else data.encode())
        if special:
            name, kind = special
            os.remove(os.path.join(hf, name))
            if kind == "fifo":
                os.mkfifo(os.path.join(hf, name))
            else:
                os.symlink(kind, os.path.join(hf, name))
        t.run(reader, label, [kiln] + run_gen[:1] + [hf] + run_gen[1:])

    config = json.load(open(os.path.join(model, "config.json")))
    hf_case("config.json", "valid")
    wrong = ["\"x\"", "null", "true", "1.5", "[]", "{}", "-1", "0", "1e999", "18446744073709551615",
             "9223372036854775807", "2147483648", "4294967296"]
    for key in ["hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                "intermediate_size", "vocab_size", "max_position_embeddings", "head_dim",
                "rms_norm_eps", "rope_theta", "tie_word_embeddings", "attention_bias", "mlp_bias",
                "sliding_window", "use_sliding_window", "rope_scaling", "bos_token_id",
                "eos_token_id", "torch_dtype", "hidden_act", "architectures"]:
        for v in wrong:
            c = dict(config)
            c[key] = "@V@"
            hf_case("config.json", f"{key}={v}", config=json.dumps(c).replace('"@V@"', v))
    for rs in ["linear", "dynamic", "yarn", "llama3", "longrope", "\"\""]:
        c = dict(config, rope_scaling={"rope_type": rs, "factor": 4.0})
        hf_case("config.json", f"rope_scaling={rs}", config=json.dumps(c))
    for label, text in [("deep[", "[" * 100000), ("deep{}", '{"a":' * 100000),
                        ("nested-field", json.dumps(dict(config, hidden_size="@V@")).replace(
                            '"@V@"', "[" * 50000 + "]" * 50000)),
                        ("empty", ""), ("binary", "\x00\x01\xff"), ("17MB", " " * (17 << 20))]:
        hf_case("config.json", label, config=text)
    for label, data in mutations(json.dumps(config, indent=1).encode(), a.mutations, rng):
        hf_case("config.json", label, config=data)
    for kind in ["/dev/zero", "fifo", "/"]:
        hf_case("config.json", f"config.json={kind}", special=("config.json", kind))

    st = open(os.path.join(model, "model.safetensors"), "rb").read()
    n = struct.unpack_from("<Q", st)[0]
    header = json.loads(st[8:8 + n])
    data = st[8 + n:]

    def st_bytes(h, pad=True, body=None):
        hb = json.dumps(h).encode()
        if pad:
            hb += b" " * (-len(hb) % 8)
        return struct.pack("<Q", len(hb)) + hb + (data if body is None else body)

    hf_case("safetensors", "valid", st=st_bytes(header))
    names = [k for k in header if k != "__metadata__"]
    first, second = names[0], names[1]
    attacks = []
    h = json.loads(json.dumps(header))
    h[second]["data_offsets"] = list(h[first]["data_offsets"])
    h[second]["shape"], h[second]["dtype"] = h[first]["shape"], h[first]["dtype"]
    attacks.append(("overlap-identical", h))
    h = json.loads(json.dumps(header))
    b0, e0 = h[first]["data_offsets"]
    h[first]["data_offsets"] = [e0, b0]
    attacks.append(("reversed", h))
    h = json.loads(json.dumps(header))
    h[first]["dtype"] = "F16" if h[first]["dtype"] == "F32" else "F32"
    attacks.append(("dtype-size-mismatch", h))
    h = json.loads(json.dumps(header))
    h[first]["shape"] = [2**32, 2**32]
    attacks.append(("shape-overflow", h))
    h = json.loads(json.dumps(header))
    h[first]["data_offsets"] = [2**64 - 1, 2**64 - 1]
    attacks.append(("offset-2^64", h))
    h = json.loads(json.dumps(header))
    h[first]["data_offsets"] = [b0 + 2, e0 + 2]
    attacks.append(("misaligned-offset", h))
    for label, hh in attacks:
        hf_case("safetensors", label, st=st_bytes(hh))
    hf_case("safetensors", "unpadded-header", st=st_bytes(header, pad=False))
    hf_case("safetensors", "header-len=2^63", st=struct.pack("<Q", 2**63) + st[8:])
    hf_case("safetensors", "header-len=file", st=struct.pack("<Q", len(st) - 8) + st[8:])
    for label, d in mutations(st[:8 + n + 64], a.mutations // 2, rng):
        hf_case("safetensors", "header-" + label, st=d + data[64:])
    for label, d in mutations(st, a.mutations // 2, rng):
        hf_case("safetensors", label, st=d)
    for kind in ["/dev/zero", "fifo"]:
        hf_case("safetensors", f"model.safetensors={kind}", special=("model.safetensors", kind))

    tok = open(os.path.join(model, "tokenizer.json"), "rb").read()
    tj = json.loads(tok)
    hf_case("tokenizer.json", "valid")
    depth = 30000  # built as text: Python's own json would recurse too deep
    deep = ('{"type":"Sequence","pretokenizers":[' * depth + '{"type":"Whitespace"}' +
            "]}" * depth)
    hf_case("tokenizer.json", f"pre_tokenizer-Sequence-{depth}-deep",
            tok=json.dumps(dict(tj, pre_tokenizer="@V@")).replace('"@V@"', deep))
    for key in ["model", "pre_tokenizer", "added_tokens", "decoder", "normalizer"]:
        for v in wrong:
            d = dict(tj)
            d[key] = "@V@"
            hf_case("tokenizer.json", f"{key}={v}", tok=json.dumps(d).replace('"@V@"', v))
    for label, d in mutations(tok, a.mutations, rng):
        hf_case("tokenizer.json", label, tok=d)
    for kind in ["/dev/zero", "fifo"]:
        hf_case("tokenizer.json", f"tokenizer.json={kind}", special=("tokenizer.json", kind))

    # --- IR text: kiln ir x.kir ---
    kir = open(os.path.join(ROOT, "tests", "ir", "testdata", "all_ops.kir"), "rb").read()
    k_path = os.path.join(work, "x.kir")

    def ir_case(label, data):
        with open(k_path, "wb") as f:
            f.write(data if isinstance(data, bytes) else data.encode())
        t.run("IR text", label, [kiln, "ir", k_path])

    ir_case("valid", kir)
    head = "graph @g {\n  symbol T <= 8\n  input %x : f32[T,4]\n"
    ir_case("binary-gguf", gguf[:4096])
    ir_case("10MB-line", head + '  %y = neg(%x) {note = "' + "a" * (10 << 20) + '"} : f32[T,5]\n'
            "  output y = %y\n}")
    ir_case("2^63-bytes", "graph @g {\n  symbol T <= 1099511627776\n  input %x : f32[T,8388608]\n"
            "  %y = exp(%x) : f32[T,8388608]\n  output y = %y\n}")
    ir_case("dim-2^62", "graph @g {\n  input %x : f32[4611686018427387904]\n"
            "  %y = exp(%x) : f32[4611686018427387904]\n  output y = %y\n}")
    ir_case("10k-symbols", "graph @g {\n" + "".join(f"  symbol S{i} <= 4\n" for i in range(10000))
            + "  input %x : f32[4]\n  %y = exp(%x) : f32[4]\n  output y = %y\n}")
    ir_case("deep-parens", head + "  %y = neg(" + "(" * 100000 + "\n}")
    # Through the compiler too: plan-memory must refuse what its sizes cannot hold.
    gguf_q8 = os.path.join(model, "model.q8_0.gguf")
    for label, text in [
            ("compile-2^63-bytes", "graph @g {\n  symbol T <= 1099511627776\n"
             "  input %x : f32[T,8388608]\n  %y = exp(%x) : f32[T,8388608]\n  output y = %y\n}"),
            ("compile-2^62-elements", "graph @g {\n  input %x : f32[4611686018427387904]\n"
             "  %y = exp(%x) : f32[4611686018427387904]\n  output y = %y\n}"),
            ("compile-live-sum", "graph @g {\n  input %x : f32[1152921504606846976]\n"
             "  %a = exp(%x) : f32[1152921504606846976]\n  %b = neg(%x) : f32[1152921504606846976]\n"
             "  %y = add(%a, %b) : f32[1152921504606846976]\n  output y = %y\n}")]:
        with open(k_path, "w") as f:
            f.write(text)
        t.run("IR text", label, [kiln, "compile", gguf_q8, "--from-ir", k_path, "-o",
                                 os.path.join(work, "ir.kplan")])
    for label, d in mutations(kir, a.mutations, rng):
        ir_case(label, d)

    # --- plan files: kiln inspect (needs NVRTC to compile the seed plan) ---
    plan = os.path.join(work, "m.kplan")
    subprocess.run([kiln, "compile", os.path.join(model, "model.q8_0.gguf"), "-o", plan],
                   capture_output=True)
    if os.path.exists(plan):
        pb = open(plan, "rb").read()
        p_path = os.path.join(work, "x.kplan")

        def plan_case(label, data):
            with open(p_path, "wb") as f:
                f.write(data)
            t.run("plan", label, [kiln, "inspect", p_path])

        plan_case("valid", pb)
        for v in [0, 2**63, 2**64 - 1, len(pb)]:
            plan_case(f"manifest-len={v}", pb[:9] + struct.pack("<Q", v) + pb[17:])
        plan_case("version=2", pb[:5] + struct.pack("<I", 2) + pb[9:])
        for label, d in mutations(pb, a.mutations, rng):
            plan_case(label, d)
    print(t.table())


if __name__ == "__main__":
    main()
