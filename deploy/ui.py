"""`make ui`: the Dagster UI (`dagster dev`: webserver and daemon) and the review desk, started and stopped together.

Both print their address at start and see the same settings (the environment, then `.env`). Ctrl-C (or
SIGTERM) stops both; if either stops on its own, the other is stopped too and the exit code is the one that
stopped first.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from prod import read_env_file  # noqa: E402 (the one .env reader, beside this file)


def main() -> int:
    """Start both, wait, stop both."""
    dagster_port = os.environ.get("DAGSTER_PORT", "3000")
    desk_port = os.environ.get("DESK_PORT", "3001")
    # `dagster dev` reads .env itself; the desk gets the same values, so both use the same store.
    env = {**read_env_file(ROOT / ".env"), **os.environ}
    env.setdefault("PIPELINE_DAGSTER_URL", f"http://127.0.0.1:{dagster_port}")
    commands = {
        "dagster": [str(BIN / "dagster"), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", dagster_port],
        "desk": [
            str(BIN / "pipeline"),
            "desk",
            "--host",
            os.environ.get("DESK_HOST", "127.0.0.1"),
            "--port",
            desk_port,
        ],
    }
    print(f"Dagster UI:  http://127.0.0.1:{dagster_port}/\nReview desk: http://127.0.0.1:{desk_port}/", flush=True)
    # Each in its own process group, so stopping one stops everything it started (dagster dev's daemon too).
    children = {
        name: subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True) for name, cmd in commands.items()
    }
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    code = 0
    while not stopping:
        ended = [(name, child.returncode) for name, child in children.items() if child.poll() is not None]
        if ended:
            name, code = ended[0]
            print(f"{name} stopped (exit {code}); stopping the other.", flush=True)
            break
        time.sleep(0.5)
    for child in children.values():
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    for child in children.values():
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    return code


if __name__ == "__main__":
    sys.exit(main())
