"""streamlit-gate: the deploy's readiness gate. Runs an app's script once with Streamlit's AppTest.

The deploy engine runs it inside the new container before the edge switches to it:

    python /opt/streamlit_gate.py --timeout 120 /app/streamlit_app.py

The last line of its output is one JSON object: {"gate": 1, "ok": true|false, "exceptions": [{"type",
"message"}], "error": ..., "seconds": ...}. Exit 0 when the script ran to its end without an exception.
Only each exception's type and message are reported (never its local variables); the full traceback goes to
stderr, which the container's log keeps.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time


def run_once(script: str, timeout: float, verdict: dict[str, object]) -> None:
    """AppTest runs the script in a thread of its own; its timeout applies only where the script yields."""
    try:
        from streamlit.testing.v1 import AppTest

        app = AppTest.from_file(script, default_timeout=timeout)
        app.run()
        exceptions = [
            {"type": element.proto.type or "Exception", "message": str(element.message)[:500]}
            for element in app.exception
        ]
        verdict.update(ok=not exceptions, exceptions=exceptions[:5], done=True)
    except RuntimeError as exc:  # AppTest's own timeout
        timed_out = "timed out" in str(exc) or "timeout" in str(exc).lower()
        verdict["error"] = (
            f"the script did not finish within {timeout:g} s"
            if timed_out
            else f"{type(exc).__name__}: {str(exc)[:300]}"
        )
    except Exception as exc:  # anything the gate itself hits is a failed gate
        verdict["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a Streamlit script once; report any exception.")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("script")
    args = parser.parse_args(argv)
    started = time.monotonic()
    verdict: dict[str, object] = {"gate": 1, "ok": False, "exceptions": []}
    worker = threading.Thread(target=run_once, args=(args.script, args.timeout, verdict), daemon=True)
    worker.start()
    # A hard deadline: a script blocked in a call that never yields (a sleep, a socket) does not hold the gate.
    worker.join(args.timeout + 2)
    if worker.is_alive():
        verdict["error"] = f"the script did not finish within {args.timeout:g} s"
    done = verdict.pop("done", False)
    verdict["seconds"] = round(time.monotonic() - started, 2)
    print(json.dumps(verdict, sort_keys=True), flush=True)
    if done and verdict["ok"]:
        return 0
    return 1 if verdict["exceptions"] else 2


if __name__ == "__main__":
    # Out at once: a script that did not finish still runs in AppTest's thread, which would hold the exit.
    sys.stderr.flush()
    os._exit(main())
