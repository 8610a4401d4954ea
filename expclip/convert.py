"""`expclip convert`: the authors' released head as a complete Hugging Face model folder (the work is in
`expclip.models`, which the other commands use for the default model).

    expclip convert ExpCLIP_L14_model.pth --clip openai/clip-vit-large-patch14 --output expclip-l14
"""

import argparse
import sys
from pathlib import Path

from .models import ConversionError, convert_original_head




def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("original", metavar="ORIGINAL.pth", help="the authors' released head (state dict with mlp.weight)")
    parser.add_argument(
        "--clip", required=True, help="the CLIP the head was trained on: Hub id or local folder "
        "(openai/clip-vit-large-patch14 for the L/14 head, ...-base-patch16, ...-base-patch32)"
    )
    parser.add_argument("--output", required=True, type=Path, help="folder to write (new, or empty)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier output of expclip convert (never a folder holding anything else)")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")


def run(args: argparse.Namespace) -> int:
    try:
        folder = convert_original_head(args.original, args.clip, args.output, overwrite=args.overwrite)
    except ConversionError as error:
        if args.debug:
            raise
        print(f"expclip convert: {error}", file=sys.stderr)
        return 1
    print(f"wrote {folder}")
    return 0
