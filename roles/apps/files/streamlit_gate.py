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
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a Streamlit script once; report any exception.")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("script")
    args = parser.parse_args(argv)
    started = time.monotonic()
    verdict: dict[str, object] = {"gate": 1, "ok": False, "exceptions": []}
    code = 2
    try:
        from streamlit.testing.v1 import AppTest

        app = AppTest.from_file(args.script, default_timeout=args.timeout)
        app.run()
        exceptions = [
            {"type": element.proto.type or "Exception", "message": str(element.message)[:500]}
            for element in app.exception
        ]
        verdict.update(ok=not exceptions, exceptions=exceptions[:5])
        code = 0 if not exceptions else 1
    except RuntimeError as exc:  # AppTest's timeout
        verdict["error"] = (
            f"the script did not finish within {args.timeout:g} s"
            if "timed out" in str(exc)
            else (f"{type(exc).__name__}: {str(exc)[:300]}")
        )
    except Exception as exc:
        verdict["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
    verdict["seconds"] = round(time.monotonic() - started, 2)
    print(json.dumps(verdict, sort_keys=True), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
