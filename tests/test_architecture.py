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


BLOCK_LM_STACK = (
    "import sys\n"
    "class Block:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] in ('transformers', 'accelerate', 'peft', 'datasets'):\n"
    "            raise ImportError('blocked ' + name)\n"
    "sys.meta_path.insert(0, Block())\n"
)


def _run_blocked(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter where importing transformers / accelerate / peft / datasets fails."""
    out = subprocess.run([sys.executable, "-c", BLOCK_LM_STACK + code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    return out


def test_core_imports_with_transformers_blocked():
    out = _run_blocked("import alignkit.core as c\nassert 'transformers' not in sys.modules\nprint(len(c.__all__))\n")
    assert int(out.stdout.strip()) > 20


def _alignkit_imports(path: pathlib.Path) -> set[str]:
    """alignkit subpackages a module imports, absolute or relative (``from ..core import x`` -> "core")."""
    tree = ast.parse(path.read_text())
    package = path.relative_to(SRC).parts[:-1]  # e.g. ("classic", "agents")
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[: len(package) - node.level + 1])
                target = base + (node.module.split(".") if node.module else [])
            elif node.module and node.module.startswith("alignkit."):
                target = node.module.split(".")[1:]
            else:
                continue
            found.add(target[0] if target else "")
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("alignkit."))
    return found


def test_classic_imports_only_core_from_alignkit():
    allowed_external = {"torch", "numpy", "gymnasium", "matplotlib", "__future__"}
    stdlib = set(sys.stdlib_module_names)
    for path in (SRC / "classic").rglob("*.py"):
        inside = _alignkit_imports(path) - {"classic", "core"}
        assert not inside, f"{path.relative_to(SRC)} imports alignkit.{inside}; alignkit.classic uses only core"
        external = _imports(path) - stdlib - allowed_external - {"alignkit"}
        assert not external, f"{path.relative_to(SRC)} imports {external}"


def test_classic_imports_with_transformers_blocked():
    _run_blocked(
        "import alignkit.classic.gym_runner, alignkit.classic.tabular_cli\n"
        "bad = [m for m in sys.modules if m.startswith('alignkit.') and m.split('.')[1] not in ('classic', 'core')]\n"
        "assert not bad, bad\n"
    )


def test_no_config_field_is_declared_twice():
    """One config root: a field a base config declares is never declared again by a subclass (another default
    goes through ``with_defaults``, which keeps the base's declaration and help text), and the seed and the
    sampling fields are declared once for the trainers, Best-of-N, RLAIF and ``generate``."""
    import dataclasses

    from alignkit.cli import GenerateJob
    from alignkit.trainers import (
        BestOfNConfig,
        DPOConfig,
        OnlineConfig,
        PPOConfig,
        ReinforceConfig,
        RewardConfig,
        SFTConfig,
        TRPOConfig,
    )
    from alignkit.trainers.rlaif import RLAIFConfig
    from alignkit.training.config import RunConfig, SamplingConfig, SeedConfig, TokenizeConfig, TrainConfig

    classes = (RunConfig, TrainConfig, OnlineConfig, SFTConfig, RewardConfig, DPOConfig, ReinforceConfig, PPOConfig,
               TRPOConfig, BestOfNConfig, RLAIFConfig, GenerateJob)
    for cls in classes:
        overrides = set(cls.__dict__.get("__default_overrides__", ()))
        own = set(cls.__dict__.get("__annotations__", {})) - overrides
        for base in cls.__mro__[1:]:
            if dataclasses.is_dataclass(base):
                inherited = {f.name for f in dataclasses.fields(base)}
                assert not own & inherited, (cls.__name__, base.__name__, sorted(own & inherited))
        by_name = {f.name: f for f in dataclasses.fields(cls)}
        for name in overrides:  # an override keeps the base field's help text
            assert by_name[name].metadata["help"]
    shared = {f.name for f in (*dataclasses.fields(SamplingConfig), *dataclasses.fields(TokenizeConfig))} | {"seed"}
    for name in shared:
        declared_in = [cls.__name__ for cls in classes if name in cls.__dict__.get("__annotations__", {})
                       and name not in cls.__dict__.get("__default_overrides__", ())]
        assert declared_in == [], (name, declared_in)  # only SamplingConfig / TokenizeConfig / SeedConfig do
    assert {"seed"} == set(SeedConfig.__annotations__)
    for cls in (OnlineConfig, BestOfNConfig, RLAIFConfig, GenerateJob):
        assert issubclass(cls, SamplingConfig) and issubclass(cls, SeedConfig)
    for cls in (SFTConfig, RewardConfig, DPOConfig):
        assert issubclass(cls, TokenizeConfig)
    for name in ("lora", "mixed_precision", "gradient_checkpointing", "learning_rate", "save_steps", "on_nonfinite"):
        assert name in RunConfig.__annotations__ and name in {f.name for f in dataclasses.fields(OnlineConfig)}
