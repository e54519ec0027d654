"""Where our CPU goes: pyinstrument over an in-process batch against vcsim.

Profiles :func:`asyncovf.run_batch` (what ``asyncovf run`` does: open the
source, check the placements, run the pool) importing N small OVAs (the
orchestration path: SOAP serialisation and parsing, the pool, the lease guard)
or one large disk (the upload path), and prints the call tree, hiding library
frames below 2 %.

Run: ``.venv/bin/python -m benchmarks.profile [--count 200] [--concurrency 16]
[--upload-mb 0] [--html out.html]`` (needs ``pip install pyinstrument``).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import anyio

from asyncovf import ConnectionSettings, JobStatus, RunSettings, run_batch
from benchmarks.orchestration import plan_for
from tests.factory import DiskSpec, build_package
from tests.vcsim.harness import running_vcsim


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--upload-mb", type=int, default=0,
                        help="profile uploads of a disk this big instead of tiny OVAs")
    parser.add_argument("--html", type=Path)
    args = parser.parse_args()
    try:
        from pyinstrument import Profiler
    except ImportError:
        raise SystemExit("needs pyinstrument: .venv/bin/pip install pyinstrument") from None

    with tempfile.TemporaryDirectory() as tmp:
        size = args.upload_mb * 2**20 if args.upload_mb else 1024 * 1024
        built = build_package(Path(tmp), "prof", disks=(DiskSpec(max(16, 2 * size >> 20), size),))
        with running_vcsim() as vcsim:
            connection = ConnectionSettings(server=vcsim.url, username=vcsim.username,
                                            password=vcsim.password,
                                            ca_file=str(vcsim.ca_file))

            async def batch(count: int, prefix: str) -> None:
                results = await run_batch(connection, plan_for(built.path, prefix, count),
                                          RunSettings(concurrency=args.concurrency))
                # run_batch raises nothing for a job: a profile of failures would mislead.
                failed = [r.error for r in results if r.status is not JobStatus.IMPORTED]
                assert not failed, failed[:3]

            anyio.run(batch, min(args.count, 20), "warm")
            profiler = Profiler(interval=0.0005, async_mode="enabled")
            with profiler:
                anyio.run(batch, args.count, "prof")
    print(profiler.output_text(unicode=True, color=False, show_all=False))
    if args.html:
        args.html.write_text(profiler.output_html())


if __name__ == "__main__":
    main()
