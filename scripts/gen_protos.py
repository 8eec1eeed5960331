#!/usr/bin/env python
"""Generate the Python code of protos/ (messages, type stubs, gRPC stubs) into the repository root.

``protos/tagllm/v1/x.proto`` becomes ``tagllm/v1/x_pb2.py``, ``x_pb2.pyi`` and ``x_pb2_grpc.py``
(imports read ``from tagllm.v1 import common_pb2``). The generated files are committed; a test
(tests/serving/test_protos.py) regenerates them into a temporary folder and fails when they are stale.

Usage::

    python scripts/gen_protos.py            # write into the repository root
    python scripts/gen_protos.py --out DIR  # write elsewhere (the staleness test does this)
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROTO_ROOT = REPO / "protos"

log = logging.getLogger("gen_protos")


def proto_files(root: Path = PROTO_ROOT) -> list[Path]:
    """Every .proto under ``root``, sorted (relative to ``root``)."""
    return sorted(p.relative_to(root) for p in root.rglob("*.proto"))


def generate(out_dir: Path, root: Path = PROTO_ROOT) -> list[Path]:
    """Run grpc_tools.protoc over every proto of ``root``; returns the generated files.

    Raises:
        RuntimeError: protoc failed (its messages are on stderr).
    """
    import grpc_tools
    from grpc_tools import protoc

    out_dir.mkdir(parents=True, exist_ok=True)
    include = Path(grpc_tools.__file__).parent / "_proto"  # google/protobuf/*.proto
    files = [str(p) for p in proto_files(root)]
    args = [
        "grpc_tools.protoc",
        f"-I{root}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *files,
    ]
    code = protoc.main(args)
    if code != 0:
        raise RuntimeError(f"protoc exited with {code} for {files}")
    generated = sorted(p for f in files for p in (out_dir / Path(f).parent).glob(Path(f).stem + "_pb2*.py*"))
    log.info("generated %d files into %s", len(generated), out_dir)
    return generated


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=REPO, help="output root (default: the repository root)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    generate(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
