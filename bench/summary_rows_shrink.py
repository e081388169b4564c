"""BENCHMARKS.md's summary rows for Shrink: the fine-tuned model pruned and recovered, pruned and in int8, and
int8 of the catalogue model on held-out photos, each against fp32 in ONNX Runtime measured in the same run.
Each takes bench_shrink's --json."""

from __future__ import annotations

from bench.summary_rows import Row, mark


def _by_name(part: dict) -> dict[str, dict]:
    return {variant["variant"]: variant for variant in part["variants"]}


def shrink_rows(data: dict) -> list[Row]:
    goals, ratio = data["goals"], data["ratio"]
    tuned = _by_name(data["fine_tuned"])
    base = tuned["fp32"]
    pruned, both = tuned[f"pruned {ratio:.0%}"], tuned[f"pruned {ratio:.0%} + int8"]
    speed = base["latency_ms"] / both["latency_ms"]
    drop, drop_int8 = base["fidelity"] - pruned["fidelity"], base["fidelity"] - both["fidelity"]
    params, latency = pruned["params"] / base["params"], pruned["latency_ms"] / base["latency_ms"]
    int8 = _by_name(data["int8"])
    agreement, int8_speed = int8["int8"]["fidelity"], int8["fp32"]["latency_ms"] / int8["int8"]["latency_ms"]
    return [
        (
            f"fine-tuned lite0 (textures) pruned {ratio:.0%} and recovered: parameters",
            f"{pruned['params'] / 1e6:.2f} M", f"{base['params'] / 1e6:.2f} M (unpruned)", f"{params:.2f}x",
            f"≤ {goals['params']}x", mark(params <= goals["params"]),
        ),
        (
            "… its latency (batch 1, ONNX Runtime, all threads)",
            f"{pruned['latency_ms']:.1f} ms", f"{base['latency_ms']:.1f} ms (unpruned)", f"{latency:.2f}x",
            f"≤ {goals['latency']}x", mark(latency <= goals["latency"]),
        ),
        (
            "… its validation accuracy",
            f"{pruned['fidelity']:.3f}", f"{base['fidelity']:.3f} (unpruned)", f"{-drop:+.3f}",
            f"within {goals['accuracy_drop']}", mark(drop <= goals["accuracy_drop"]),
        ),
        (
            "… pruned + int8: speed against fp32 ONNX Runtime",
            f"{both['latency_ms']:.1f} ms", f"{base['latency_ms']:.1f} ms (fp32)", f"{speed:.2f}x faster",
            f"≥ {goals['int8_pruned_speedup']}x", mark(speed >= goals["int8_pruned_speedup"]),
        ),
        (
            "… pruned + int8: validation accuracy",
            f"{both['fidelity']:.3f}", f"{base['fidelity']:.3f} (unpruned)", f"{-drop_int8:+.3f}",
            f"within {goals['int8_pruned_drop']}", mark(drop_int8 <= goals["int8_pruned_drop"]),
        ),
        (
            f"lite0 int8: same top-1 as fp32 on held-out images ({data['int8']['holdout']})",
            f"{agreement:.3f}", "fp32", "", f"≥ {goals['agreement']}", mark(agreement >= goals["agreement"]),
        ),
        (
            "lite0 int8: speed against fp32 ONNX Runtime (batch 1, all threads)",
            f"{int8['int8']['latency_ms']:.1f} ms", f"{int8['fp32']['latency_ms']:.1f} ms (fp32)",
            f"{int8_speed:.2f}x faster", f"≥ {goals['int8_speedup']}x", mark(int8_speed >= goals["int8_speedup"]),
        ),
    ]  # fmt: skip
