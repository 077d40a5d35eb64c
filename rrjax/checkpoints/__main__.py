"""``python -m rrjax.checkpoints upgrade PATH [PATH ...]``: converts format-version-1 checkpoints
in place (:func:`rrjax.checkpoints.upgrade`), printing each one's unchanged content hash."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from rrjax.checkpoints import FORMAT_VERSION, upgrade, verify
from rrjax.cli import fail


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m rrjax.checkpoints upgrade PATH [PATH ...]``: :func:`upgrade` each checkpoint."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2 or args[0] != "upgrade":
        fail("expected: python -m rrjax.checkpoints upgrade PATH [PATH ...]")
    for p in args[1:]:
        try:
            upgrade(p)
            sha = verify(p)["content_sha256"]
        except ValueError as e:
            fail(str(e))
        print(f"{p}: upgraded to format version {FORMAT_VERSION}, content_sha256 {sha}")


if __name__ == "__main__":
    main()
