"""Regenerates the gRPC stubs in ferry/v1 from the repository's protos.

    PYTHONPATH=~/.cache/ferry/python python3 clients/python/generate.py [--check]

Uses grpcio-tools' protoc (pinned in .ci/setup). With --check it generates into a
temporary directory and fails when the checked-in stubs differ (CI runs that).
"""

import filecmp
import glob
import os
import shutil
import sys
import tempfile

import grpc_tools
from grpc_tools import protoc

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_DIR = os.path.join(HERE, "..", "..", "proto")


def generate(out: str) -> None:
    include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    protos = sorted(glob.glob(os.path.join(PROTO_DIR, "ferry", "v1", "*.proto")))
    code = protoc.main(
        ["protoc", f"-I{PROTO_DIR}", f"-I{include}", f"--python_out={out}",
         f"--pyi_out={out}", f"--grpc_python_out={out}", *protos]
    )
    if code != 0:
        sys.exit(f"protoc failed with {code}")
    with open(os.path.join(out, "ferry", "v1", "__init__.py"), "w") as init:
        init.write('"""Generated gRPC stubs of the ferry.v1 API (clients/python/generate.py)."""\n')


def main() -> None:
    check = "--check" in sys.argv[1:]
    with tempfile.TemporaryDirectory() as out:
        generate(out)
        generated = os.path.join(out, "ferry", "v1")
        target = os.path.join(HERE, "ferry", "v1")
        if check:
            names = sorted(os.listdir(generated))
            kept = sorted(n for n in os.listdir(target) if n != "__pycache__")
            _, mismatch, errors = filecmp.cmpfiles(generated, target, names, shallow=False)
            if names != kept or mismatch or errors:
                sys.exit(f"clients/python/ferry/v1 is stale ({mismatch + errors or kept}): "
                         "run clients/python/generate.py")
            print("stubs up to date")
            return
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(generated, target)
        print(f"generated {target}")


if __name__ == "__main__":
    main()
