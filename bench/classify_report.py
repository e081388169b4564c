"""bench_classify's tables and goals: what its figures mean, each beside its baseline, pass or MISS."""

from __future__ import annotations

from collections.abc import Callable

from bench.report import table

GOAL_OVERHEAD = 1.15
GOAL_THROUGHPUT = 1 / GOAL_OVERHEAD
GOAL_VS_EAGER = {"efficientnet_lite0": 0.4, "resnet50": 0.6}  # warm classify through ONNX Runtime / bare eager
GOAL_VS_SESSION = 1.15  # warm classify through ONNX Runtime / the bare session on a ready tensor
REAL_WEIGHTS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")  # the bundled models


def _mark(ok: bool) -> str:
    return "pass" if ok else "MISS"


def report(results: dict, markdown: bool) -> str:

    def fmt(header: list[str], rows: list[list[str]]) -> str:
        return table(header, rows, markdown)

    single_header = [
        "model",
        "image",
        "ours ms",
        "bare forward ms",
        "ratio",
        "goal",
        "decode ms",
        "preprocess ms",
        "top-k ms",
        "rest ms",
        "wall-clock ratio",
    ]
    single_rows = [
        [
            r["model"],
            r["image"],
            f"{r['ours_ms']:.1f}",
            f"{r['bare_ms']:.1f}",
            f"{r['ratio']:.3f}x",
            f"<= {GOAL_OVERHEAD}x {_mark(r['ratio'] <= GOAL_OVERHEAD)}",
            f"{r['decode_ms']:.1f}",
            f"{r['preprocess_ms']:.1f}",
            f"{r['top_k_ms']:.2f}",
            f"{r['rest_ms']:.1f}",
            f"{r['wall_ratio']:.3f}x",
        ]
        for r in results["single"]
    ]
    batch_header = ["model", "batch", "ours img/s", "bare img/s", "ours / bare", "goal", "wall-clock ours / bare"]

    def batch_rows(rows: list[dict], precision: bool = False) -> list[list[str]]:
        return [
            [
                r["model"] + (f" {r['precision']}" if precision else ""),
                str(r["batch"]),
                f"{r['ours_ips']:.1f}",
                f"{r['bare_ips']:.1f}",
                f"{r['ratio']:.3f}",
                f">= {GOAL_THROUGHPUT:.2f} {_mark(r['ratio'] >= GOAL_THROUGHPUT)}",
                f"{r['wall_ratio']:.3f}",
            ]
            for r in rows
        ]

    setup = results["setup"]
    clock = (
        "this thread's CPU time (time.thread_time: the work, not the waits for a core other jobs hold)"
        if setup["clock"] == "cpu"
        else "wall-clock time"
    )
    out = [
        f"CPU, {setup['threads']} torch thread(s), load average {setup['load'][0]:.1f} -> {setup['load'][1]:.1f}; "
        f"median of {setup['runs']} alternated runs (one photo) and {setup['batch_repeats']} (batches). "
        f"Times and ratios on {clock}; the wall-clock ratio of the same runs is shown beside them.",
        "",
        "Warm classify of one photo: classify_files (decode + preprocess + forward + softmax + top-k) vs the bare "
        "forward on a ready tensor.",
        "",
        fmt(single_header, single_rows),
        "",
        "Batch throughput: classify_images on decoded photos (preprocess + forward + top-k) vs the bare forward at "
        "the same batch size.",
        "",
        fmt(batch_header, batch_rows(results["batches"])),
    ]
    if results.get("runtimes"):
        out += ["", *runtimes_report(results["runtimes"], fmt)]
    gpu = results.get("gpu")
    if gpu:
        out += [
            "",
            f"Accelerator table ({gpu['device']}): through core (load_model with that precision; channels-last CNN, "
            "preprocessing on the device) vs a plain torchvision module with the same weights on the device "
            "(NCHW; bf16 by autocast).",
            "",
            fmt(batch_header, batch_rows(gpu["rows"], precision=True)),
            "",
            f"ZOOSCOPE_PRECISION=auto chooses: {', '.join(f'{k} {v}' for k, v in gpu['auto'].items())}"
            + ("" if gpu["agreement"] is None else f" (bf16 check: {gpu['agreement']:.3f} top-1 agreement)"),
        ]
    return "\n".join(out)


def runtimes_report(rows: list[dict], fmt: Callable[[list[str], list[list[str]]], str]) -> list[str]:
    header = [
        "model",
        "bare eager ms",
        "bare session ms",
        "PyTorch ms",
        "ONNX Runtime ms",
        "ONNX / eager",
        "goal",
        "ONNX / session",
        "goal",
        "first use s",
    ]
    fp32_rows, int8_rows = [], []
    for r in rows:
        t = r["times"]
        eager = t["eager"]["ms"]
        if "onnx" not in t:
            fp32_rows.append([r["model"], f"{eager:.1f}", "", f"{t['torch']['ms']:.1f}", r.get("onnx_note", "")])
            fp32_rows[-1] += [""] * (len(header) - len(fp32_rows[-1]))
        else:
            onnx, session = t["onnx"]["ms"], t["session_onnx"]["ms"]
            goal = GOAL_VS_EAGER.get(r["model"])
            fp32_rows.append(
                [
                    r["model"],
                    f"{eager:.1f}",
                    f"{session:.1f}",
                    f"{t['torch']['ms']:.1f}",
                    f"{onnx:.1f}",
                    f"{onnx / eager:.3f}x",
                    f"<= {goal}x {_mark(onnx / eager <= goal)}" if goal else "",
                    f"{onnx / session:.3f}x",
                    f"<= {GOAL_VS_SESSION}x {_mark(onnx / session <= GOAL_VS_SESSION)}",
                    f"{r['onnx_first_use_s']:.1f}",
                ]
            )
        if "int8" in t:
            report, (fast, reason) = r["int8_report"], r["int8_verdict"]
            int8, session = t["int8"]["ms"], t["session_int8"]["ms"]
            fp32 = t["onnx"]["ms"] if "onnx" in t else float("nan")
            int8_rows.append(
                [
                    r["model"],
                    f"{session:.1f}",
                    f"{int8:.1f}",
                    f"{int8 / fp32:.3f}x",
                    f"{int8 / eager:.3f}x",
                    f"{int8 / session:.3f}x",
                    f"{report['same_top1']}/{report['images']}" + ("" if r["model"] in REAL_WEIGHTS else " (random)"),
                    f"{r['int8_mb']:.1f} / {r.get('onnx_mb', float('nan')):.1f}",
                    "yes" if fast else f"no: {reason}",
                    f"{r['int8_first_use_s']:.1f}",
                ]
            )
        elif "int8_note" in r:
            int8_rows.append([r["model"], "", "", "", "", "", "", "", r["int8_note"], ""])
    int8_header = [
        "model",
        "bare int8 session ms",
        "int8 classify ms",
        "int8 / ONNX fp32 classify",
        "int8 / eager",
        "int8 / session",
        "same top-1 as fp32",
        "MB int8 / fp32",
        "fast choice",
        "first use s",
    ]
    return [
        "Runtimes: warm classify of one photo (classify_files: decode + preprocess + forward + softmax + top-k) in "
        "PyTorch and in ONNX Runtime, against the bare eager forward and the bare ONNX Runtime session on the same "
        "ready tensor, all in one rotation of runs. First use: export, check against PyTorch (and quantize) into an "
        "empty cache, once per model and weights.",
        "",
        fmt(header, fp32_rows),
        "",
        "int8 (static QDQ, per channel; same top-1 as fp32 measured on the 39 check photos when it was made; "
        "'(random)': random weights, where agreement says nothing):",
        "",
        fmt(int8_header, int8_rows),
    ]
