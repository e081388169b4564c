"""BENCHMARKS.md's summary rows for the work the pages do: fine-tuning and its memory, Inside, Features,
near-duplicates. Each takes a bench script's --json output."""

from __future__ import annotations

from bench.summary_rows import Row, mark

MB = 2**20


def finetune_mode_rows(data: dict) -> list[Row]:
    if "finetune" not in data:
        return []
    report, goals = data["finetune"], data["finetune"]["goals"]
    mean, natural = report["mean"], report["natural"]
    splits = len(report["runs"])
    load = report["load"][0]
    return [
        (
            f"fine-tune mode vs a linear probe, rendered digits ({report['images']} images, mean of {splits} splits)",
            f"{mean['finetune_val']:.3f} ({mean['finetune_test']:.3f} held out)",
            f"{mean['probe_val']:.3f} ({mean['probe_test']:.3f} held out) (logistic regression, same split)",
            f"{report['gap_val']:+.3f} ({report['gap_test']:+.3f})",
            f"≥ +{goals['gap_over_probe']}",
            mark(report["gap_val"] >= goals["gap_over_probe"]),
        ),
        (
            f"fine-tune mode's whole training ({report['train_images']} training images, load average {load:.1f})",
            f"{mean['seconds']:.1f} s ({mean['epoch_seconds']:.1f} s per epoch)",
            f"{report['one_pass_s']:.2f} s (one extraction pass)",
            f"{report['finetune_vs_one_pass']:.1f}x",
            f"≤ {goals['seconds']:.0f} s",
            mark(mean["seconds"] <= goals["seconds"]),
        ),
        (
            f"fine-tune mode vs fast mode on natural photos (the example dataset: {natural['images']} photos of "
            "brick, grass, gravel; mean of the splits)",
            f"{natural['finetune_val']:.3f}",
            f"{natural['fast_val']:.3f} (fast mode)",
            f"{natural['difference']:+.3f}",
            f"≥ {goals['natural_vs_fast']} on every split",
            mark(natural["worst_difference"] >= goals["natural_vs_fast"]),
        ),
    ]


def finetune_rows(data: dict) -> list[Row]:
    goals = data["goals"]
    what = f"{data['images']} images, {data['epochs']} epochs"
    onnx = []
    if "onnx_one_pass_s" in data:
        onnx = [
            (
                f"fine-tune fast mode's extraction pass through ONNX Runtime vs PyTorch ({data['images']} images)",
                f"{data['onnx_one_pass_s']:.2f} s",
                f"{data['one_pass_s']:.2f} s (PyTorch)",
                f"{data['onnx_one_pass_s'] / data['one_pass_s']:.2f}x",
                "faster (< 1x)",
                mark(data["onnx_one_pass_s"] < data["one_pass_s"]),
            ),
            (
                f"fine-tune fast mode through ONNX Runtime vs PyTorch ({what})",
                f"{data['onnx_ours_s']:.2f} s",
                f"{data['ours_s']:.2f} s (PyTorch)",
                f"{data['onnx_ours_s'] / data['ours_s']:.2f}x",
                "",
                "",
            ),
        ]
    return onnx + [
        (
            f"fine-tune fast mode vs one feature pass ({what})",
            f"{data['ours_s']:.2f} s",
            f"{data['one_pass_s']:.2f} s (one extraction pass)",
            f"{data['ours_vs_one_pass']:.2f}x",
            f"≤ {goals['ours_vs_one_pass']}x",
            mark(data["ours_vs_one_pass"] <= goals["ours_vs_one_pass"]),
        ),
        (
            f"fine-tune fast mode vs the naive every-epoch loop ({what})",
            f"{data['ours_s']:.2f} s",
            f"{data['naive_s']:.2f} s (naive, {data['naive_epochs']} epochs timed, extrapolated)",
            f"{data['naive_vs_ours']:.1f}x faster",
            f"≥ {goals['naive_vs_ours']}x",
            mark(data["naive_vs_ours"] >= goals["naive_vs_ours"]),
        ),
        *finetune_mode_rows(data),
    ]


def finetune_memory_rows(data: list[dict]) -> list[Row]:
    return [
        (
            f"fine-tune mode's peak RSS, efficientnet_lite0 to depth '{run['depth']}' at 224 px "
            f"(micro-batches of {run['ours']['micro']} of 32)",
            f"{run['ours']['peak'] / 1e9:.2f} GB",
            f"{run['whole']['peak'] / 1e9:.2f} GB (the whole batch at once)",
            f"{run['ours']['peak'] / run['whole']['peak']:.2f}x",
            f"< {run['goal_peak_gb']} GB",
            mark(run["ours"]["peak"] <= run["goal_peak_gb"] * 1e9),
        )
        for run in data
    ]


def estimate_rows(data: dict) -> list[Row]:
    low, high = data["goal"]
    return [
        (
            f"fine-tune mode's time estimate, {r['model']} to depth '{r['depth']}' ({r['epochs']} epochs, "
            f"the example dataset's {r['images']} photos)",
            f"{r['actual_s']:.1f} s (actual train())",
            f"{r['estimate_s']:.1f} s (the estimate, measured in {r['measuring_s']:.0f} s)",
            f"{r['ratio']:.2f}",
            f"{low}-{high}",
            mark(low <= r["ratio"] <= high),
        )
        for r in data["results"]
    ]


def inside_rows(data: dict) -> list[Row]:
    anatomy = data["anatomy"]
    cold = sum(r["cold_s"] for r in anatomy)
    floor = sum(r["floor_s"] for r in anatomy)
    warm = max(r["warm_ms"] for r in anatomy)
    rows: list[Row] = [
        (
            f"Inside: anatomy of {len(anatomy)} models, cold (meta build, FLOP count, fx trace)",
            f"{cold:.1f} s",
            f"{floor:.1f} s (meta build + FLOP count alone)",
            f"{cold / floor:.2f}x",
            "",
            "",
        ),
        (
            "Inside: anatomy warm (cached), slowest model",
            f"{warm * 1000:.1f} µs",
            "",
            "",
            f"< {data['goal_warm_ms'] * 1000:.0f} µs",
            mark(warm < data["goal_warm_ms"]),
        ),
    ]
    rows += [
        (
            f"Inside: stage maps of one photo, {r['model']}",
            f"{r['maps_ms']:.1f} ms",
            f"{r['plain_ms']:.1f} ms (plain forward, same preprocessing)",
            f"{r['ratio']:.3f}x",
            f"≤ {data['goal_maps']}x",
            mark(r["ratio"] <= data["goal_maps"]),
        )
        for r in data["maps"]
    ]
    return rows


def features_rows(data: dict) -> list[Row]:
    t = data["throughput"]
    rows: list[Row] = [
        (
            f"Features: embeddings per second, {data['model']} ({data['images']} photos, batches of 32), vs Classify",
            f"{t['embed']['ips']:.1f} img/s",
            f"{t['classify']['ips']:.1f} img/s (classify_files, same model and run)",
            f"{t['ratio']:.3f}",
            f"≥ {data['goal']}",
            mark(t["ratio"] >= data["goal"]),
        )
    ]
    if "memory" in data:
        small, big = (data["memory"][str(count)] for count in data["memory_counts"])
        rows.append(
            (
                f"Features: peak RSS of a fresh process embedding {big['images']:,} images",
                f"{big['peak'] / MB:.0f} MB",
                f"{small['peak'] / MB:.0f} MB (the same, one batch of {small['images']})",
                f"{data['memory']['ratio']:.2f}x",
                "",
                "",
            )
        )
    return rows


def duplicates_rows(data: dict) -> list[Row]:
    weakest, closest = data["weakest_copy"], data["closest_distinct"]
    return [
        (
            f"near-duplicates at the default threshold {data['default']} ({data['model']}): planted copies grouped "
            f"with their original, false merges",
            f"{data['copies_found']} of {data['copies_total']}, {len(data['false_merges'])} false merges",
            f"gap: distinct photos up to {closest['similarity']:.3f}, copies from {weakest['similarity']:.3f}",
            "",
            "all found, none merged",
            mark(data["groups_as_planted"]),
        )
    ]


def soak_rows(data: dict) -> list[Row]:
    """bench_soak: many sessions at once under a memory limit, each flow against itself alone."""
    where = f"{data['sessions']} sessions of heavy flows at once, {data['memory_limit_mb']} MB ({data['limit']}), "
    where += f"{data['cores']} cores"
    clean = not data["errors"] and data["tracebacks_in_log"] == 0 and data["oom_kills"] == 0 and data["alive"]
    rows: list[Row] = [
        (
            f"{where}: errors, tracebacks, processes killed",
            f"{len(data['errors'])} errors, {data['tracebacks_in_log']} tracebacks, {data['oom_kills']} killed",
            "",
            "",
            "none, every flow done",
            mark(clean and data["all_done"]),
        ),
        (
            f"{where}: peak memory of the app",
            f"{data['peak_anon_mb']} MB anonymous ({data['peak_rss_mb']} MB resident)",
            f"{data['memory_limit_mb']} MB (the limit)",
            f"{data['peak_anon_mb'] / data['memory_limit_mb']:.2f}",
            "< 1",
            mark(data["peak_anon_mb"] < data["memory_limit_mb"]),
        ),
    ]
    for flow, ratio in data["slowdown"].items():
        rows.append(
            (
                f"{where}: {flow}, slowest session against the flow alone",
                f"{ratio * data['alone_s'][flow]:.1f} s",
                f"{data['alone_s'][flow]:.1f} s (alone, same run)",
                f"{ratio:.2f}x",
                f"≤ {data['bound']:.1f}x (1.5 x sessions / cores)",
                mark(ratio <= data["bound"]),
            )
        )
    server = data.get("classify_server_ms") or {}
    if data.get("classify_slowdown") is not None:
        rows.append(
            (
                f"{where}: Classify of one photo, the latency its page reports, slowest session",
                f"{server['together']:.1f} ms",
                f"{server['alone']:.1f} ms (alone, same run)",
                f"{data['classify_slowdown']:.2f}x",
                f"≤ {data['classify_goal']:.1f}x (while the heavy flows run)",
                mark(data["classify_slowdown"] <= data["classify_goal"]),
            )
        )
    return rows


def light_work_rows(data: dict) -> list[Row]:
    """bench_light_work: classifying one photo while whole-network fine-tunes train in the same process."""
    rows: list[Row] = []
    for how, ms, ratio in (
        ("the trainings not told", "beside_training_ms", "ratio"),
        ("inside light(), as the page: the trainings give way", "given_way_ms", "given_way_ratio"),
    ):
        what = (
            f"classify one photo (efficientnet_lite0, ONNX Runtime) while {data['trainings']} whole-network "
            f"fine-tune{'s' if data['trainings'] > 1 else ''} train{'' if data['trainings'] > 1 else 's'} in the "
            f"same process, {how}"
        )
        if data.get(ratio) is None:
            rows.append((what, "training ended first", "", "", "", ""))
            continue
        rows.append(
            (
                what,
                f"{data[ms]:.1f} ms",
                f"{data['alone_ms']:.1f} ms (alone, same run)",
                f"{data[ratio]:.2f}x",
                f"< {data['goal']:.0f}x",
                mark(data[ratio] < data["goal"]),
            )
        )
    return rows
