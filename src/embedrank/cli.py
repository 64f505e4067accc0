"""The `embedrank` command line.

A user error prints one line on stderr and exits with status 2 (no traceback).
"""

from __future__ import annotations

import argparse
import sys


def _export(args: argparse.Namespace) -> int:
    from embedrank.export import export_model

    path = export_model(args.model_dir, args.out_dir, kind=args.kind, optimize=not args.no_optimize,
                        quantize=not args.no_quantize, pooled=args.pooled, overwrite=args.overwrite)
    print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="embedrank", description="Fast, correct embedding retrieval.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    export = commands.add_parser("export", help="export a local Hugging Face model folder to an embedrank model folder",
                                 description="Export a local Hugging Face model folder to ONNX (fp32, ORT-optimized "
                                             "and int8 variants), verified against the torch model. Fully offline.")
    export.add_argument("model_dir", help="local Hugging Face model folder")
    export.add_argument("out_dir", help="the embedrank model folder to write")
    export.add_argument("--kind", choices=("bi-encoder", "cross-encoder"), default="bi-encoder")
    export.add_argument("--no-optimize", action="store_true", help="skip the ORT-optimized variant")
    export.add_argument("--no-quantize", action="store_true", help="skip the int8 variant")
    export.add_argument("--pooled", action="store_true", help="also write a variant with pooling inside the graph")
    export.add_argument("--overwrite", action="store_true", help="replace a non-empty out_dir")
    export.set_defaults(run=_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("embedrank: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError, ImportError, RuntimeError) as error:
        print(f"embedrank {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
