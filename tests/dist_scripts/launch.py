"""Starts a script as N real processes on this machine, the way torchrun does (the RANK,
WORLD_SIZE, MASTER_ADDR/PORT variables, a free loopback port), and collects what each printed."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


@dataclass
class Rank:
    rank: int
    code: int | None  # None: killed after the time limit
    out: str
    err: str
    seconds: float


_given: set[int] = set()
_lock = threading.Lock()


def free_port() -> int:
    """Returns a free loopback port below Linux's ephemeral range (32768-60999), never the same
    one twice in this process. A port the OS hands out for bind(0) is ephemeral: any of the many
    connections gloo opens (the scenarios run side by side) could take it before the rank told
    to listen there binds it (EADDRINUSE)."""
    with _lock:
        while True:
            port = random.randrange(20000, 32000)
            if port in _given:
                continue
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _given.add(port)
            return port


def base_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("GRADLENS_ALL_RANKS", None)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update({"OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "COLUMNS": "120"})
    env.update(extra or {})
    return env


def run_ranks(
    args: list[str], world: int = 2, env: dict[str, str] | None = None, limit: float = 120.0
) -> list[Rank]:
    """Runs ``python *args`` as ranks 0..world-1 and returns each one's exit code and output."""
    port = str(free_port())
    procs = []
    start = time.monotonic()
    for rank in range(world):
        e = base_env(env)
        e.update(
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE=str(world),
            LOCAL_WORLD_SIZE=str(world),
            MASTER_PORT=port,
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, *args],
                env=e,
                cwd=str(ROOT),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    out = []
    for rank, p in enumerate(procs):
        left = max(1.0, limit - (time.monotonic() - start))
        try:
            o, err = p.communicate(timeout=left)
            code: int | None = p.returncode
        except subprocess.TimeoutExpired:
            p.kill()
            o, err = p.communicate()
            code = None
        out.append(Rank(rank, code, o, err, time.monotonic() - start))
    return out
