"""Registration's GGUF probe: the one-pass header read against gguf's GGUFReader, side by side.

Both read each shipped GGUF file's metadata and tensor table (no tensor data); the script checks that
they agree on the architecture, the tensor count and where the last tensor ends, then prints the time
of each and the ratio. Each reader runs ``--repeats`` times per file, one after the other, and its best time is kept.

    .venv/bin/python bench/gguf_probe.py [--repeats 3] [--models data/test/models]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gguf import GGUFReader  # noqa: E402 - after the path is set

from ensembles.backends.gguf_header import read_header  # noqa: E402


def with_gguf_reader(path: Path) -> tuple[str, int, int]:
    reader = GGUFReader(path)
    arch = str(reader.fields["general.architecture"].contents())
    end = max(int(t.data_offset) + int(t.n_bytes) for t in reader.tensors)
    return arch, len(reader.tensors), end


def with_header_walk(path: Path) -> tuple[str, int, int]:
    header = read_header(path)
    return str(header.fields["general.architecture"]), header.tensor_count, header.tensors_end


def best_of(read, path: Path, repeats: int) -> tuple[float, tuple[str, int, int]]:
    times = []
    for _ in range(max(repeats, 1)):
        started = time.perf_counter()
        result = read(path)
        times.append(time.perf_counter() - started)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", type=Path, default=REPO / "data" / "test" / "models")
    args = parser.parse_args()
    files = sorted(args.models.glob("*.gguf"))
    if not files:
        sys.exit(f"no .gguf files in {args.models}")
    print("| file | size MB | GGUFReader s | header walk s | ratio |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for path in files:
        slow, expected = best_of(with_gguf_reader, path, args.repeats)
        fast, got = best_of(with_header_walk, path, args.repeats)
        if got != expected or got[2] != path.stat().st_size:
            sys.exit(
                f"{path.name}: the readers disagree ({got} against {expected}, the file {path.stat().st_size} bytes)"
            )
        print(f"| {path.name} | {path.stat().st_size / 1e6:.0f} | {slow:.2f} | {fast:.3f} | {slow / fast:.0f}x |")


if __name__ == "__main__":
    main()
