"""Save a screenshot of each console page to docs/console/<page>.png.

Runs the browser tests that visit the pages (a 200-member demo served on a free port, headless
Chromium at /usr/bin/chromium) with MEMBERWISE_CONSOLE_SCREENSHOTS=1. Chinese labels need a CJK
system font for the pictures (e.g. ``apt-get install fonts-wqy-microhei``); the console itself
loads no font.

    python benchmarks/console_screenshots.py
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = "overview or sign_in or member_360 or program_preview"


def main() -> int:
    env = {**os.environ, "MEMBERWISE_CONSOLE_SCREENSHOTS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "tests/console/test_browser.py", "-k", PAGES],
        cwd=ROOT,
        env=env,
        check=False,
    )
    for png in sorted((ROOT / "docs" / "console").glob("*.png")):
        print(f"{png.relative_to(ROOT)}  {png.stat().st_size / 1024:,.0f} KiB")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
