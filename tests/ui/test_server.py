"""``iterflow ui`` as a real server process, and the wheel that ships the dashboard."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from iterflow.cli.main import cli
from iterflow.cli.ui import is_loopback

ROOT = Path(__file__).resolve().parents[2]
ASSETS = ("/static/style.css", "/static/favicon.svg", "/static/vendor/htmx.min.js",
          "/static/vendor/htmx-ext-sse.min.js")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def serve(argv: list[str], env: dict[str, str], port: int) -> tuple[subprocess.Popen, str]:
    """Start ``iterflow ui`` and return it with the first lines it printed."""
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    banner = process.stdout.readline() + process.stdout.readline()
    deadline = time.time() + 30
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return process, banner
        if process.poll() is not None:
            break
        time.sleep(0.1)
    process.kill()
    raise AssertionError(f"iterflow ui did not start: {banner}{process.stdout.read()}")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


def test_is_loopback():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert is_loopback("127.1.2.3") and is_loopback("[::1]")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    assert not is_loopback("example.com")


def test_help_names_every_option():
    text = CliRunner().invoke(cli, ["ui", "--help"]).output
    for option in ("--host", "--port", "--token", "--open", "--read-only"):
        assert option in text
    assert "127.0.0.1" in text and "4200" in text


def test_a_non_loopback_host_gets_a_generated_token(tmp_path):
    port = free_port()
    env = {**os.environ, "ITERFLOW_HOME": str(tmp_path), "PYTHONPATH": str(ROOT / "src")}
    env.pop("ITERFLOW_UI_TOKEN", None)
    env.pop("ITERFLOW_STORE_URL", None)
    process, banner = serve([sys.executable, "-m", "iterflow", "ui", "--host", "0.0.0.0",
                             "--port", str(port)], env, port)
    try:
        token = re.search(r"\?token=(\S+)", banner).group(1)
        assert "generated token" in process.stdout.readline()
        base = f"http://127.0.0.1:{port}"
        for path in ("/", *ASSETS, "/events"):
            assert get(base + path)[0] == 401, path
        status, body = get(f"{base}/", {"Authorization": f"Bearer {token}"})
        assert status == 200 and b"<h1>Runs</h1>" in body
        assert get(f"{base}/?token={token}")[0] == 200
    finally:
        stop(process)


def test_the_token_from_the_environment_and_loopback_without_one(tmp_path):
    env = {**os.environ, "ITERFLOW_HOME": str(tmp_path), "PYTHONPATH": str(ROOT / "src"),
           "ITERFLOW_UI_TOKEN": "from-env"}
    env.pop("ITERFLOW_STORE_URL", None)
    port = free_port()
    process, banner = serve([sys.executable, "-m", "iterflow", "ui", "--port", str(port)],
                            env, port)
    try:
        assert "?token=from-env" in banner
        assert get(f"http://127.0.0.1:{port}/")[0] == 401
        assert get(f"http://127.0.0.1:{port}/?token=from-env")[0] == 200
    finally:
        stop(process)
    env.pop("ITERFLOW_UI_TOKEN")
    port = free_port()
    process, banner = serve([sys.executable, "-m", "iterflow", "ui", "--port", str(port)],
                            env, port)
    try:
        assert "?token=" not in banner
        assert get(f"http://127.0.0.1:{port}/")[0] == 200
        assert get(f"http://127.0.0.1:{port}/", {"Host": f"localhost:{port}"})[0] == 200
        # A name pointed at 127.0.0.1 by someone else (DNS rebinding) is refused.
        assert get(f"http://127.0.0.1:{port}/", {"Host": f"evil.example:{port}"})[0] == 421
        assert get(f"http://127.0.0.1:{port}/static/style.css",
                   {"Host": "evil.example"})[0] == 421
    finally:
        stop(process)


@pytest.mark.slow
def test_the_wheel_ships_every_asset(tmp_path):
    """Build the wheel, install it with the ui extra in a fresh venv, fetch every asset."""
    # Build from a copy, so the checkout gets no build/ or egg-info.
    tree = tmp_path / "tree"
    shutil.copytree(ROOT / "src", tree / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, tree / name)
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(dist),
                    str(tree)], check=True, capture_output=True)
    wheel = next(dist.glob("iterflow-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "--quiet", f"{wheel}[ui]"],
                             capture_output=True, text=True)
    if install.returncode != 0:
        pytest.skip(f"cannot install the ui extra here: {install.stderr[-300:]}")
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(ITERFLOW_HOME=str(tmp_path / "home"))
    env.pop("ITERFLOW_STORE_URL", None)
    port = free_port()
    process, _banner = serve([str(venv / "bin" / "iterflow"), "ui", "--port", str(port)],
                             env, port)
    try:
        base = f"http://127.0.0.1:{port}"
        status, page = get(base + "/")
        assert status == 200
        linked = set(re.findall(rb'(?:src|href)="(/static/[^"]+)"', page))
        assert {a.encode() for a in ASSETS} <= linked | {a.encode() for a in ASSETS}
        for path in sorted({*ASSETS, *(p.decode() for p in linked)}):
            status, body = get(base + path)
            assert status == 200 and body, path
    finally:
        stop(process)
