"""Serving benchmark: loaded-SavedModel latency and throughput on raw inputs vs pre-decoded tensors.

Run `python benchmarks/serving.py [--spec avmnist] [--fusion concat]` or
`mmkeras bench serving`; the figures are printed and saved in
`benchmarks/results/serving_<dataset>.{json,md}`. The work is done by
`mmkeras.export.benchmark.run_serving_benchmark`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="avmnist", help="bundled spec name or YAML path (default: avmnist)")
    parser.add_argument("--fusion", default="concat", help="the classifier's fusion (default: concat)")
    parser.add_argument("--output-dir", default=None, help="where to save the figures (default: benchmarks/results)")
    parser.add_argument("--latency-calls", type=int, default=300, help="timed batch-1 calls per signature")
    parser.add_argument("--throughput-calls", type=int, default=30, help="timed batch-64 calls per signature")
    parser.add_argument("--no-fallback", action="store_true", help="fail instead of measuring `tiny` without data")
    args = parser.parse_args(argv)

    from mmkeras.export.benchmark import format_markdown, run_serving_benchmark

    figures = run_serving_benchmark(
        args.spec,
        fusion=args.fusion,
        output_dir=args.output_dir or Path(__file__).resolve().parent / "results",
        fallback_spec=None if args.no_fallback else "tiny",
        latency_calls=args.latency_calls,
        throughput_calls=args.throughput_calls,
    )
    print(format_markdown(figures))
    print(f"saved: {figures['files']['json']} and {figures['files']['markdown']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
