"""`python eval/prepare.py BENCHMARK SOURCE --output DIR`: the same as `expclip prepare` (the code is `expclip.eval`)."""

import sys

from expclip.cli import main

if __name__ == "__main__":
    sys.exit(main(["prepare", *sys.argv[1:]]))
