"""The `expclip` command: `expclip COMMAND [options]`.

Each command lives in its own module, which provides `add_arguments(parser)` and `run(args) -> int`; it is only
imported when used, so `expclip --help` stays fast.
"""

import argparse
import importlib
import pickle
import sys

COMMANDS = {
    "predict": ("expclip.predict", "classify the facial expression in images, folders, faces and videos"),
    "convert": ("expclip.convert", "turn the authors' released .pth head into a Hub model folder"),
    "prepare": ("expclip.eval.prepare", "turn an official benchmark release into the uniform evaluation format"),
    "evaluate": ("expclip.eval.evaluate", "run the paper's zero-shot benchmark protocol (UAR/WAR)"),
    "app": ("expclip.app", "serve the web app (Gradio): photos, webcam, videos; API /predict_image, /predict_video"),
    "export": ("expclip.export", "an Exp-CLIP model as a stock CLIP folder (no custom code) or ONNX (transformers.js)"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    usage = "expclip {" + ",".join(COMMANDS) + "} [options]   (expclip COMMAND --help for a command's options)"
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        lines = [f"usage: {usage}", "", "commands:"] + [f"  {n:<10}{h}" for n, (_, h) in COMMANDS.items()]
        if argv and argv[0] not in ("-h", "--help"):
            print(f"expclip: unknown command {argv[0]!r}", file=sys.stderr)
            print("\n".join(lines), file=sys.stderr)
            return 2
        print("\n".join(lines))
        return 0
    name = argv[0]
    module_name, help_text = COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
        parser = argparse.ArgumentParser(prog=f"expclip {name}", description=help_text)
        module.add_arguments(parser)
        return int(module.run(parser.parse_args(argv[1:])) or 0)
    except KeyboardInterrupt:  # Ctrl-C: one line, the shell's status for SIGINT
        print(f"\nexpclip {name}: interrupted", file=sys.stderr)
        return 130
    except pickle.PicklingError as error:  # `datasets` fingerprints objects by pickling them with dill; it can fail
        from .inputs import one_line

        print(f"expclip {name}: error: datasets could not hash an object to fingerprint it ({one_line(error)})",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
