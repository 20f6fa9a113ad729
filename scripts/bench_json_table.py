"""Markdown table (name, median ms, rounds, Gaussians/s, peak MB) of a pytest-benchmark JSON file:

    python scripts/bench_json_table.py bench.json
"""
import json, sys
d = json.load(open(sys.argv[1]))
print("| benchmark | median ms | rounds | Gaussians/s | peak MB |")
print("| --- | --- | --- | --- | --- |")
for b in sorted(d["benchmarks"], key=lambda b: b["name"]):
    e = b["extra_info"]
    gps = e.get("gaussians_per_s") or e.get("gaussians_x_frames_per_s")
    print(f"| {b['name']} | {b['stats']['median'] * 1e3:.3f} | {b['stats']['rounds']} | {gps:.2e} | {e.get('peak_mb', float('nan')):.0f} |")
