"""The `khmer-ocr` command line: each subcommand is a thin call into the library."""

from __future__ import annotations

import argparse
import sys

from khmer_ocr.version import __version__

DESCRIPTION = """\
khmer-ocr: synthetic Khmer text-line data, recognizer training, evaluation and prediction.

Typical use:
  khmer-ocr generate --profile demo --out data/demo        render a small dataset and validate it
  khmer-ocr validate data/demo                             check a dataset with Great Expectations
  khmer-ocr fonts                                          list Khmer fonts and their roles
  khmer-ocr train phase3_1/baseline_optimized --data data/demo --out runs/b --profile demo
  khmer-ocr tune --data data/demo --out runs/p31           phase 3.1: seven configurations, best picked
  khmer-ocr evaluate --model runs/b/model --data data/demo test splits against the milestone gates
  khmer-ocr predict line.png                               read images with the reference model
  khmer-ocr lm --model runs/b/model                        a character LM it then decodes with (beam search)
  khmer-ocr export --out model.pt                          TorchScript, checked against eager PyTorch
  khmer-ocr bundle --out b --python-version 3.12           offline training folder: bash b/run.sh --minutes M
  khmer-ocr register --run RUN_ID --data data/demo         model version; alias candidate if gates pass
  khmer-ocr approve 3 --by alice && khmer-ocr promote 3 --by alice   alias champion (previous kept)
  khmer-ocr rollback --by alice                            champion back to the previous version
  khmer-ocr models                                         versions, aliases, approvals, accuracy
  khmer-ocr serve                                          TorchServe REST on 127.0.0.1:8080 (Ctrl-C stops)
  khmer-ocr deploy --model models:/khmer-ocr@champion      new version on a running TorchServe, smoke-tested
  khmer-ocr demo                                           data + validation + the reference model reading
  khmer-ocr platform run                                   what `make run` does: MLflow, TorchServe, Airflow
                                                           and the end-to-end DAG (platform down: make stop)
"""


class HelpWithDefaults(argparse.HelpFormatter):
    """Each option's help ends with its default, unless the help already says it (--help hides nothing)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            default in (None, False, [], argparse.SUPPRESS)
            or "default" in text.lower()
            or not (action.option_strings or action.nargs in ("?", "*"))
        ):
            return text
        shown = " ".join(map(str, default)) if isinstance(default, list | tuple) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    from khmer_ocr.cli import bundle, data, model, platform, registry, serving

    parser = argparse.ArgumentParser(
        prog="khmer-ocr", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"khmer-ocr {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    handlers = {}
    for group in (data, model, bundle, registry, serving, platform):
        handlers.update(group.add_commands(sub))
    for command in sub.choices.values():
        command.formatter_class = HelpWithDefaults
    return parser, handlers


def main(argv: list[str] | None = None) -> int:
    """Run one command; a library error (khmer_ocr.errors.KhmerOcrError) is one line on stderr and exit
    status 2 (a refused promotion: 1)."""
    from khmer_ocr.errors import KhmerOcrError, PromotionRefused

    parser, handlers = build_parser()
    args = parser.parse_args(argv)
    try:
        return handlers[args.command](args)
    except PromotionRefused as exc:
        print(f"khmer-ocr: refused: {exc}", file=sys.stderr)
        return 1
    except KhmerOcrError as exc:
        print(f"khmer-ocr: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("khmer-ocr: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
