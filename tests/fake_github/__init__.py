"""A local fake of the GitHub API (see server.py)."""

from tests.fake_github.server import FakeGitHub, new_sha

__all__ = ["FakeGitHub", "new_sha"]
