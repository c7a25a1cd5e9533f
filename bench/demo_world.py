"""How fast the demo world is generated, and how much memory it needs (no database: pure generation).

    .venv/bin/python bench/demo_world.py [--size small|medium|large] [--granularity day|month] [--seed 1]
                                         [--dataset DIR]

For every FinOps (source, kind) it streams the payloads, encodes each one as JSON (as landing would) and
prints documents, seconds and documents per second; with ``--dataset`` it also writes the simulator
dataset there and prints its files, records and seconds. Peak memory (max RSS) is printed at the end:
it stays flat with the size because every stream is a generator (landing speed is the raw store's and is
measured by bench/raw_landing.py).
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import msgspec

from rosetta.demo.landing import FINOPS_DOCUMENTS, write_simulator_dataset
from rosetta.demo.world import Granularity, WorldSize, build_world


def main() -> None:
    """Parse arguments, generate, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=[size.value for size in WorldSize], default="small")
    parser.add_argument("--granularity", choices=[g.value for g in Granularity], default="day")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dataset", type=Path, default=None, help="Also write the simulator dataset here.")
    arguments = parser.parse_args()

    started = time.perf_counter()
    world = build_world(WorldSize(arguments.size), arguments.seed)
    print(f"{world.origin}: {len(world.applications)} applications, built in {time.perf_counter() - started:.1f}s")
    encoder = msgspec.json.Encoder()
    total = 0
    for source, kind, documents in FINOPS_DOCUMENTS:
        begin = time.perf_counter()
        count = size = 0
        for payload in documents(world, Granularity(arguments.granularity)):
            size += len(encoder.encode(payload))
            count += 1
        seconds = time.perf_counter() - begin
        total += count
        print(
            f"{source}/{kind:<13} {count:>10,} documents {size / 1e6:>9.1f} MB {seconds:>7.1f}s "
            f"{count / seconds if seconds else 0:>10,.0f} documents/s"
        )
    print(f"FinOps documents: {total:,} in {time.perf_counter() - started:.1f}s")
    if arguments.dataset is not None:
        result = write_simulator_dataset(world, arguments.dataset)
        records = sum(entry["records"] for entry in result.files.values())
        print(f"simulator dataset: {len(result.files)} files, {records:,} records in {result.seconds:.1f}s")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory (max RSS): {peak_mb:.0f} MB; total {time.perf_counter() - started:.1f}s")


if __name__ == "__main__":
    main()
