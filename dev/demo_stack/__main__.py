"""``python -m demo_stack`` entry point."""

from __future__ import annotations

from demo_stack.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
