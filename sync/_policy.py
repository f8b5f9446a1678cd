"""Link policy: which keys flow over a link, in which direction.

Each link has a push filter (what this replica sends) and a pull filter (what it
accepts), as lists of path prefixes; the empty prefix admits everything. Keys
under ``local/`` never leave their node, whatever a policy says: that is where
raw readings and features live.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

LOCAL_PREFIX: Final = "local/"
_LOCAL_ROOT: Final = "local"


def is_local(path: str) -> bool:
    # Final constants (compiled: no module lookup) and the cheap test first: a hub
    # checks every key it receives against its link's pull policy.
    return path.startswith(_LOCAL_ROOT) and (path == _LOCAL_ROOT or path.startswith(LOCAL_PREFIX))


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
