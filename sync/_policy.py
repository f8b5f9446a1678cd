"""Link policy: which keys flow over a link, in which direction.

Each link has a push filter (what this replica sends) and a pull filter (what it
accepts), as lists of path prefixes; the empty prefix admits everything. Keys
under ``local/`` never leave their node, whatever a policy says: that is where
raw readings and features live.
"""

from __future__ import annotations

from dataclasses import dataclass

LOCAL_PREFIX = "local/"


def is_local(path: str) -> bool:
    return path.startswith(LOCAL_PREFIX) or path == LOCAL_PREFIX.rstrip("/")


@dataclass(frozen=True)
class LinkPolicy:
    push: tuple[str, ...] = ("",)
    pull: tuple[str, ...] = ("",)

    def may_push(self, path: str) -> bool:
        return not is_local(path) and path.startswith(self.push)

    def may_pull(self, path: str) -> bool:
        return not is_local(path) and path.startswith(self.pull)

    def __repr__(self) -> str:
        return f"LinkPolicy(push={list(self.push)}, pull={list(self.pull)})"


EVERYTHING = LinkPolicy()
