# SPDX-License-Identifier: Apache-2.0
"""benchmarks/soak_serve.py's --target option (issue 30 item 6: the soak against the peers' servers): the command
line each peer gets, the routes each mix sends, the process tree's usage and the report; no server run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import soak_serve
from hypothesis import given
from hypothesis import strategies as st

MODEL = Path("/models/minilm.gguf")
PEER_ROUTES = {
    "llama-cpp-python": {"/v1/embeddings", "/extras/tokenize", "/extras/detokenize"},
    "llama-server": {"/v1/embeddings", "/tokenize", "/detokenize"},
}


def _option(cmd: list[str], name: str) -> str:
    assert cmd.count(name) == 1, (name, cmd)
    return cmd[cmd.index(name) + 1]


def test_embellama_needs_no_peer_command() -> None:
    args = soak_serve.parse_args([])
    assert args.target == "embellama"
    assert soak_serve.peer_settings(args, MODEL) == (None, None)


def test_llama_server_gets_the_model_threads_slots_key_and_port() -> None:
    args = soak_serve.parse_args(
        ["--target", "llama-server", "--llama-server", "/opt/ls", "--threads", "1", "--parallel", "4", "--port", "4321"]
    )
    cmd, port = soak_serve.peer_settings(args, MODEL)
    assert cmd is not None and port == 4321
    assert cmd[0] == "/opt/ls" and "--embedding" in cmd
    assert _option(cmd, "-m") == str(MODEL)
    assert _option(cmd, "--api-key") == soak_serve.KEY
    assert (_option(cmd, "-t"), _option(cmd, "-tb"), _option(cmd, "--parallel")) == ("1", "1", "4")
    assert _option(cmd, "-c") == str(512 * 4)  # 512 tokens per slot, MiniLM's context
    assert _option(cmd, "--port") == "4321"


def test_llama_cpp_python_runs_its_server_module_on_a_free_port() -> None:
    args = soak_serve.parse_args(["--target", "llama-cpp-python", "--lcp-python", "/venv/bin/python", "--threads", "3"])
    cmd, port = soak_serve.peer_settings(args, MODEL)
    assert cmd is not None and port is not None and 0 < port < 65536
    assert cmd[:3] == ["/venv/bin/python", "-m", "llama_cpp.server"]
    assert _option(cmd, "--model") == str(MODEL) and _option(cmd, "--embedding") == "true"
    assert (_option(cmd, "--n_threads"), _option(cmd, "--n_threads_batch")) == ("3", "3")
    assert _option(cmd, "--api_key") == soak_serve.KEY and _option(cmd, "--port") == str(port)


def test_a_given_command_is_filled_in() -> None:
    args = soak_serve.parse_args(
        ["--target", "llama-server", "--port", "9999", "--threads", "2", "--command", "srv -m {model} --port {port} "
         "-t {threads} --api-key {key}"]
    )  # fmt: skip
    cmd, port = soak_serve.peer_settings(args, MODEL)
    assert port == 9999
    assert cmd == ["srv", "-m", str(MODEL), "--port", "9999", "-t", "2", "--api-key", soak_serve.KEY]


def test_an_unknown_target_is_refused() -> None:
    with pytest.raises(SystemExit):
        soak_serve.parse_args(["--target", "ollama"])
    with pytest.raises(ValueError, match="ollama"):
        soak_serve.requests_mix(0, False, "ollama")
    with pytest.raises(ValueError, match="embellama"):
        soak_serve.peer_command("embellama", MODEL, port=1, threads=1)


def test_llama_server_without_a_binary_says_how_to_build_one() -> None:
    with pytest.raises(SystemExit, match="--with-server"):
        soak_serve.peer_command("llama-server", MODEL, port=1, threads=1, llama_server=None)


@given(i=st.integers(0, 10**6), target=st.sampled_from(sorted(PEER_ROUTES)))
def test_a_peer_gets_only_its_own_routes(i: int, target: str) -> None:
    name, path, body, allowed, timeout = soak_serve.requests_mix(i, True, target)
    assert path in PEER_ROUTES[target]
    assert "rerank" not in name  # a peer's soak has no reranker, whatever it is given
    if name in ("bad: not json", "bad: wrong type"):  # must get a 4xx, never a 2xx or a 5xx
        assert set(allowed) == set(range(400, 500))
    else:
        assert 200 in allowed and not any(s >= 500 and s not in soak_serve.BACKPRESSURE for s in allowed)
    if not isinstance(body, bytes):
        json.dumps(body)
    assert timeout is None or name == "hang-up"


@pytest.mark.parametrize("target", soak_serve.TARGETS)
def test_mix_size_counts_each_kind_once(target: str) -> None:
    names = [soak_serve.requests_mix(i, True, target)[0] for i in range(500)]
    assert soak_serve.mix_size(target, True) == len(set(names))
    assert names[: len(set(names))] == list(dict.fromkeys(names))  # the mix cycles through all its kinds in order


def test_embellama_mix_is_unchanged_by_the_target_option() -> None:
    for i in range(60):
        assert soak_serve.requests_mix(i, True) == soak_serve.requests_mix(i, True, "embellama")
    assert soak_serve.mix_size("embellama", True) == len(soak_serve.MIX_NAMES)


def _ps(pids: list[int]) -> tuple[int, int]:
    out = subprocess.run(
        ["ps", "-o", "rss=,nlwp=", "-p", ",".join(map(str, pids))], capture_output=True, text=True, check=True
    ).stdout
    rows = [tuple(map(int, line.split())) for line in out.splitlines() if line.strip()]
    assert len(rows) == len(pids)
    return sum(r[0] for r in rows), sum(r[1] for r in rows)


def test_tree_usage_sums_the_server_and_its_children() -> None:
    code = (
        "import subprocess, sys, time; "
        "c = subprocess.Popen([sys.executable, '-c', 'import time; print(1, flush=True); time.sleep(60)'], "
        "stdout=subprocess.PIPE); c.stdout.readline(); print(c.pid, flush=True); time.sleep(60)"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    child = None
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        time.sleep(0.2)  # both asleep: their RSS no longer moves
        usage = soak_serve.tree_usage(parent.pid)
        rss, threads = _ps([parent.pid, child])
        assert usage["processes"] == 2
        assert usage["rss_kib"] == pytest.approx(rss, rel=0.02)
        assert usage["threads"] == threads
        assert usage["fds"] == len(os.listdir(f"/proc/{parent.pid}/fd")) + len(os.listdir(f"/proc/{child}/fd"))
        alone = soak_serve.tree_usage(child)
        assert alone["processes"] == 1 and alone["rss_kib"] < usage["rss_kib"]
    finally:
        if child is not None:
            os.kill(child, signal.SIGKILL)
        parent.kill()
        parent.wait(10)
    with pytest.raises(OSError):
        soak_serve.tree_usage(parent.pid)  # a server that is gone is an error, not zero


def _result(target: str, passed: bool) -> dict:
    samples = [
        {"t": 10.0 * k, "rss_kib": 200_000 + k, "fds": 20, "threads": 5, "answered": 10 * k, "p50_ms": 5.0 if k else None,
         "p99_ms": 50.0 if k else None, "refused": 0, "hang_ups": 1, "errors": 0 if passed else 2,
         "error_examples": [] if passed else ["bad: not json: status 500"], "load1": 2.5 + k}
        for k in range(4)
    ]  # fmt: skip
    return {
        "passed": passed,
        "failures": [] if passed else ["5xx other than backpressure: {'500': 6}"],
        "rss_growth_after_warmup": 0.0,
        "rss_base_kib": 200_001,
        "rss_last_kib": 200_003,
        "requests_sent": 60,
        "requests_answered": 60,
        "statuses": {"200": 54, "500": 6},
        "exit_status": 0,
        "samples": samples,
        "settings": {"target": target, "command": "llama-server -m m.gguf --embedding", "seconds": 30, "clients": 8,
                     "interval": 10, "warmup": 10, "threads": 1, "max_pending": None, "model": "m.gguf",
                     "reranker": None, "load_average": [3.0, 2.0, 1.0]},
    }  # fmt: skip


def test_a_peer_report_names_the_server_its_command_and_the_load(tmp_path: Path) -> None:
    result = _result("llama-server", False)
    result["settings"]["note"] = "Built from llama.cpp abc."
    soak_serve.write_report(result, tmp_path)
    text = (tmp_path / "soak-llama-server.md").read_text()
    assert "\n\nBuilt from llama.cpp abc.\n\n" in text
    assert text.startswith("# Soak of llama-server (")
    assert "`llama-server -m m.gguf --embedding`" in text
    assert "load average (1 min) 2.5 to 5.5" in text
    assert "**FAIL: 5xx other than backpressure" in text
    assert sum(line.startswith("|") for line in text.splitlines()) == 2 + 4  # header, rule, a row per sample
    assert "--target llama-server" in text
    assert json.loads((tmp_path / "soak-llama-server.json").read_text())["settings"]["target"] == "llama-server"
    assert (tmp_path / "soak-llama-server.png").stat().st_size > 1000


def test_cpu_features_name_the_extensions_in_proc_cpuinfo() -> None:
    flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")).split()
    named = soak_serve.cpu_features().split(", ")
    assert ("AVX-512" in named) == ("avx512f" in flags)
    assert ("AMX" in named) == ("amx_tile" in flags)
    assert ("BF16" in named) == ("avx512_bf16" in flags)
