#!/usr/bin/env python3
"""Times kiln's rmsnorm_residual kernel out of a compiled plan (the plan's first rmsnorm_residual
launch, bound as the plan says; see attention_bench.py for the loader) at 16k x hidden, in TB/s
(read x and residual, write y and the sum: 4 x rows x hidden x 2 bytes, the peers' count), and at
decode sizes. A Llama plan has no rmsnorm_residual since every residual add became a GEMM
epilogue: then its plain rmsnorm kernel is timed (read x, write y: 2 x rows x hidden x 2 bytes),
reported as bench "rmsnorm". Also at
decode sizes (1, 16, 64 rows) in microseconds per launch (100 back-to-back launches between two
events, so launch gaps count, as they do in a decode step without graphs). Checks every output
against torch in fp32 first, outputs NaN-poisoned. Optionally runs the torch/Inductor peer.

  python3 bench/rmsnorm_bench.py PLAN.kplan [--peers .devdeps/torch_peers.py]
"""
import argparse, json, os, subprocess, sys
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from attention_bench import Bound, Driver, Plan, emit, median_ms  # noqa: E402


def has_family(plan, family):
    try:
        plan.launch(family)
        return True
    except KeyError:
        return False


def case(drv, plan, rows, hidden, family):
    residual = family == "rmsnorm_residual"
    x = torch.randn(rows, hidden, dtype=torch.bfloat16, device="cuda")
    r = torch.randn_like(x)
    w = torch.randn(hidden, dtype=torch.bfloat16, device="cuda")
    y = torch.full_like(x, float("nan"))
    s = torch.full_like(x, float("nan"))
    tensors = dict(y=y, residual_out=s, x=x, residual=r, w=w) if residual else dict(y=y, x=x, w=w)
    run = Bound(drv, plan, family, tensors, T=rows)
    run(); torch.cuda.synchronize()
    h = x + r if residual else x
    hf = h.float()
    eps = next(v.value for v in run.vals if isinstance(v, __import__("ctypes").c_float))
    ref = (hf * torch.rsqrt(hf.pow(2).mean(-1, keepdim=True) + eps)) * w.float()
    err_y = (y.float() - ref).abs().max().item()
    err_s = (s.float() - h.float()).abs().max().item() if residual else 0
    assert err_s == 0 and err_y < 0.05 * max(1.0, ref.abs().max().item()), (rows, err_y, err_s)
    passes = 4 if residual else 2  # bytes moved: rows x hidden x 2 per pass
    if rows >= 4096:
        ms = median_ms(run)
        emit(bench=family, impl="kiln", tokens=rows, hidden=hidden, ms=round(ms, 4),
             TBps=round(passes * rows * hidden * 2 / ms / 1e9, 3), max_abs_err=round(err_y, 4),
             kernel=run.kernel)
    else:
        n = 100

        def many():
            for _ in range(n):
                run()
        us = median_ms(many, iters=10, warm=2) * 1000 / n
        emit(bench=family, impl="kiln", tokens=rows, hidden=hidden, us=round(us, 2),
             TBps=round(passes * rows * hidden * 2 / us / 1e6, 3), max_abs_err=round(err_y, 4),
             kernel=run.kernel)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("plan")
    p.add_argument("--hidden", type=int, default=4096, help="the plan's hidden size")
    p.add_argument("--peers", default="")
    a = p.parse_args()
    plan = Plan(a.plan)
    drv = Driver()
    family = "rmsnorm_residual" if has_family(plan, "rmsnorm_residual") else "rmsnorm"
    for rows in (16384, 1, 16, 64):
        case(drv, plan, rows, a.hidden, family)
    if a.peers:
        out = subprocess.run([sys.executable, a.peers, "rmsnorm", "--tokens", "16384", "--hidden",
                              str(a.hidden)], capture_output=True, text=True)
        sys.stdout.write(out.stdout)
        if out.returncode != 0:
            emit(bench="rmsnorm_residual", peer="torch", error=out.stderr.strip().splitlines()[-1:])


if __name__ == "__main__":
    main()
