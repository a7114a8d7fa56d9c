"""What every benchmark script shares: a description of the machine and the row appended to docs/benchmarks.md."""
import datetime
import os
import platform
from typing import Sequence


def machine() -> str:
    """CPU model, core count and Python version."""
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return "%s, %d cores, Python %s" % (cpu, os.cpu_count() or 0, platform.python_version())


def append_row(path: str, section: str, columns: Sequence[str], command: str, values: Sequence[str]) -> None:
    """Append ``| date | command | machine | values... |`` to the table of ``section`` in ``path`` (created with
    its header the first time)."""
    marker = "<!-- %s -->\n" % section
    header = "| date | command | machine | %s |\n|%s\n" % (" | ".join(columns), "---|" * (len(columns) + 3))
    row = "| %s | `%s` | %s | %s |\n" % (datetime.date.today().isoformat(), command, machine(), " | ".join(values))
    text = open(path, encoding="utf-8").read() if os.path.isfile(path) else "# Benchmarks\n"
    if marker not in text:
        text = text.rstrip("\n") + "\n\n## %s\n\n%s%s" % (section, marker, header)
    start = text.index(marker) + len(marker) + len(header)
    end = text.find("\n\n", start)
    end = len(text) if end < 0 else end + 1
    text = text[:end] + row + text[end:]
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
