"""Screenshots of TensorBoard's pages for a log directory, from headless Chromium: what a reader
of the README sees when they open TensorBoard on a sweep.

    python scripts/tensorboard_screenshots.py multirun/study --out docs/tensorboard

Starts `tensorboard --logdir <dir>` on a free port of 127.0.0.1, waits until it has loaded every
run's scalars, and saves `scalars.png`, `custom_scalars.png` and `hparams.png` (one PNG per
page, `--pages` to choose). Needs the `tensorboard` extra and a Chromium (`apt install
chromium`; `--browser` names another binary). Chromium runs with no network access beyond the
local server, no GPU and a throw-away profile.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

PAGES = ("scalars", "custom_scalars", "hparams")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_scalars(base: str, timeout_s: float) -> dict[str, list[str]]:
    """`{run: [tags]}` once TensorBoard answers with the same non-empty scalar tags twice."""
    deadline, last = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/data/plugin/scalars/tags", timeout=5) as reply:
                tags = {run: sorted(t) for run, t in json.load(reply).items()}
        except OSError:
            tags = None
        if tags and tags == last:
            return tags
        last = tags
        time.sleep(2)
    raise TimeoutError(f"TensorBoard at {base} loaded no scalars within {timeout_s:.0f} s")


def screenshot(browser: str, url: str, path: Path, size: str, budget_ms: int) -> None:
    """One page, rendered for `budget_ms` of virtual time (charts load asynchronously)."""
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                browser,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                f"--window-size={size}",
                f"--virtual-time-budget={budget_ms}",
                f"--screenshot={path}",
                url,
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("logdir", type=Path, help="a run or sweep directory")
    parser.add_argument("--out", type=Path, default=Path("docs/tensorboard"))
    parser.add_argument("--pages", default=",".join(PAGES), help=f"of {','.join(PAGES)}")
    parser.add_argument("--browser", default="chromium")
    parser.add_argument("--size", default="1400,1000", help="window width,height in pixels")
    args = parser.parse_args(argv)
    browser = shutil.which(args.browser)
    tensorboard = shutil.which("tensorboard") or str(Path(sys.executable).with_name("tensorboard"))
    if browser is None:
        parser.error(
            f"--browser {args.browser}: not found; install Chromium (apt install chromium)"
        )
    if not args.logdir.is_dir():
        parser.error(f"logdir {args.logdir}: not a directory")
    pages = [p for p in args.pages.split(",") if p]
    if unknown := set(pages) - set(PAGES):
        parser.error(f"--pages: unknown {sorted(unknown)}; choose from {','.join(PAGES)}")
    port = free_port()
    server = subprocess.Popen(
        [tensorboard, "--logdir", str(args.logdir), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        runs = wait_for_scalars(base, timeout_s=120)
        args.out.mkdir(parents=True, exist_ok=True)
        for page in pages:
            path = args.out / f"{page}.png"
            screenshot(browser, f"{base}/?darkMode=false#{page}", path, args.size, 20000)
            print(f"{path} ({len(runs)} runs)")
    finally:
        server.terminate()
        server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
