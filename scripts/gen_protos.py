#!/usr/bin/env python
"""Generate the Python code of protos/ (messages, type stubs, gRPC stubs) into ``serving/api/``.

``protos/tagllm/v1/x.proto`` becomes ``serving/api/v1/x_pb2.py``, ``x_pb2.pyi`` and ``x_pb2_grpc.py``.
The wire package stays ``tagllm.v1`` (the descriptors keep their file names, ``tagllm/v1/x.proto``,
so reflection and other-language clients see no change); only the Python import prefix is rewritten
(``from tagllm.v1 import common_pb2`` -> ``from serving.api.v1 import common_pb2``), because the
generated code belongs to the serving package, the only one that imports grpc. The generated files
are committed; a test (tests/serving/test_protos_and_cli.py) regenerates them into a temporary folder
and fails when they are stale.

Usage::

    python scripts/gen_protos.py            # write into the repository root
    python scripts/gen_protos.py --out DIR  # write elsewhere (the staleness test does this)
"""

from __future__ import annotations

import argparse
import logging
import re
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROTO_ROOT = REPO / "protos"
WIRE_PACKAGE = "tagllm"  # protos/tagllm/v1/*.proto: `package tagllm.v1;`
PYTHON_PACKAGE = "serving.api"  # where the generated modules live: serving/api/v1/

log = logging.getLogger("gen_protos")


def proto_files(root: Path = PROTO_ROOT) -> list[Path]:
    """Every .proto under ``root``, sorted (relative to ``root``)."""
    return sorted(p.relative_to(root) for p in root.rglob("*.proto"))


def _rewrite_imports(text: str) -> str:
    """``from tagllm.v1 import x_pb2`` / ``import tagllm.v1.x_pb2`` -> the serving package."""
    return re.sub(rf"^(from|import) {WIRE_PACKAGE}\.", rf"\1 {PYTHON_PACKAGE}.", text, flags=re.MULTILINE)


def generate(out_dir: Path, root: Path = PROTO_ROOT) -> list[Path]:
    """Run grpc_tools.protoc over every proto of ``root``; write the modules under
    ``out_dir/serving/api/``; returns the generated files.

    Raises:
        RuntimeError: protoc failed (its messages are on stderr).
    """
    import grpc_tools
    from grpc_tools import protoc

    include = Path(grpc_tools.__file__).parent / "_proto"  # google/protobuf/*.proto
    files = [str(p) for p in proto_files(root)]
    target_root = out_dir.joinpath(*PYTHON_PACKAGE.split("."))
    generated: list[Path] = []
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp)
        args = [
            "grpc_tools.protoc",
            f"-I{root}",
            f"-I{include}",
            f"--python_out={raw}",
            f"--pyi_out={raw}",
            f"--grpc_python_out={raw}",
            *files,
        ]
        code = protoc.main(args)
        if code != 0:
            raise RuntimeError(f"protoc exited with {code} for {files}")
        for f in files:
            rel = Path(f).parent.relative_to(WIRE_PACKAGE)  # tagllm/v1 -> v1
            for src in sorted((raw / Path(f).parent).glob(Path(f).stem + "_pb2*.py*")):
                dest = target_root / rel / src.name
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_text(_rewrite_imports(src.read_text()))
                generated.append(dest)
        shutil.rmtree(raw / WIRE_PACKAGE, ignore_errors=True)
    log.info("generated %d files into %s", len(generated), target_root)
    return sorted(generated)


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
