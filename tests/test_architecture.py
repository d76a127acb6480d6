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
    return {module.split(".")[0] for module in _alignkit_modules(path)}


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

    from alignkit.cli.jobs import GenerateJob
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


def _alignkit_modules(path: pathlib.Path) -> set[str]:
    """Full dotted alignkit modules a file imports, without the ``alignkit.`` prefix (``generation.engine``);
    ``from .x import name`` counts as importing module ``x`` (and ``x.name``, which may be a submodule)."""
    tree = ast.parse(path.read_text())
    package = path.relative_to(SRC).parts[:-1]
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
            found.add(".".join(target))
            found.update(".".join([*target, alias.name]) for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".", 1)[1] for a in node.names if a.name.startswith("alignkit."))
    return found


def _files(*packages: str):
    for package in packages:
        yield from (SRC / package).rglob("*.py")


def test_trainers_and_the_loop_never_build_an_engine_themselves():
    """An engine is built by ``generation.make_generator`` only (engines are chosen by name); ``training/`` sits
    below ``rollout.py`` and takes a sampling callable for its report samples."""
    for path in _files("trainers", "training"):
        imports = _alignkit_modules(path)
        engine = {m for m in imports if m.startswith("generation.engine") or m == "generation.KVCacheGenerator"}
        assert not engine, f"{path.relative_to(SRC)} imports {engine}; build engines with make_generator"
    for path in _files("training"):
        rollout = {m for m in _alignkit_modules(path) if m.split(".")[0] == "rollout"}
        assert not rollout, f"{path.relative_to(SRC)} imports {rollout}; training/ sits below rollout.py"


def test_only_the_cli_imports_the_cli_and_no_cli_module_is_long():
    for path in SRC.rglob("*.py"):
        if path.relative_to(SRC).parts[0] != "cli":
            assert "cli" not in _alignkit_imports(path), f"{path.relative_to(SRC)} imports alignkit.cli"
    for path in (SRC / "cli").glob("*.py"):
        assert len(path.read_text().splitlines()) <= 300, f"{path.name} is over 300 lines"


def test_forward_helpers_live_in_models_forward():
    """One position-ids function and one set of forward helpers: nobody computes position ids inline, and DPO,
    the rollout and the online update import the forward helpers from models/forward.py."""
    for path in SRC.rglob("*.py"):
        if path.name == "forward.py" or "classic" in path.parts:
            continue
        text = path.read_text()
        assert "cumsum(-1) - 1)" not in text and "cumsum(dim=-1) - 1)" not in text, \
            f"{path.relative_to(SRC)} computes position ids inline; use models.forward.position_ids_from_mask"
    for name in ("model_logits", "response_token_logits", "concat_sequences", "response_logprobs"):
        owners = [p.relative_to(SRC) for p in SRC.rglob("*.py") if f"def {name}(" in p.read_text()]
        assert [str(o) for o in owners] == ["models/forward.py"], (name, owners)


def test_the_main_help_answers_without_torch():
    """``alignkit --help`` (and a bad command name) answer at once: the command table loads no torch."""
    out = subprocess.run([sys.executable, "-c", "import sys, contextlib, io\nfrom alignkit.cli import main\n"
                          "with contextlib.redirect_stdout(io.StringIO()):\n    assert main(['--help']) == 0\n"
                          "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import'\n"],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
