#!/usr/bin/env python3
"""Where a GPU step's time goes, kernel by kernel, from CubeCL's profiling log.

  CUBECL_DEBUG_LOG=profile.log CUBECL_DEBUG_OPTION=profile qat bench MODEL --device vulkan:0 ...
  gpu_kernel_times.py profile.log [--top 30]

CubeCL writes one table per profiled window (`| Name | Duration | Num Computed | Ratio |`,
rows `| kernel | 12.8µs | 2 | 25 % |`); this sums each kernel's duration and launch count over
every table (warm-up and autotune windows included, so run enough timed iterations for the
step to dominate) and prints the kernels that took the most time.
"""
import argparse
import collections
import re

UNITS = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}
ROW = re.compile(r"^\|\s*(.+?)\s*\|\s*([0-9.]+)(ns|µs|us|ms|s)\s*\|\s*(\d+)\s*\|\s*[0-9.]+\s*%\s*\|")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("log")
    ap.add_argument("--top", type=int, default=30)
    a = ap.parse_args()
    seconds, launches = collections.Counter(), collections.Counter()
    with open(a.log, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = ROW.match(line)
            if m and m.group(1) not in ("Name", "Total"):
                # Kernel names end in a hash of their configuration; group by the name alone.
                name = re.sub(r"_[0-9a-f]{8}$", "", m.group(1))
                seconds[name] += float(m.group(2)) * UNITS[m.group(3)]
                launches[name] += int(m.group(4))
    total = sum(seconds.values())
    if not total:
        raise SystemExit(f"{a.log}: no profiling tables (was CUBECL_DEBUG_OPTION=profile set?)")
    print("| kernel | seconds | share | launches | mean µs |")
    print("|---|---|---|---|---|")
    for name, s in seconds.most_common(a.top):
        print(f"| {name} | {s:.4f} | {100 * s / total:.1f}% | {launches[name]} | {1e6 * s / launches[name]:.1f} |")
    print(f"\ntotal {total:.3f} s in {sum(launches.values())} launches of {len(seconds)} kernels")


if __name__ == "__main__":
    main()
