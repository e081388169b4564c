"""BENCHMARKS.md's summary rows for Shrink: the fine-tuned model pruned and recovered, pruned and in int8, and
int8 of the catalogue model on held-out photos, each against fp32 in ONNX Runtime measured in the same run.
Each takes bench_shrink's --json."""

from __future__ import annotations

from bench.summary_rows import Row, mark

# Both thread counts: on a 2-core VM two ONNX Runtime threads time small models erratically (a pruned lite0
# took 3.4-6.3 ms on 2 threads against 3.9 on 1), so each latency goal is judged on each.
THREADS = (("1 thread", "latency_ms_one_thread"), ("all threads", "latency_ms"))


def _by_name(part: dict) -> dict[str, dict]:
    return {variant["variant"]: variant for variant in part["variants"]}


def shrink_rows(data: dict) -> list[Row]:
    goals, ratio = data["goals"], data["ratio"]
    tuned = _by_name(data["fine_tuned"])
    base = tuned["fp32"]
    pruned, both = tuned[f"pruned {ratio:.0%}"], tuned[f"pruned {ratio:.0%} + int8"]
    drop = round(base["fidelity"] - pruned["fidelity"], 6) + 0.0  # + 0.0: no "-0.000"
    drop_int8 = round(base["fidelity"] - both["fidelity"], 6) + 0.0
    params = pruned["params"] / base["params"]
    int8 = _by_name(data["int8"])
    agreement = int8["int8"]["fidelity"]
    return [
        (
            f"fine-tuned lite0 (textures) pruned {ratio:.0%} and recovered: parameters",
            f"{pruned['params'] / 1e6:.2f} M", f"{base['params'] / 1e6:.2f} M (unpruned)", f"{params:.2f}x",
            f"≤ {goals['params']}x", mark(params <= goals["params"]),
        ),
        *(
            (
                f"… its latency (batch 1, ONNX Runtime, {threads})",
                f"{pruned[key]:.1f} ms", f"{base[key]:.1f} ms (unpruned)", f"{pruned[key] / base[key]:.2f}x",
                f"≤ {goals['latency']}x", mark(pruned[key] / base[key] <= goals["latency"]),
            )
            for threads, key in THREADS
        ),
        (
            "… its validation accuracy",
            f"{pruned['fidelity']:.3f}", f"{base['fidelity']:.3f} (unpruned)", f"{0 - drop:+.3f}",
            f"within {goals['accuracy_drop']}", mark(drop <= goals["accuracy_drop"]),
        ),
        *(
            (
                f"… pruned + int8: speed against fp32 ONNX Runtime ({threads})",
                f"{both[key]:.1f} ms", f"{base[key]:.1f} ms (fp32)", f"{base[key] / both[key]:.2f}x faster",
                f"≥ {goals['int8_pruned_speedup']}x", mark(base[key] / both[key] >= goals["int8_pruned_speedup"]),
            )
            for threads, key in THREADS
        ),
        (
            "… pruned + int8: validation accuracy",
            f"{both['fidelity']:.3f}", f"{base['fidelity']:.3f} (unpruned)", f"{0 - drop_int8:+.3f}",
            f"within {goals['int8_pruned_drop']}", mark(drop_int8 <= goals["int8_pruned_drop"]),
        ),
        (
            f"lite0 int8: same top-1 as fp32 on held-out images ({data['int8']['holdout']})",
            f"{agreement:.3f}", "fp32", "", f"≥ {goals['agreement']}", mark(agreement >= goals["agreement"]),
        ),
        *(
            (
                f"lite0 int8: speed against fp32 ONNX Runtime (batch 1, {threads})",
                f"{int8['int8'][key]:.1f} ms", f"{int8['fp32'][key]:.1f} ms (fp32)",
                f"{int8['fp32'][key] / int8['int8'][key]:.2f}x faster", f"≥ {goals['int8_speedup']}x",
                mark(int8["fp32"][key] / int8["int8"][key] >= goals["int8_speedup"]),
            )
            for threads, key in THREADS
        ),
    ]  # fmt: skip
