"""Lexical constraints as captioner input: ``python -m imcap.lexical_constraints [--avoid] < tsv > json``.

Turns lines of ``PATH<TAB>phrase<TAB>phrase ...`` into the JSON lines that ``imcap.captioner --json-input`` reads,
``{"image": PATH, "constraints": ["phrase", "phrase", ...]}``, or with ``--avoid``
``{"image": PATH, "avoid": [...]}``, as Sockeye's ``sockeye.lexical_constraints`` helper turned a source sentence and
its constraints into JSON input. One output line per input line: empty fields (a trailing tab) are dropped, a line
without phrases gets an empty list, an empty line (or one that is not UTF-8, with a warning on STDERR) stays empty
(the captioner then warns about it). Phrases are written as given; the captioner tokenizes them as captions are.

    printf 'photos/1.jpg\\ta red car\\tdog\\n' | python -m imcap.lexical_constraints
    {"image": "photos/1.jpg", "constraints": ["a red car", "dog"]}
"""
import argparse
import json
import sys
from typing import IO, List, Optional

from . import arguments


def add_lexical_constraints_args(parser: argparse.ArgumentParser) -> None:
    """Options of the helper."""
    parser.add_argument("--avoid", action="store_true",
                        help='Put the phrases under "avoid" (the caption must not contain them) instead of '
                             '"constraints" (it must contain each).')
    parser.add_argument("--input", "-i", default=None, help="Tab-separated input file. Default: STDIN.")
    parser.add_argument("--output", "-o", default=None, help="JSON lines output file. Default: STDOUT.")


def json_line(text: str, avoid: bool = False) -> str:
    """The JSON input line of one ``PATH<TAB>phrase<TAB>...`` line (without its line end); ``""`` for a line with
    no path."""
    fields = text.split("\t")
    path = fields[0].strip()
    if not path:
        return ""
    phrases = [field.strip() for field in fields[1:] if field.strip()]
    return json.dumps({"image": path, "avoid" if avoid else "constraints": phrases}, ensure_ascii=False)


def convert(source: IO[bytes], sink: IO[str], avoid: bool = False, errors: IO[str] = sys.stderr) -> int:
    """Write :func:`json_line` of every line of ``source`` to ``sink``; return the number of lines."""
    count = 0
    for count, raw in enumerate(source, 1):
        raw = raw.rstrip(b"\n").rstrip(b"\r")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            errors.write("Warning: line %d: not valid UTF-8 (%s): written empty\n" % (count, e.reason))
            text = ""
        sink.write(json_line(text, avoid) + "\n")
    return count


def run_lexical_constraints(args: argparse.Namespace) -> int:
    """Convert ``--input`` (or STDIN) to ``--output`` (or STDOUT); return the number of lines."""
    source = open(args.input, "rb") if args.input else sys.stdin.buffer
    sink = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    try:
        return convert(source, sink, args.avoid)
    finally:
        if args.input:
            source.close()
        if args.output:
            sink.close()


def main(argv: Optional[List[str]] = None) -> None:
    """Parse the command line and convert."""
    parser = arguments.new_parser(__doc__.splitlines()[0])
    add_lexical_constraints_args(parser)
    arguments.cli_main(parser, run_lexical_constraints, argv)


if __name__ == "__main__":
    main()
