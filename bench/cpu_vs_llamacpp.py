#!/usr/bin/env python3
"""kiln's CPU backend against llama.cpp (PyPI llama-cpp-python) on the same machine, same threads.

Pairs (each kiln row against the llama.cpp row it is judged by, issue 17's targets):
  kiln bf16            vs llama.cpp F32  (dequantized SmolLM2 file)  decode >= 1.0x
  kiln native Q4_1     vs llama.cpp Q4_1 (the shipped file)          decode >= 0.8x
  kiln Q4_1 q8 act     (native + --q8-activations: activations quantized to Q8 per 32 values, as
                       llama.cpp does for its Q4_1 matmuls) vs llama.cpp Q4_1    decode >= 0.8x
  prompt processing of these pairs                                   prompt >= 1.0x
Every round runs all five configurations, in alternating order (reversed every other round), so a
load spike from other users of the machine hits both engines alike; the table reports medians
over rounds, and the load average is printed with every run. kiln's figures come from
`kiln bench --device cpu` (one JSON line: median decode step, prefill of the prompt in one step);
llama.cpp's from the same measurement here: one eval of the prompt, then one eval per generated
token, greedy, the median step.

With --scaling every configuration also runs on one thread, in the same alternating rounds, and a
second table gives each engine's decode and prompt speed-up from 1 to --threads threads (issue 17:
kiln's bf16 decode >= 1.7x from 1 to 2 threads), llama.cpp's beside it as what the machine allows.

Usage: bench/cpu_vs_llamacpp.py --kiln build/tools/kiln --q41 Q4_1.gguf --f32 F32.gguf
       [--threads 2] [--scaling] [--rounds 5] [--prompt-len 64] [--gen-len 64]
       [--out bench/results/x.md]
"""
import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time


def cpu_info():
    model, flags = platform.processor() or "cpu", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model in ("cpu", "", platform.processor()):
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    isa = [x for x in ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni",
                       "avx512_bf16") if x in flags]
    return model, isa, os.cpu_count()


def load():
    return "%.2f" % os.getloadavg()[0]


def run_kiln(args, dtype, model, threads, extra=()):
    cmd = [args.kiln, "bench", model, "--device", "cpu", "--threads", str(threads),
           "--weights-dtype", dtype, "--prompt-len", str(args.prompt_len),
           "--gen-len", str(args.gen_len)] + list(extra)
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit("kiln bench failed: %s\n%s" % (" ".join(cmd), out.stderr))
    j = json.loads([l for l in out.stdout.splitlines() if l.startswith("{")][-1])
    return {"decode_tok_s": 1000.0 / j["ms_per_step"], "prompt_tok_s": j["prefill_tok_s"]}


class LlamaCpp:
    def __init__(self, path, threads, n_ctx):
        from llama_cpp import Llama  # imported here so --help works without it
        self.llm = Llama(model_path=path, n_ctx=n_ctx, n_batch=n_ctx, n_threads=threads,
                         n_threads_batch=threads, verbose=False)

    def run(self, prompt, gen_len):
        import numpy as np
        llm = self.llm
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(prompt)
        prefill = time.perf_counter() - t0
        tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        steps = []
        for _ in range(gen_len):
            t0 = time.perf_counter()
            llm.eval([tok])
            tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            steps.append(time.perf_counter() - t0)
        steps = steps[min(3, len(steps) - 1):]  # the same warm-up kiln bench skips
        return {"decode_tok_s": 1.0 / statistics.median(steps),
                "prompt_tok_s": len(prompt) / prefill}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--kiln", default="build/tools/kiln")
    ap.add_argument("--q41", required=True, help="SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--f32", required=True, help="the same model dequantized to F32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--scaling", action="store_true",
                    help="also run everything on 1 thread and report the speed-up to --threads")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--gen-len", type=int, default=64)
    ap.add_argument("--out", help="markdown report (default: bench/results/<date>-cpu-<cpu>.md)")
    args = ap.parse_args()

    import numpy as np
    model, isa, cores = cpu_info()
    print("CPU: %s, %d logical cores, ISA: %s; threads %d" % (model, cores, " ".join(isa),
                                                           args.threads))
    n_ctx = args.prompt_len + args.gen_len + 8
    thread_counts = [args.threads] + ([1] if args.scaling and args.threads != 1 else [])
    engines = {(name, t): LlamaCpp(path, t, n_ctx) for t in thread_counts
               for name, path in (("llama.cpp F32", args.f32), ("llama.cpp Q4_1", args.q41))}
    vocab = engines[("llama.cpp Q4_1", args.threads)].llm.n_vocab()
    prompt = [int(t) for t in np.random.default_rng(0).integers(0, vocab, args.prompt_len)]

    def suffix(t):  # the main thread count keeps the plain names the first table uses
        return "" if t == args.threads else " %dt" % t

    configs = []
    for t in thread_counts:
        configs += [
            ("kiln bf16" + suffix(t), lambda t=t: run_kiln(args, "bf16", args.q41, t)),
            ("llama.cpp F32" + suffix(t),
             lambda t=t: engines[("llama.cpp F32", t)].run(prompt, args.gen_len)),
            ("kiln native Q4_1" + suffix(t), lambda t=t: run_kiln(args, "native", args.q41, t)),
            ("kiln Q4_1 q8 act" + suffix(t),
             lambda t=t: run_kiln(args, "native", args.q41, t, ["--q8-activations"])),
            ("llama.cpp Q4_1" + suffix(t),
             lambda t=t: engines[("llama.cpp Q4_1", t)].run(prompt, args.gen_len)),
        ]
    for _, fn in configs:  # warm-up: page in both files, spin up thread pools
        fn()
    results = {name: [] for name, _ in configs}
    log = []
    for r in range(args.rounds):
        order = configs if r % 2 == 0 else configs[::-1]
        for name, fn in order:
            before = load()
            m = fn()
            results[name].append(m)
            line = "round %d %-20s decode %6.1f tok/s  prompt %6.1f tok/s  (load %s -> %s)" % (
                r, name, m["decode_tok_s"], m["prompt_tok_s"], before, load())
            print(line, flush=True)
            log.append(line)

    med = {name: {k: statistics.median(x[k] for x in runs) for k in runs[0]}
           for name, runs in results.items()}
    rows = [("kiln bf16", "llama.cpp F32", "decode_tok_s", 1.0),
            ("kiln native Q4_1", "llama.cpp Q4_1", "decode_tok_s", 0.8),
            ("kiln bf16", "llama.cpp F32", "prompt_tok_s", 1.0),
            ("kiln native Q4_1", "llama.cpp Q4_1", "prompt_tok_s", 1.0),
            # Like for like: llama.cpp quantizes the activations to Q8 for its Q4_1 matmuls.
            ("kiln Q4_1 q8 act", "llama.cpp Q4_1", "decode_tok_s", 0.8),
            ("kiln Q4_1 q8 act", "llama.cpp Q4_1", "prompt_tok_s", 1.0)]
    table = ["| kiln | llama.cpp | metric | kiln tok/s | llama.cpp tok/s | ratio | target |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for k, l, metric, target in rows:
        ratio = med[k][metric] / med[l][metric]
        table.append("| %s | %s | %s | %.1f | %.1f | %.2fx | >= %.1fx %s |" % (
            k, l, metric.split("_")[0], med[k][metric], med[l][metric], ratio, target,
            "met" if ratio >= target else "NOT met"))
    print("\n".join(table))
    if len(thread_counts) > 1:
        scaling = ["| configuration | decode 1t | decode %dt | decode speed-up | prompt 1t | "
                   "prompt %dt | prompt speed-up |" % (args.threads, args.threads),
                   "| --- | --- | --- | --- | --- | --- | --- |"]
        for name in ("kiln bf16", "llama.cpp F32", "kiln native Q4_1", "kiln Q4_1 q8 act",
                     "llama.cpp Q4_1"):
            one, many = med[name + suffix(1)], med[name]
            scaling.append("| %s | %.1f | %.1f | %.2fx | %.1f | %.1f | %.2fx |" % (
                name, one["decode_tok_s"], many["decode_tok_s"],
                many["decode_tok_s"] / one["decode_tok_s"], one["prompt_tok_s"],
                many["prompt_tok_s"], many["prompt_tok_s"] / one["prompt_tok_s"]))
        print("\n".join(scaling))
        table += ["", "Thread scaling, 1 -> %d threads (medians of the same rounds):" % args.threads,
                  ""] + scaling

    date = datetime.date.today().isoformat()
    slug = re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-") + "-%dc" % cores
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                   "%s-cpu-%s.md" % (date, slug))
    import llama_cpp
    with open(out, "w") as f:
        f.write("# kiln CPU vs llama.cpp, %s\n\n" % date)
        f.write("Machine: %s, %d logical cores, ISA %s. Threads: %d for both engines. "
                "llama-cpp-python %s. SmolLM2-135M-Instruct, prompt %d random tokens, %d greedy "
                "decode steps, %d alternating rounds, medians. Made by bench/cpu_vs_llamacpp.sh.\n\n"
                % (model, cores, " ".join(isa), args.threads, llama_cpp.__version__,
                   args.prompt_len, args.gen_len, args.rounds))
        f.write("\n".join(table) + "\n\nRuns (1-minute load average before -> after each):\n\n```\n")
        f.write("\n".join(log) + "\n```\n")
    print("wrote", out)


if __name__ == "__main__":
    main()
