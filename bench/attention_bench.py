#!/usr/bin/env python3
"""Times kiln's attention kernels from a compiled plan against the PyTorch SDPA peers, in one run.

The GPU runtime that executes whole plans does not exist yet, so this script loads the
flash_attention prefill / decode / merge cubins straight out of a `.kplan` (compiled by
`kiln compile` on the development machine; NVRTC needs no GPU) with the CUDA driver API through
ctypes, binds and launches them as the plan's launches say (argument kinds, entry parameter types,
grid rules, workspace sizes), on paged KV caches made with torch,
checks each output against torch SDPA, and times them with CUDA events (median of repeats,
warm-up first). Shapes follow ../shared/BENCH.md (32 query / 8 KV heads, head_dim 128, bf16,
page size 16). Prints one JSON line per measurement, like peers/torch_peers.py.

  python3 bench/attention_bench.py PLAN.kplan [PLAN2.kplan ...] [--peers path/to/torch_peers.py]
      [--only decode | --prefill-only] [--softmax lse|unified_max] [--no-peers]

--softmax labels the plans' decode variant in the records (compile a second plan from an IR dump
with `softmax = "unified_max"` on the flash_attention nodes to measure the unified max beside the
LSE merge); --only decode skips the prefill cases, --prefill-only the decode ones. Several plans
(e.g. the same model compiled with different prefill kernels) are timed one after another in the
same run; the summary has one row per prefill kernel.
"""
import argparse, ctypes, json, struct, subprocess, sys
import torch
import torch.nn.functional as F

HQ, HKV, D, PAGE = 32, 8, 128, 16


RECORDS = []


def emit(**kw):
    kw["device"] = torch.cuda.get_device_name(0)
    RECORDS.append(kw)
    print(json.dumps(kw), flush=True)


def median_ms(fn, iters=30, warm=5):
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(iters):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record(); fn(); e.record(); torch.cuda.synchronize()
        ts.append(s.elapsed_time(e))
    ts.sort()
    return ts[len(ts) // 2]


class Plan:
    """Reads a .kplan: magic | u32 version | u64 manifest length | JSON | 256-aligned blobs. The
    manifest is plan/plan_json.cc's JSON form of the typed plan (format version 3)."""

    def __init__(self, path):
        b = open(path, "rb").read()
        assert b[:5] == b"KPLAN", "not a kiln plan"
        version = struct.unpack_from("<I", b, 5)[0]
        assert version == 3, f"plan format {version}; this script reads 3: recompile the plan"
        n = struct.unpack_from("<Q", b, 9)[0]
        self.m = json.loads(b[17:17 + n])
        self.base = (17 + n + 255) // 256 * 256
        self.b = b

    def blob(self, index):
        blob = self.m["blobs"][index]
        return self.b[self.base + blob["offset"]:self.base + blob["offset"] + blob["size"]]

    def launch(self, family):
        """The first launch of a `family` kernel, with its kernel entry."""
        for l in self.m["launches"]:
            k = self.m["kernels"][l["kernel"]]
            if k["family"] == family:
                return l, k
        raise KeyError(family)

    def workspace(self, name):
        return next(w for w in self.m["workspaces"] if w["name"] == name)


class Driver:
    def __init__(self):
        self.cu = ctypes.CDLL("libcuda.so.1")
        torch.zeros(1, device="cuda")  # makes torch's primary context current on this thread

    def check(self, r, what):
        if r != 0:
            s = ctypes.c_char_p()
            self.cu.cuGetErrorString(r, ctypes.byref(s))
            raise RuntimeError(f"{what}: {s.value.decode() if s.value else r}")

    def function(self, entry, cubin):
        mod, fn = ctypes.c_void_p(), ctypes.c_void_p()
        self.check(self.cu.cuModuleLoadData(ctypes.byref(mod), ctypes.c_char_p(cubin)), "cuModuleLoadData")
        self.check(self.cu.cuModuleGetFunction(ctypes.byref(fn), mod, entry.encode()), "cuModuleGetFunction")
        return fn

    def allow_smem(self, fn, nbytes):
        """Raises the kernel's dynamic shared-memory limit past the 48 KB default (as
        runtime/cuda/driver.cc does); 8 = CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES."""
        if nbytes > 48 * 1024:
            self.check(self.cu.cuFuncSetAttribute(fn, 8, ctypes.c_int(nbytes)), "cuFuncSetAttribute")

    def launch(self, fn, grid, block, vals, smem=0):
        ptrs = (ctypes.c_void_p * len(vals))(*[ctypes.cast(ctypes.pointer(v), ctypes.c_void_p) for v in vals])
        stream = ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)
        self.check(self.cu.cuLaunchKernel(fn, *grid, *block, ctypes.c_uint(smem), stream, ptrs, None),
                   "cuLaunchKernel")


def launch_expr(expr, **symbols):
    """Evaluates a plan launch expression (ints, symbols, + - * and cdiv/min/max calls)."""
    env = dict(symbols, min=min, max=max, _cdiv=lambda a, b: -(-a // b))
    return int(eval(expr.replace("cdiv(", "_cdiv("), {"__builtins__": {}}, env))


class Bound:
    """One launch bound the way plan/launch_binding.cc binds it: the plan's arguments, typed by
    the kernel's entry parameters. Tensor arguments are the script's own buffers, looked up by
    the entry parameter's name (the plan names IR values the script does not have); integer
    expressions and grids are evaluated with the step's symbols; workspaces are allocated at the
    plan's sizes (zero-filled where the plan says so, as the runtime does)."""

    CTYPES = {"ptr": ctypes.c_void_p, "i32": ctypes.c_int, "i64": ctypes.c_longlong,
              "f32": ctypes.c_float}

    def __init__(self, drv, plan, family, tensors, **symbols):
        launch, kernel = plan.launch(family)
        self.kernel = kernel["key"]
        self.fn = drv.function(kernel["key"], plan.blob(kernel["cubin_blob"]))
        self.drv = drv
        self.grid = tuple(launch_expr(e, **symbols) for e in launch["grid"])
        self.block = tuple(launch_expr(e, **symbols) for e in launch["block"])
        self.smem = launch_expr(launch.get("dynamic_shared_bytes", "0"), **symbols)
        drv.allow_smem(self.fn, self.smem)
        self.ints = {}
        self.vals = []
        assert len(launch["args"]) == len(kernel["params"]), self.kernel
        for param, arg in zip(kernel["params"], launch["args"]):
            kind, value, ctype = arg["kind"], arg["value"], self.CTYPES[param["type"]]
            if kind == "tensor":
                v = tensors[param["name"]].data_ptr()
            elif kind == "workspace":
                if value not in tensors:
                    w = plan.workspace(value)
                    n = launch_expr(w["bytes"], **symbols)
                    alloc = torch.zeros if w.get("zeroed") else torch.empty
                    tensors[value] = alloc(n, dtype=torch.uint8, device="cuda")
                v = tensors[value].data_ptr()
            elif kind == "int":
                v = self.ints[param["name"]] = launch_expr(value, **symbols)
            elif kind == "float":
                v = value
            else:
                raise ValueError(f"{self.kernel}: {kind} argument {param['name']} is not benchmarked")
            self.vals.append(ctype(v))

    def __call__(self):
        self.drv.launch(self.fn, self.grid, self.block, self.vals, self.smem)


def paged(B, ctx, gen):
    """Random K/V for B sequences of `ctx` tokens in a paged pool with shuffled pages."""
    pages_per_seq = (ctx + PAGE - 1) // PAGE
    npages = B * pages_per_seq
    perm = torch.randperm(npages, generator=gen).to(torch.int32).cuda()
    k = torch.randn(npages, PAGE, HKV, D, dtype=torch.bfloat16, device="cuda")
    v = torch.randn_like(k)
    indptr = (torch.arange(B + 1, dtype=torch.int32) * pages_per_seq).cuda()
    last = torch.full((B,), ctx - (pages_per_seq - 1) * PAGE, dtype=torch.int32, device="cuda")
    return k, v, perm, indptr, last


def dense_kv(k, v, perm, B, ctx):
    """[B, HKV, ctx, D] views of the paged caches, for the SDPA reference."""
    pages = k[perm.long()].view(B, -1, PAGE, HKV, D).flatten(1, 2)[:, :ctx]
    vp = v[perm.long()].view(B, -1, PAGE, HKV, D).flatten(1, 2)[:, :ctx]
    return pages.permute(0, 2, 1, 3), vp.permute(0, 2, 1, 3)


def prefill(drv, plan, seq, tokens):
    B = max(1, tokens // seq)
    T = B * seq
    gen = torch.Generator().manual_seed(seq)
    k, v, perm, indptr, last = paged(B, seq, gen)
    q = torch.randn(T, HQ, D, dtype=torch.bfloat16, device="cuda")
    out = torch.full_like(q, float("nan"))
    positions = torch.arange(seq, dtype=torch.int32, device="cuda").repeat(B)
    qo = (torch.arange(B + 1, dtype=torch.int32) * seq).cuda()
    run = Bound(drv, plan, "flash_attention_prefill",
                dict(out=out, q=q, k_cache=k, v_cache=v, positions=positions, qo_indptr=qo,
                     kv_page_indptr=indptr, kv_page_indices=perm, kv_last_page_len=last),
                T=T, S=B, K=seq)
    assert (run.ints["num_kv_heads"], run.ints["page_size"]) == (HKV, PAGE), "plan shape != bench shape"
    run(); torch.cuda.synchronize()
    g = HQ // HKV
    kd, vd = dense_kv(k, v, perm, B, seq)
    qd = q.view(B, seq, HQ, D).permute(0, 2, 1, 3)
    ref = F.scaled_dot_product_attention(qd, kd.repeat_interleave(g, 1), vd.repeat_interleave(g, 1),
                                         is_causal=True).permute(0, 2, 1, 3).reshape(T, HQ, D)
    err = (out.float() - ref.float()).abs().max().item()
    ms = median_ms(run)
    flops = 4 * B * HQ * seq * seq * D / 2
    emit(bench="attn_prefill", impl="kiln", seq=seq, tokens=T, TFLOPs=round(flops / ms / 1e9, 1),
         ms=round(ms, 4), max_abs_err=round(err, 4), kernel=run.kernel)


def decode(drv, plan, B, ctx, softmax="lse"):
    gen = torch.Generator().manual_seed(ctx + B)
    k, v, perm, indptr, last = paged(B, ctx, gen)
    q = torch.randn(B, HQ, D, dtype=torch.bfloat16, device="cuda")
    out = torch.full_like(q, float("nan"))
    positions = torch.full((B,), ctx - 1, dtype=torch.int32, device="cuda")
    qo = torch.arange(B + 1, dtype=torch.int32, device="cuda")
    # One launch: the splits' partials are merged by the last split of each (sequence, KV head).
    tensors = dict(out=out, q=q, k_cache=k, v_cache=v, positions=positions, qo_indptr=qo,
                   kv_page_indptr=indptr, kv_page_indices=perm, kv_last_page_len=last)
    run = Bound(drv, plan, "flash_attention_decode", tensors, T=B, S=B, K=ctx)
    split = run.grid[2]

    run(); torch.cuda.synchronize()
    kd, vd = dense_kv(k, v, perm, B, ctx)
    g = HQ // HKV
    ref = F.scaled_dot_product_attention(q.unsqueeze(2), kd.repeat_interleave(g, 1),
                                         vd.repeat_interleave(g, 1)).squeeze(2)
    err = (out.float() - ref.float()).abs().max().item()
    ms = median_ms(run)
    kv_bytes = 2 * B * ctx * HKV * D * 2
    emit(bench="attn_decode", impl="kiln" if softmax == "lse" else "kiln_" + softmax, batch=B,
         ctx=ctx, TBps=round(kv_bytes / ms / 1e9, 3), ms=round(ms, 4), max_abs_err=round(err, 4),
         split_kv=split, softmax=softmax, kernel=run.kernel)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("plan", nargs="+")
    p.add_argument("--peers", default=".devdeps/torch_peers.py")
    p.add_argument("--only", choices=["decode"], help="only the decode cases")
    p.add_argument("--softmax", default="lse", help="the plan's decode softmax variant (a label)")
    p.add_argument("--prefill-only", action="store_true", help="skip the decode cases")
    p.add_argument("--no-peers", action="store_true", help="time kiln only")
    a = p.parse_args()
    drv = Driver()
    for path in a.plan:
        plan = Plan(path)
        if a.only != "decode":
            for seq in (1024, 4096, 16384):
                try:
                    prefill(drv, plan, seq, 16384)
                except Exception as e:  # one broken kernel variant must not hide the others' figures
                    emit(bench="attn_prefill", impl="kiln", seq=seq, plan=path, error=str(e))
        if not a.prefill_only:
            for B, ctx in ((1, 32768), (16, 4096), (64, 4096)):
                decode(drv, plan, B, ctx, a.softmax)
    torch.cuda.synchronize()
    if a.no_peers:
        return
    peer = [sys.executable, a.peers]
    peer_cases = [["ceilings"]]
    if a.only != "decode":
        peer_cases += [["attn-prefill", "--seq", str(s), "--tokens", "16384"] for s in (1024, 4096, 16384)]
    if not a.prefill_only:
        peer_cases += [["attn-decode", "--batch", str(b), "--ctx", str(c)]
                       for b, c in ((1, 32768), (16, 4096), (64, 4096))]
    for args in peer_cases:
        r = subprocess.run(peer + args, capture_output=True, text=True)
        sys.stdout.write(r.stdout)
        RECORDS.extend(json.loads(line) for line in r.stdout.splitlines() if line.startswith("{"))
        if r.returncode != 0:
            emit(bench=" ".join(args), peer="torch", error=r.stderr.strip().splitlines()[-1:])
    summary()


def summary():
    """kiln vs the peers, case by case (ratios > 1 mean kiln is faster)."""
    def find(bench, impl, **key):
        for r in RECORDS:
            if r.get("bench") == bench and (r.get("impl") == impl or r.get("peer") == impl) and \
                    all(r.get(k) == v for k, v in key.items()):
                return r
        return None
    copy = find("copy", "torch")
    print(f"\n== kiln attention vs peers on {torch.cuda.get_device_name(0)}"
          f" (copy ceiling {copy['TBps'] if copy else '?'} TB/s) ==")
    print(f"{'case':28} {'kiln':>10} {'fa2':>10} {'cudnn':>10} {'vs fa2':>7} {'vs cudnn':>8}")
    cases = [("attn_prefill", "TFLOPs", {"seq": s}, f"prefill seq {s}") for s in (1024, 4096, 16384)]
    cases += [("attn_decode", "TBps", {"batch": b, "ctx": c}, f"decode b{b} ctx {c}")
              for b, c in ((1, 32768), (16, 4096), (64, 4096))]
    ratio = lambda a, b: f"{a / b:.2f}x" if a and b else "-"
    for bench, unit, key, label in cases:
        f, c = (find(bench, i, **key) for i in ("fa2", "cudnn"))
        fv, cv = (r.get(unit) if r else None for r in (f, c))
        mine = [r for r in RECORDS if r.get("bench") == bench and r.get("impl") == "kiln" and
                all(r.get(k) == v for k, v in key.items())]
        for k in mine or [None]:
            kv = k.get(unit) if k else None
            print(f"{label:28} {kv or '-':>10} {fv or '-':>10} {cv or '-':>10} {ratio(kv, fv):>7} "
                  f"{ratio(kv, cv):>8}  ({unit}) {k.get('kernel', k.get('error', '')) if k else ''}")


if __name__ == "__main__":
    main()
