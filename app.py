"""The Hugging Face Space entry point: `python app.py [--model M] [--port P]` serves the Exp-CLIP web app.

Everything lives in `expclip/app.py` (installed with the package, also behind `expclip app`); a Space runs this
file beside a copy of the `expclip` package and the model code (README, "The web app").
"""

import argparse
import sys

from expclip.app import add_arguments, run

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="app.py", description=__doc__.splitlines()[0])
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
