"""A screenshot of optuna-dashboard on a search's study, taken with a headless Chromium:

    python scripts/dashboard_shot.py --results results/<name> --out docs/dashboard.png

It serves `results/<name>/optuna.journal` on 127.0.0.1 (optuna-dashboard, the `[dashboard]`
extra), waits until the study answers on the dashboard's API, and has Chromium (or Chrome)
draw the study's page. `--smoke`: the server and the API only, no browser, nothing written.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from tune_mnist.parser import Parser

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")
WAIT_S = 60  # the dashboard's start-up and the browser's draw, each at most this


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_studies(url: str, server: subprocess.Popen) -> list[dict]:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline and server.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/api/studies", timeout=5) as answer:
                return json.load(answer)["study_summaries"]
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"optuna-dashboard did not answer at {url} within {WAIT_S} s")


def shoot(browser: str, url: str, out: Path, size: str) -> None:
    with tempfile.TemporaryDirectory() as profile:  # no user profile is read or written
        command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
        command += [f"--user-data-dir={profile}", f"--window-size={size}"]
        command += ["--virtual-time-budget=15000", f"--screenshot={out.resolve()}", url]
        subprocess.run(command, capture_output=True, timeout=WAIT_S, check=True)


def main(argv: list[str] | None = None) -> int:
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", required=True, help="the search's folder, results/<name>")
    parser.add_argument("--out", default="docs/dashboard.png", help="the PNG to write")
    parser.add_argument("--size", default="1500,1000", help="the window, pixels: width,height")
    parser.add_argument("--smoke", action="store_true", help="serve and read the study only")
    args = parser.parse_args(argv)
    journal = Path(args.results) / "optuna.journal"
    dashboard = shutil.which("optuna-dashboard")
    browser = next((b for b in map(shutil.which, BROWSERS) if b), None)
    if not journal.is_file():
        print(f"error: no study at {journal}: run `tune-mnist report` on it", file=sys.stderr)
        return 2
    if dashboard is None or (browser is None and not args.smoke):
        print(
            'error: needs optuna-dashboard (pip install -e ".[dashboard]") and Chromium',
            file=sys.stderr,
        )
        return 2
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    serve = [dashboard, "--host", "127.0.0.1", "--port", str(port), str(journal)]
    server = subprocess.Popen(serve, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        studies = wait_for_studies(url, server)
        print(f"study {studies[0]['study_name']!r} served at {url}")
        if args.smoke:
            return 0
        shoot(
            browser, f"{url}/dashboard/studies/{studies[0]['study_id']}", Path(args.out), args.size
        )
    except (RuntimeError, subprocess.SubprocessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        server.terminate()
        server.wait(timeout=WAIT_S)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
