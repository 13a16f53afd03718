#!/usr/bin/env python3
"""Plots startup time vs. op count (snapshot vs. source) from criterion's
output of `cargo bench --bench scaling`, as an SVG (stdlib only).

Usage: python3 benches/plot_scaling.py [target/criterion] [benches/scaling.svg]
"""
import json
import os
import sys

OPS = [10, 100, 1000]
SERIES = [("snapshot", "#d9480f"), ("source", "#1c7ed6")]


def median_ms(root, series, ops):
    path = os.path.join(root, "scaling", series, str(ops), "new", "estimates.json")
    with open(path) as f:
        return json.load(f)["median"]["point_estimate"] / 1e6


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join("target", "criterion")
    out = sys.argv[2] if len(sys.argv) > 2 else os.path.join("benches", "scaling.svg")
    data = {s: [median_ms(root, s, n) for n in OPS] for s, _ in SERIES}
    ymax = max(max(v) for v in data.values()) * 1.15
    w, h, left, right, top, bottom = 640, 400, 70, 150, 40, 60
    pw, ph = w - left - right, h - top - bottom

    def x(i):
        return left + pw * i / (len(OPS) - 1)

    def y(v):
        return top + ph * (1 - v / ymax)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
        f'<rect width="{w}" height="{h}" fill="white"/>',
        f'<text x="{w / 2 - 60}" y="22" font-size="15">Runtime creation vs. op count (median)</text>',
        f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="black"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="black"/>',
        f'<text x="{left + pw / 2 - 60}" y="{h - 15}">ops (and JS functions), log scale</text>',
        f'<text x="15" y="{top + ph / 2}" transform="rotate(-90 15 {top + ph / 2})">ms to a runtime that ran 1+1</text>',
    ]
    for i, n in enumerate(OPS):
        parts.append(f'<text x="{x(i) - 12}" y="{top + ph + 18}">{n}</text>')
    for k in range(6):
        v = ymax * k / 5
        parts.append(f'<line x1="{left - 4}" y1="{y(v)}" x2="{left + pw}" y2="{y(v)}" stroke="#ddd"/>')
        parts.append(f'<text x="{left - 45}" y="{y(v) + 4}">{v:.1f}</text>')
    for row, (series, color) in enumerate(SERIES):
        pts = " ".join(f"{x(i)},{y(v)}" for i, v in enumerate(data[series]))
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2.5"/>')
        for i, v in enumerate(data[series]):
            parts.append(f'<circle cx="{x(i)}" cy="{y(v)}" r="4" fill="{color}"/>')
            parts.append(f'<text x="{x(i) + 6}" y="{y(v) - 8}" fill="{color}">{v:.2f}</text>')
        ly = top + 20 + row * 22
        parts.append(f'<line x1="{left + pw + 15}" y1="{ly}" x2="{left + pw + 40}" y2="{ly}" stroke="{color}" stroke-width="2.5"/>')
        parts.append(f'<text x="{left + pw + 45}" y="{ly + 4}">from {series}</text>')
    parts.append("</svg>")
    with open(out, "w") as f:
        f.write("\n".join(parts) + "\n")
    for series, _ in SERIES:
        print(series, " ".join(f"{n}:{v:.3f}ms" for n, v in zip(OPS, data[series])))
    print("wrote", out)


if __name__ == "__main__":
    main()
