"""Start-up stays light: `python -m core models` against `python -c "import torch, torchvision"`.

    python bench/bench_startup.py [--repeats 7] [--markdown] [--json PATH]

torch and torchvision are the floor every ZooScope process pays (7-8 s on a 2-core machine);
the command line on top of them must stay within 1.5x of that floor, which it cannot if a heavy
library (scikit-learn, onnxruntime, Ray, a graph library) is imported at start-up instead of in
the function that needs it (tests/unit/test_architecture.py checks which modules load; this
measures what it costs).

Both commands run as fresh processes from the repository root, alternating (baseline, ours,
baseline, ours, ...) so a change in the machine's load hits both alike, after one unmeasured
run of each to warm the page cache. Reported: the median and the fastest wall time of each,
and the ratio of the medians. A report, not a test: it always exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.report import run_report, table  # noqa: E402 (after the path setup)

GOAL = 1.5
COMMANDS = {
    "baseline": ["-c", "import torch, torchvision"],
    "ours": ["-m", "core", "models"],
}
LABELS = {
    "baseline": 'python -c "import torch, torchvision"',
    "ours": "python -m core models",
}


def run_once(arguments: list[str], env: dict[str, str]) -> float:
    """Wall-clock seconds of one fresh `python <arguments>` from the repository root."""
    start = time.perf_counter()
    subprocess.run([sys.executable, *arguments], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def measure(repeats: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="zooscope-bench-startup-") as folder:
        # An empty torch home: `models` looks for weights files there, and nothing here touches the real one.
        env = {**os.environ, "TORCH_HOME": folder, "PYTHONPATH": str(ROOT)}
        for arguments in COMMANDS.values():
            run_once(arguments, env)  # warm the page cache for both
        seconds: dict[str, list[float]] = {name: [] for name in COMMANDS}
        for _ in range(repeats):
            for name, arguments in COMMANDS.items():
                seconds[name].append(run_once(arguments, env))
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    return {
        "seconds": seconds,
        "median": medians,
        "ratio": medians["ours"] / medians["baseline"],
        "goal": GOAL,
        "repeats": repeats,
    }


def report(data: dict, markdown: bool, load: tuple[float, float]) -> str:
    rows = [[LABELS[name], f"{data['median'][name]:.2f}", f"{min(data['seconds'][name]):.2f}"] for name in COMMANDS]
    verdict = "pass" if data["ratio"] <= data["goal"] else "MISS"
    return "\n".join(
        [
            f"Fresh processes, alternating, {data['repeats']} of each after one warm-up run; "
            f"load average {load[0]:.1f} -> {load[1]:.1f}.",
            "",
            table(["command", "median (s)", "fastest (s)"], rows, markdown),
            "",
            f"ours / baseline (medians): {data['ratio']:.2f}x (goal <= {data['goal']}x): {verdict}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="runs of each command (median)")
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown")
    parser.add_argument("--json", type=Path, help="also write every measurement to this JSON file")
    args = parser.parse_args(argv)

    load_before = os.getloadavg()[0]
    data = measure(max(1, args.repeats))
    print(report(data, args.markdown, (load_before, os.getloadavg()[0])))
    if args.json:
        args.json.write_text(json.dumps(data, indent=2))
    return 0


if __name__ == "__main__":
    run_report(main, "bench_startup")
