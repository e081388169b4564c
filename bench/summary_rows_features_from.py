"""BENCHMARKS.md's summary rows for fast mode from a stage: the best stage against the penultimate layer on
upscaled digits, and the cut network against the backbone. Takes bench_features_from's --json."""

from __future__ import annotations

from bench.summary_rows import Row, mark


def features_from_rows(data: dict) -> list[Row]:
    goal, gain = data["goals"]["accuracy_gain"], data["mean_gain"]
    seeds = len(data["trials"])
    rows: list[Row] = [
        (
            f"fast mode from the best stage ({data['stage']}, by the probes) on {data['images']} upscaled digits: "
            f"validation accuracy, mean of {seeds} splits",
            f"{data['mean_val_accuracy_stage']:.3f}", f"{data['mean_val_accuracy_penultimate']:.3f} (penultimate)",
            f"{gain:+.3f}", f"≥ +{goal}", mark(gain >= goal),
        ),
    ]  # fmt: skip
    cut = data["cut"]
    if cut:
        params = cut["params_cut"] / cut["params_full"]
        rows.append((f"… the network cut at {data['stage']}: parameters", f"{cut['params_cut'] / 1e6:.2f} M",
                     f"{cut['params_full'] / 1e6:.2f} M (uncut)", f"{params:.2f}x", "< 1x",
                     mark(params < 1)))  # fmt: skip
        for size, value in cut["latency_ms"].items():
            ratio = value["cut"] / value["full"]
            rows.append((f"… its latency (PyTorch CPU, batch {size})", f"{value['cut']:.1f} ms",
                         f"{value['full']:.1f} ms (uncut)", f"{ratio:.2f}x", "< 1x", mark(ratio < 1)))  # fmt: skip
    return rows
