#!/usr/bin/env python3
"""Bar chart (SVG, standard library only) comparing serve_bench.py result JSONs: mean and p99
TTFT, mean TPOT and ITL, and output throughput, one bar colour per result.

  plot_serve.py a.json b.json -o figure.svg
"""
import argparse
import json

COLORS = ["#3b6ea5", "#d9822b", "#5a9e4b", "#a33b3b"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results", nargs="+")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--title", default="kiln serve")
    a = ap.parse_args()
    runs = [json.load(open(p)) for p in a.results]
    panels = [("TTFT mean (ms)", lambda r: r["ttft_ms"]["mean"]),
              ("TTFT p99 (ms)", lambda r: r["ttft_ms"]["p99"]),
              ("TPOT mean (ms)", lambda r: r["tpot_ms"]["mean"]),
              ("ITL p99 (ms)", lambda r: r["itl_ms"]["p99"]),
              ("output tok/s", lambda r: r["output_throughput"]),
              ("goodput req/s", lambda r: r["goodput"] or 0.0)]
    pw, ph, top, left = 150, 200, 60, 20
    width = left * 2 + pw * len(panels)
    height = top + ph + 80
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="11">',
           f'<text x="{left}" y="20" font-size="14">{a.title}</text>']
    for k, (name, get) in enumerate(panels):
        x0 = left + k * pw
        vals = [get(r) for r in runs]
        vmax = max(vals) or 1.0
        bw = (pw - 40) / len(runs)
        svg.append(f'<text x="{x0 + pw / 2}" y="{top - 8}" text-anchor="middle">{name}</text>')
        svg.append(f'<line x1="{x0 + 10}" y1="{top + ph}" x2="{x0 + pw - 10}" y2="{top + ph}" '
                   'stroke="#444"/>')
        for i, v in enumerate(vals):
            h = ph * v / vmax
            x = x0 + 20 + i * bw
            svg.append(f'<rect x="{x:.1f}" y="{top + ph - h:.1f}" width="{bw - 6:.1f}" '
                       f'height="{h:.1f}" fill="{COLORS[i % len(COLORS)]}"/>')
            svg.append(f'<text x="{x + (bw - 6) / 2:.1f}" y="{top + ph - h - 3:.1f}" '
                       f'text-anchor="middle">{v:.3g}</text>')
    for i, r in enumerate(runs):
        y = top + ph + 25 + 16 * i
        c = r["config"]
        svg.append(f'<rect x="{left}" y="{y - 9}" width="10" height="10" '
                   f'fill="{COLORS[i % len(COLORS)]}"/>')
        svg.append(f'<text x="{left + 16}" y="{y}">{r["label"]}: {r["completed"]} requests, '
                   f'rate {c["request_rate"]}/s, max concurrency {c["max_concurrency"]}, '
                   f'{c["shared_prefix_len"]} shared + {c["input_len"]} input tokens, '
                   f'{c["output_len"]} output</text>')
    svg.append("</svg>")
    with open(a.output, "w") as f:
        f.write("\n".join(svg) + "\n")


if __name__ == "__main__":
    main()
