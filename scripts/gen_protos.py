"""Regenerate the Python stubs in sidecar/_proto/ from the protos in proto/.

grpcio-tools writes absolute imports (``from envoy.config.core.v3 import ...``);
they are rewritten to point inside ``sidecar._proto`` so the stubs never clash
with another copy of Envoy's protos installed in the same environment.

Usage: python scripts/gen_protos.py [OUT_DIR]   (default: sidecar/_proto)
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
DEFAULT_OUT = ROOT / "sidecar" / "_proto"
_LOCAL_PACKAGES = ("envoy", "google.rpc")
_IMPORT = re.compile(r"^from (" + "|".join(re.escape(p) for p in _LOCAL_PACKAGES) + r")([. ])", re.M)


def generate(out_dir: Path) -> None:
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    well_known = Path(protoc.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "grpc_tools.protoc",
            f"-I{PROTO_DIR}",
            f"-I{well_known}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *protos,
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        out_dir.mkdir(parents=True)
        for src in sorted(Path(tmp).rglob("*.py*")):
            if src.name.endswith("_pb2_grpc.py") and "class " not in src.read_text():
                continue  # a proto without services: its gRPC module would be empty boilerplate
            dst = out_dir / src.relative_to(tmp)
            dst.parent.mkdir(parents=True, exist_ok=True)
            text = _IMPORT.sub(r"from sidecar._proto.\1\2", src.read_text())
            dst.write_text(text)
        for pkg_dir in [out_dir, *(d for d in out_dir.rglob("*") if d.is_dir())]:
            (pkg_dir / "__init__.py").touch()


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT)
