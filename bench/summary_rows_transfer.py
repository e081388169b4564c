"""BENCHMARKS.md's summary rows for "Which layer fits": probing every stage against one extraction pass, and the
best stage against the penultimate layer on digits and on the example textures. Takes bench_transfer's --json."""

from __future__ import annotations

from bench.summary_rows import Row, mark


def transfer_rows(data: dict) -> list[Row]:
    cost = data["stage_features_s"] + data["probes_s"]
    ratio, goal = data["ratio"], data["goal_ratio"]
    rows: list[Row] = [
        (
            f"every stage of {data['model']} probed on {data['images']} images (features + probes)",
            f"{cost:.1f} s", f"{data['extraction_s']:.1f} s (one extraction pass)", f"{ratio:.2f}x",
            f"≤ {goal}x", mark(ratio <= goal),
        ),
    ]  # fmt: skip
    for name, described in (("digits", "upscaled digits"), ("textures", "example textures")):
        part = data[name]
        gain = part["best_accuracy"] - part["penultimate"]
        rows.append(
            (
                f"… on {described}: best stage {part['best']} ({part['best_depth']:.2f} deep)",
                f"{part['best_accuracy']:.3f}", f"{part['penultimate']:.3f} (penultimate layer)", f"{gain:+.3f}",
                "reported", "",
            )
        )  # fmt: skip
    return rows
