"""The rules of DESIGN.md that a test can check."""

import ast
import pathlib
import subprocess
import sys

SRC = pathlib.Path(__file__).resolve().parents[1] / "src" / "alignkit"


def _imports(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_core_imports_only_torch_and_the_standard_library():
    allowed = {"torch", "__future__", "math", "typing", "collections", "dataclasses"}
    for path in (SRC / "core").glob("*.py"):
        extra = _imports(path) - allowed
        assert not extra, f"{path.name} imports {extra}; alignkit.core is torch only"


def test_core_imports_with_transformers_blocked():
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('transformers', 'accelerate', 'peft', 'datasets'):\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import alignkit.core as c\n"
        "assert 'transformers' not in sys.modules\n"
        "print(len(c.__all__))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) > 20
