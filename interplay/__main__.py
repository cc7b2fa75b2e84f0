"""`python -m interplay`: same as the `interplay` command."""

import sys

from interplay.cli import main

# vLLM starts its engine core with the spawn method, which re-imports __main__: keep this guard.
if __name__ == "__main__":
    sys.exit(main())
