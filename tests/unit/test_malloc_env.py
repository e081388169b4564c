"""malloc.env: the glibc settings `make run` starts the app with (bench/bench_allocator.py measures them)."""

from __future__ import annotations

from pathlib import Path

from bench.bench_allocator import malloc_settings

ROOT = Path(__file__).resolve().parents[2]


def test_malloc_env_holds_the_three_glibc_settings_as_byte_counts():
    settings = malloc_settings(ROOT / "malloc.env")
    assert set(settings) == {"MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"}
    assert settings["MALLOC_ARENA_MAX"] == "1"
    # glibc takes plain decimal byte counts: "512M" would be ignored without a word.
    assert int(settings["MALLOC_MMAP_THRESHOLD_"]) == int(settings["MALLOC_TRIM_THRESHOLD_"]) == 512 * 2**20


def test_make_run_starts_the_app_with_it():
    run = (ROOT / "Makefile").read_text().split("\nrun:", 1)[1].split("\n\n", 1)[0]
    assert "malloc.env" in run and "streamlit run app.py" in run


def test_comments_and_blank_lines_are_skipped(tmp_path):
    path = tmp_path / "malloc.env"
    path.write_text("# a comment with KEY=VALUE in it\n\nMALLOC_ARENA_MAX=2\n  # indented=comment\n")
    assert malloc_settings(path) == {"MALLOC_ARENA_MAX": "2"}
