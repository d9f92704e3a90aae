"""How long each chapter took to execute in the last `make book`s (from jupyter-book's execution cache).

    python tools/book_times.py [_build/.jupyter_cache]

Prints one line per notebook (its newest cached execution) and the total, and writes
them to ``_build/book_times.json``. `make book` calls it after every build.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def chapter_times(cache_dir: Path) -> dict[str, float]:
    """{notebook path relative to the repository: seconds of its newest cached execution}."""
    from jupyter_cache import get_cache

    times: dict[str, tuple] = {}
    for record in get_cache(str(cache_dir)).list_cache_records():
        seconds = (record.data or {}).get("execution_seconds")
        if seconds is None:
            continue
        try:
            name = str(Path(record.uri).resolve().relative_to(ROOT))
        except ValueError:
            name = record.uri
        if name not in times or record.created > times[name][0]:
            times[name] = (record.created, float(seconds))
    return {name: seconds for name, (_, seconds) in sorted(times.items())}


def main(argv: list[str]) -> int:
    cache_dir = Path(argv[1]) if len(argv) > 1 else ROOT / "_build" / ".jupyter_cache"
    if not cache_dir.is_dir():
        print(f"no execution cache at {cache_dir}: run `make book` first")
        return 1
    times = chapter_times(cache_dir)
    for name, seconds in times.items():
        print(f"  {seconds:6.1f} s  {name}")
    total = sum(times.values())
    print(f"  {total:6.1f} s  in all ({len(times)} notebooks; each as last executed, cached ones included)")
    (cache_dir.parent / "book_times.json").write_text(
        json.dumps({"seconds": times, "total": total}, indent=2)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
