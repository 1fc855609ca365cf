#!/usr/bin/env python3
"""Load generator for an OpenAI-compatible server (`kiln serve`, vLLM, SGLang, ...), following the
conventions of vLLM's `vllm bench serve` and SGLang's `bench_serving`, so figures compare:

  * arrivals: Poisson at --request-rate requests/s (inf = all at once), optionally capped at
    --max-concurrency requests in flight;
  * lengths: --input-len / --output-len, fixed or lognormal around them (--length-dist), with an
    optional --shared-prefix-len tokens common to every prompt (the prefix-cache workload);
  * prompts are random token ids sent as a token-id prompt to /v1/completions, so input lengths
    are exact; `ignore_eos` makes output lengths exact too (vLLM's extension, kiln supports it);
  * metrics: request and output-token throughput, TTFT, TPOT (per request: (latency - TTFT) /
    (output tokens - 1)), ITL (every gap between streamed token chunks: a chunk with text or
    without a finish_reason, as kiln sends one a token even while its text is held back) — mean,
    median, p99 — and goodput (requests/s meeting every --goodput SLO, e.g. `ttft:500 tpot:100`
    in ms);
  * --kiln-metrics adds what the server's /metrics counted during the run (prefix-cache hit
    rate, tokens computed, steps, preemptions).

Only the standard library; results as JSON (--result-json) for bench/plot_serve.py, or one line
appended to --jsonl.
"""
import argparse
import concurrent.futures
import http.client
import json
import math
import random
import statistics
import sys
import threading
import time
import urllib.parse


def percentile(values, p):
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * p / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary(values):
    return {"mean": statistics.fmean(values) if values else float("nan"),
            "median": percentile(values, 50), "p99": percentile(values, 99)}


def make_lengths(rng, n, mean, dist, sigma):
    if dist == "fixed":
        return [mean] * n
    # Lognormal with the requested mean: mu = ln(mean) - sigma^2 / 2.
    mu = math.log(mean) - sigma * sigma / 2
    return [max(1, int(round(rng.lognormvariate(mu, sigma)))) for _ in range(n)]


def one_request(url, model, prompt, max_tokens, timeout):
    """Streams one completion; returns its timings (seconds) and token counts."""
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=timeout)
    body = json.dumps({"model": model, "prompt": prompt, "max_tokens": max_tokens,
                       "temperature": 0, "stream": True, "ignore_eos": True,
                       "stream_options": {"include_usage": True}})
    start = time.perf_counter()
    out = {"ok": False, "ttft": None, "itl": [], "latency": None, "output_tokens": 0,
           "prompt_tokens": len(prompt), "error": ""}
    try:
        conn.request("POST", u.path.rstrip("/") + "/v1/completions", body,
                     {"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            out["error"] = f"HTTP {resp.status}: {resp.read()[:200]!r}"
            return out
        last = None
        for raw in resp:
            line = raw.strip()
            if not line.startswith(b"data: "):
                continue
            data = line[6:]
            if data == b"[DONE]":
                break
            chunk = json.loads(data)
            if "error" in chunk:
                out["error"] = chunk["error"].get("message", "error")
                return out
            now = time.perf_counter()
            if chunk.get("usage"):
                out["output_tokens"] = chunk["usage"]["completion_tokens"]
                out["prompt_tokens"] = chunk["usage"]["prompt_tokens"]
            choices = chunk.get("choices") or []
            if any(c.get("text") or c.get("finish_reason") is None for c in choices):
                if last is None:
                    out["ttft"] = now - start
                else:
                    out["itl"].append(now - last)
                last = now
        out["latency"] = time.perf_counter() - start
        out["ok"] = out["ttft"] is not None
        if not out["ok"]:
            out["error"] = "no tokens streamed"
    except (OSError, http.client.HTTPException, ValueError) as e:
        out["error"] = repr(e)
    finally:
        conn.close()
    return out


def finite(x):
    """`x` with NaN (a summary of no values) as null, so a JSON line is strict JSON."""
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [finite(v) for v in x]
    return x


def scrape(base_url):
    """The server's /metrics counters and gauges (kiln's names), without the histograms."""
    u = urllib.parse.urlparse(base_url)
    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=30)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and not line.startswith("#") and "{" not in line:
            out[parts[0]] = float(parts[1])
    return out


def metric_deltas(before, after):
    d = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after if k.endswith("_total")}
    asked = d.get("kiln_prefix_cache_queried_tokens_total", 0.0)
    return {
        "prefix_hit_rate": d.get("kiln_prefix_cache_hit_tokens_total", 0.0) / asked if asked else 0.0,
        "computed_tokens": d.get("kiln_computed_tokens_total"),
        "prompt_tokens": d.get("kiln_prompt_tokens_total"),
        "steps": d.get("kiln_steps_total"),
        "preemptions": d.get("kiln_preemptions_total"),
        "kv_pages_total": after.get("kiln_kv_pages_total"),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base-url", default="http://127.0.0.1:8000")
    ap.add_argument("--model", default=None, help="default: the first of /v1/models")
    ap.add_argument("--num-prompts", type=int, default=32)
    ap.add_argument("--request-rate", type=float, default=float("inf"),
                    help="Poisson arrival rate in requests/s (inf: all at once)")
    ap.add_argument("--max-concurrency", type=int, default=0, help="0 = unbounded")
    ap.add_argument("--input-len", type=int, default=128, help="prompt tokens after the prefix")
    ap.add_argument("--output-len", type=int, default=32)
    ap.add_argument("--length-dist", choices=["fixed", "lognormal"], default="fixed")
    ap.add_argument("--sigma", type=float, default=0.5, help="lognormal sigma")
    ap.add_argument("--shared-prefix-len", type=int, default=0,
                    help="tokens of one common prefix before every prompt")
    ap.add_argument("--vocab-low", type=int, default=1000)
    ap.add_argument("--vocab-high", type=int, default=30000)
    ap.add_argument("--goodput", nargs="*", default=[], metavar="KEY:MS",
                    help="SLOs in ms: ttft:500 tpot:100 e2el:5000")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--label", default="")
    ap.add_argument("--result-json", default="")
    ap.add_argument("--jsonl", default="", help="append the report as one JSON line here")
    ap.add_argument("--tag", nargs="*", default=[], metavar="KEY=VALUE",
                    help="extra fields of the report (e.g. shape=llama3-8b prefix_cache=on)")
    ap.add_argument("--kiln-metrics", action="store_true",
                    help="record kiln's /metrics counters over the run")
    a = ap.parse_args()

    model = a.model
    if model is None:
        u = urllib.parse.urlparse(a.base_url)
        conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=30)
        conn.request("GET", "/v1/models")
        model = json.loads(conn.getresponse().read())["data"][0]["id"]
        conn.close()

    rng = random.Random(a.seed)
    prefix = [rng.randint(a.vocab_low, a.vocab_high) for _ in range(a.shared_prefix_len)]
    in_lens = make_lengths(rng, a.num_prompts, a.input_len, a.length_dist, a.sigma)
    out_lens = make_lengths(rng, a.num_prompts, a.output_len, a.length_dist, a.sigma)
    prompts = [prefix + [rng.randint(a.vocab_low, a.vocab_high) for _ in range(n)]
               for n in in_lens]
    gaps = [0.0 if math.isinf(a.request_rate) else rng.expovariate(a.request_rate)
            for _ in range(a.num_prompts)]

    slots = threading.Semaphore(a.max_concurrency) if a.max_concurrency > 0 else None
    results = [None] * a.num_prompts

    def run(i):
        try:
            results[i] = one_request(a.base_url, model, prompts[i], out_lens[i], a.timeout)
        finally:
            if slots:
                slots.release()

    before = scrape(a.base_url) if a.kiln_metrics else None
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(a.num_prompts) as pool:
        for i in range(a.num_prompts):
            time.sleep(gaps[i])
            if slots:
                slots.acquire()
            pool.submit(run, i)
    duration = time.perf_counter() - start

    ok = [r for r in results if r and r["ok"]]
    ttft = [r["ttft"] * 1000 for r in ok]
    tpot = [(r["latency"] - r["ttft"]) * 1000 / (r["output_tokens"] - 1)
            for r in ok if r["output_tokens"] > 1]
    itl = [g * 1000 for r in ok for g in r["itl"]]
    e2el = [r["latency"] * 1000 for r in ok]
    slo = {k: float(v) for k, v in (g.split(":") for g in a.goodput)}

    def meets(r):
        vals = {"ttft": r["ttft"] * 1000, "e2el": r["latency"] * 1000,
                "tpot": ((r["latency"] - r["ttft"]) * 1000 / (r["output_tokens"] - 1)
                         if r["output_tokens"] > 1 else 0.0)}
        return all(vals[k] <= v for k, v in slo.items())

    out_tokens = sum(r["output_tokens"] for r in ok)
    in_tokens = sum(r["prompt_tokens"] for r in ok)
    report = {
        "label": a.label, "model": model, "base_url": a.base_url,
        "config": {k: v for k, v in vars(a).items() if k not in ("result_json",)},
        "completed": len(ok), "failed": a.num_prompts - len(ok),
        "errors": sorted({r["error"] for r in results if r and not r["ok"]})[:5],
        "duration_s": duration, "total_input_tokens": in_tokens, "total_output_tokens": out_tokens,
        "request_throughput": len(ok) / duration, "output_throughput": out_tokens / duration,
        "total_token_throughput": (in_tokens + out_tokens) / duration,
        "ttft_ms": summary(ttft), "tpot_ms": summary(tpot), "itl_ms": summary(itl),
        "e2el_ms": summary(e2el),
        "goodput": (sum(1 for r in ok if meets(r)) / duration) if slo else None, "slo_ms": slo,
    }
    if a.request_rate == float("inf"):
        report["config"]["request_rate"] = "inf"
    report.update(dict(t.split("=", 1) for t in a.tag))
    if before is not None:
        report["server"] = metric_deltas(before, scrape(a.base_url))

    print(f"============ Serving Benchmark Result {a.label} ============")
    print(f"{'Successful requests:':<40}{len(ok):>10}")
    print(f"{'Failed requests:':<40}{a.num_prompts - len(ok):>10}")
    print(f"{'Benchmark duration (s):':<40}{duration:>10.2f}")
    print(f"{'Total input tokens:':<40}{in_tokens:>10}")
    print(f"{'Total generated tokens:':<40}{out_tokens:>10}")
    print(f"{'Request throughput (req/s):':<40}{report['request_throughput']:>10.2f}")
    print(f"{'Output token throughput (tok/s):':<40}{report['output_throughput']:>10.2f}")
    print(f"{'Total token throughput (tok/s):':<40}{report['total_token_throughput']:>10.2f}")
    if slo:
        print(f"{'Request goodput (req/s):':<40}{report['goodput']:>10.2f}")
    for name in ("ttft", "tpot", "itl", "e2el"):
        s = report[name + "_ms"]
        print(f"{'Mean ' + name.upper() + ' (ms):':<40}{s['mean']:>10.2f}")
        print(f"{'Median ' + name.upper() + ' (ms):':<40}{s['median']:>10.2f}")
        print(f"{'P99 ' + name.upper() + ' (ms):':<40}{s['p99']:>10.2f}")
    if report.get("server"):
        print(f"{'Server prefix-cache hit rate:':<40}{report['server']['prefix_hit_rate']:>10.3f}")
        print(f"{'Server tokens computed:':<40}{report['server']['computed_tokens']:>10.0f}")
    for e in report["errors"]:
        print("error:", e)
    if a.result_json:
        with open(a.result_json, "w") as f:
            json.dump(report, f, indent=1)
    if a.jsonl:
        with open(a.jsonl, "a") as f:
            f.write(json.dumps(finite(report)) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
