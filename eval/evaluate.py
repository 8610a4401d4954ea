"""`python eval/evaluate.py --model M --data DIR ...`: the same as `expclip evaluate` (the code is `expclip.eval`)."""

import sys

from expclip.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
