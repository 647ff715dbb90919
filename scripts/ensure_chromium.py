"""Makes sure Debian's chromium is installed for the browser tests
(tests/test_console.py drives it with Playwright, which is never let download
a browser of its own): installs the package when it is missing and we are
root. Elsewhere it only says what to do: outside CI the browser tests then
skip, naming why; in CI they fail."""
import os
import shutil
import sys

from scripts.local_server import install

CHROMIUM = "/usr/bin/chromium"


def main():
    if os.path.exists(CHROMIUM):
        return
    if os.geteuid() != 0 and not os.environ.get("CI"):
        print(f"{CHROMIUM} is missing and we are not root: the browser tests will be skipped "
              "(apt-get install chromium to run them)", file=sys.stderr)
        return
    install("chromium", "chromium")
    if not shutil.which("chromium"):
        sys.exit("chromium was installed but is not on PATH")


if __name__ == "__main__":
    main()
