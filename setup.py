"""Build hook: generate the gRPC code of protos/ before packaging.

The generated package `tollgate/v1/` is written into the source tree (so that
editable installs and a plain checkout see it) and is ignored by git: it is
only ever produced from `protos/tollgate/v1/*.proto`, never edited by hand.
"""

from __future__ import annotations

import pathlib
import sys

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = pathlib.Path(__file__).parent.resolve()
PROTO_ROOT = ROOT / "protos"
OUT_PACKAGE = ROOT / "tollgate"


def generate_protos() -> None:
    """Run protoc (from grpcio-tools) over every .proto under protos/."""
    import grpc_tools
    from grpc_tools import protoc  # build requirement, imported late

    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    if not protos:
        raise RuntimeError(f"no .proto files found under {PROTO_ROOT}")
    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        *_mypy_plugins(),
        f"--proto_path={PROTO_ROOT}",
        f"--proto_path={well_known}",
        f"--python_out={ROOT}",
        f"--grpc_python_out={ROOT}",
        f"--mypy_out={ROOT}",
        f"--mypy_grpc_out={ROOT}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed on " + ", ".join(protos))
    for package in {OUT_PACKAGE, *(OUT_PACKAGE.rglob("*/"))}:
        if package.is_dir():
            (package / "__init__.py").touch()
            (package / "py.typed").touch()


def _mypy_plugins() -> list[str]:
    """Name mypy-protobuf's protoc plugins beside this Python, when found there
    (a virtualenv that is not on PATH); otherwise protoc searches PATH."""
    scripts = pathlib.Path(sys.executable).parent
    return [
        f"--plugin={name}={scripts / name}"
        for name in ("protoc-gen-mypy", "protoc-gen-mypy_grpc")
        if (scripts / name).exists()
    ]


class BuildPyWithProtos(build_py):
    """build_py that generates the protobuf and gRPC modules first."""

    def run(self) -> None:
        generate_protos()
        super().run()


# Generate before setup() looks for packages, so that `tollgate` is found on
# the very first build of a fresh clone (editable installs included).
generate_protos()
setup(cmdclass={"build_py": BuildPyWithProtos})
