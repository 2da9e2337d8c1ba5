"""Stands in for pip's get-pip.py when ansible-test bootstraps its sanity venvs.

ansible-test --venv makes each test's virtual environment without pip and downloads pip's bootstrap
script from ci-files.testing.ansible.com, a host these machines cannot reach (only the package index
answers). This does what that script does with what is at hand: ensurepip (Python's own bundled pip),
then `pip install` of the arguments ansible-test passes (its pinned pip version). scripts/sanity.sh
puts it where ansible-test looks for a cached copy; a real cached copy is never replaced.
"""

from __future__ import annotations

import subprocess
import sys

# get-pip.py's own switches; pip install does not know them.
GET_PIP_ONLY = {"--no-setuptools", "--no-wheel"}


def main() -> None:
    subprocess.run([sys.executable, "-m", "ensurepip", "--default-pip"], check=True, stdout=subprocess.DEVNULL)
    args = [arg for arg in sys.argv[1:] if arg not in GET_PIP_ONLY]
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", *args], check=True)


if __name__ == "__main__":
    main()
