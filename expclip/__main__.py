"""`python -m expclip COMMAND ...` (and `accelerate launch -m expclip ...`): the same as the `expclip` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
