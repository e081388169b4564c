"""BENCHMARKS.md's summary rows for the models' own figures: loading, classifying, runtimes, Compare,
memory, the allocator, start-up and batch. Each takes a bench script's --json output."""

from __future__ import annotations

MB = 2**20

Row = tuple[str, str, str, str, str, str]  # figure, ours, baseline, ratio, goal, result


def mark(ok: bool) -> str:
    return "pass" if ok else "**MISS**"


def load_rows(data: list[dict]) -> list[Row]:
    rows: list[Row] = []
    for r in data:
        if "error" in r:
            rows.append((f"cold load {r['model']}", "error", "", "", "", r["error"]))
            continue
        tv, ours = r["torchvision"], r["zooscope"]
        goal_speed = "≥ 5x" if r["model"] == "vgg16" else "faster (> 1x)"
        ok_speed = r["speedup"] >= 5.0 if r["model"] == "vgg16" else r["speedup"] > 1.0
        rows.append(
            (
                f"cold load {r['model']} from a cached file: time",
                f"{ours['seconds']:.3f} s",
                f"{tv['seconds']:.3f} s (torchvision)",
                f"{r['speedup']:.1f}x faster",
                goal_speed,
                mark(ok_speed),
            )
        )
        rows.append(
            (
                f"cold load {r['model']}: peak RSS growth",
                f"{ours['peak_growth'] / MB:.0f} MB",
                f"{tv['peak_growth'] / MB:.0f} MB (torchvision)",
                f"{ours['peak_growth'] / tv['peak_growth']:.2f}x",
                f"ours ≤ 1.2x file ({r['file_size'] / MB:.0f} MB)",
                mark(ours["memory_ratio"] <= 1.2),
            )
        )
    return rows


def classify_rows(data: dict) -> list[Row]:
    goal, goal_ips = data["setup"]["goal_overhead"], data["setup"]["goal_throughput"]
    rows: list[Row] = [
        (
            f"warm classify of one photo, {r['model']} (decode + preprocess + forward + top-k)",
            f"{r['ours_ms']:.1f} ms",
            f"{r['bare_ms']:.1f} ms (bare forward)",
            f"{r['ratio']:.3f}x",
            f"≤ {goal}x",
            mark(r["ratio"] <= goal),
        )
        for r in data["single"]
    ]
    rows += [
        (
            f"throughput, {r['model']}, batch {r['batch']}",
            f"{r['ours_ips']:.1f} img/s",
            f"{r['bare_ips']:.1f} img/s (bare forward)",
            f"{r['ratio']:.3f}",
            f"≥ {goal_ips:.2f}",
            mark(r["ratio"] >= goal_ips),
        )
        for r in data["batches"]
    ]
    return rows + runtime_rows(data)


def runtime_rows(data: dict) -> list[Row]:
    """bench_classify's runtimes table: ONNX Runtime against the bare eager forward and the bare session; int8."""
    setup = data["setup"]
    goals, goal_session = setup.get("goal_vs_eager", {}), setup.get("goal_vs_session", 1.15)
    rows: list[Row] = []
    for r in data.get("runtimes", []):
        t, model = r["times"], r["model"]
        if "onnx" not in t:
            rows.append((f"warm classify of one photo through ONNX Runtime, {model}", "stays on PyTorch", "", "", "",
                         r.get("onnx_note", "")))  # fmt: skip
            continue
        onnx, eager, session = t["onnx"]["ms"], t["eager"]["ms"], t["session_onnx"]["ms"]
        goal = goals.get(model)
        rows.append(
            (
                f"warm classify of one photo through ONNX Runtime, {model}, vs PyTorch's bare forward",
                f"{onnx:.1f} ms",
                f"{eager:.1f} ms (bare eager forward)",
                f"{onnx / eager:.3f}x",
                f"≤ {goal}x" if goal else "",
                mark(onnx / eager <= goal) if goal else "",
            )
        )
        rows.append(
            (
                f"warm classify of one photo through ONNX Runtime, {model}, vs the bare session",
                f"{onnx:.1f} ms",
                f"{session:.1f} ms (bare ONNX Runtime session)",
                f"{onnx / session:.3f}x",
                f"≤ {goal_session}x",
                mark(onnx / session <= goal_session),
            )
        )
        if "int8" in t:
            report = r["int8_report"]
            fast, reason = r["int8_verdict"]
            random = "" if model.startswith("efficientnet_lite") else " (random weights)"
            rows.append(
                (
                    f"int8 {model}: warm classify vs ONNX Runtime fp32; same top-1 as fp32 on "
                    f"{report['same_top1']} of {report['images']} check photos{random}; "
                    f"{r['int8_mb']:.1f} vs {r['onnx_mb']:.1f} MB",
                    f"{t['int8']['ms']:.1f} ms",
                    f"{onnx:.1f} ms (ONNX Runtime fp32)",
                    f"{t['int8']['ms'] / onnx:.3f}x",
                    "the fast choice only where faster and ≥ 95% agreement",
                    "offered as the fast choice" if fast else f"not the fast choice: {reason}",
                )
            )
    return rows


def compare_rows(data: dict) -> list[Row]:
    models = ", ".join(data["models"])
    rows: list[Row] = []
    for r in data["results"]:
        web_size = r["megapixels"] <= data.get("goal_megapixels", float("inf"))
        rows.append(
            (
                f"Compare, {models}, on {r['image']} ({r['size']})",
                f"{r['compare']:.1f} ms",
                f"{r['forwards']:.1f} ms (sum of bare forwards)",
                f"{r['ratio']:.3f}x",
                f"≤ {data['goal']}x" if web_size else "(photos of web size)",
                mark(r["ratio"] <= data["goal"]) if web_size else "",
            )
        )
        if "textbook" in r:
            rows.append(
                (
                    f"Compare on {r['image']} vs the textbook path (full decode, transforms() on the whole photo)",
                    f"{r['compare']:.1f} ms",
                    f"{r['textbook']:.1f} ms (textbook path)",
                    f"{r['vs_textbook']:.3f}x",
                    "< 1x (faster)",
                    mark(r["vs_textbook"] < 1.0),
                )
            )
    return rows


def memory_rows(data: dict) -> list[Row]:
    ours, tv = data["zooscope"], data["torchvision"]
    rows: list[Row] = [
        (
            f"process RSS with {', '.join(data['models'])} loaded (one forward each)",
            f"{ours['rss'] / 1e9:.2f} GB ({ours['file'] / 1e9:.2f} GB of it file-backed)",
            f"{tv['rss'] / 1e9:.2f} GB (torchvision builders)",
            f"{data['ratio']:.2f}x",
            f"< {data['goal_bytes'] / 1e9:.1f} GB",
            mark(data["passed"]),
        )
    ]
    rows.append(
        (
            "peak RSS of that process",
            f"{ours['peak'] / 1e9:.2f} GB",
            f"{tv['peak'] / 1e9:.2f} GB (torchvision builders)",
            f"{data['peak_ratio']:.2f}x",
            "",
            "",
        )
    )
    onnx = data.get("zooscope-onnx")
    if onnx:
        engines = dict(zip(data["models"], onnx["runtimes"], strict=False))
        verified = [name for name, engine in engines.items() if engine == "onnx"]
        rows.append(
            (
                f"the same five in ONNX Runtime, one session each ({len(verified)} of {len(engines)} verified)",
                f"{onnx['rss'] / 1e9:.2f} GB ({onnx['anon'] / 1e9:.2f} GB of it anonymous)",
                f"{tv['rss'] / 1e9:.2f} GB (torchvision builders)",
                f"{data['onnx_ratio']:.2f}x",
                f"< {data['goal_bytes'] / 1e9:.1f} GB",
                mark(data["onnx_passed"]),
            )
        )
    return rows


def allocator_rows(data: dict) -> list[Row]:
    default, tuned = data["default"], data["tuned"]
    rows: list[Row] = [
        (
            f"`make run`'s malloc.env vs glibc defaults: {name}, batch {batch}, images/s",
            f"{tuned['models'][name][batch]:.1f} img/s",
            f"{default['models'][name][batch]:.1f} img/s (glibc defaults)",
            f"{tuned['models'][name][batch] / default['models'][name][batch]:.2f}x",
            "faster (> 1x)" if batch != "1" else "",
            mark(tuned["models"][name][batch] > default["models"][name][batch]) if batch != "1" else "",
        )
        for name in default["models"]
        for batch in default["models"][name]
    ]
    rows.append(
        (
            "`make run`'s malloc.env vs glibc defaults: RSS after the run (peak)",
            f"{tuned['rss'] / 2**20:.0f} MB ({tuned['peak'] / 2**20:.0f} MB)",
            f"{default['rss'] / 2**20:.0f} MB ({default['peak'] / 2**20:.0f} MB) (glibc defaults)",
            f"{tuned['rss'] / default['rss']:.2f}x",
            "",
            "",
        )
    )
    return rows


def startup_rows(data: dict) -> list[Row]:
    return [
        (
            "start-up: `python -m core models` (fresh process)",
            f"{data['median']['ours']:.2f} s",
            f"{data['median']['baseline']:.2f} s (`import torch, torchvision`)",
            f"{data['ratio']:.2f}x",
            f"≤ {data['goal']}x",
            mark(data["ratio"] <= data["goal"]),
        )
    ]


def batch_rows(data: dict) -> list[Row]:
    local, ray = data["local"], data["ray"]
    what = f"`batch classify` of {data['images']} generated JPEGs, {data['model']}"
    rows: list[Row] = [
        (
            f"{what}: Ray Data, {ray['actors']} actors, actors' start included, vs the local engine",
            f"{ray['ips']:.1f} img/s",
            f"{local['ips']:.1f} img/s (local engine, {local['threads']} threads)",
            f"{ray['ips'] / local['ips']:.2f}x",
            "",
            "",
        )
    ]
    if ray.get("steady_ips"):
        rows.append(
            (
                f"{what}: Ray Data's steady rate (a run less a small run) vs the local engine",
                f"{ray['steady_ips']:.1f} img/s",
                f"{local['ips']:.1f} img/s (local engine)",
                f"{ray['steady_ips'] / local['ips']:.2f}x",
                "",
                "",
            )
        )
    return rows
