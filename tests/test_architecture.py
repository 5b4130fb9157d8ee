"""The package's shape: imports run one way down the layers written in the README, no module imports itself back
through a cycle, every module says what it owns, and no function is longer than 60 lines."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "dlm_jax"

# Lowest first; a module may import its own package (same layer) and any lower layer, never a higher one.
# Siblings on one layer (parallel, diffusion, data) do not import each other.
LAYERS = [
    ["dlm_jax.errors", "dlm_jax.visualize", "dlm_jax.quiet"],
    ["dlm_jax.model"],
    ["dlm_jax.parallel", "dlm_jax.diffusion", "dlm_jax.data"],
    ["dlm_jax.hf_io", "dlm_jax.gguf_io"],
    ["dlm_jax.pretrained"],
    ["dlm_jax.config"],
    ["dlm_jax.rundir"],
    ["dlm_jax.inference"],
    ["dlm_jax.training", "dlm_jax.serving"],
    ["dlm_jax.cli"],
    ["dlm_jax.train", "dlm_jax.evaluate", "dlm_jax.generate", "dlm_jax.export", "dlm_jax.data.show",
     "dlm_jax.data.prepare", "dlm_jax.lm_eval", "dlm_jax.serve", "dlm_jax.plot"],
    ["dlm_jax"],
]


def _modules() -> dict[str, Path]:
    out = {}
    for f in PACKAGE.rglob("*.py"):
        parts = f.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = f
    return out


def _unit(module: str) -> tuple[int, str]:
    """(layer, unit) of a module: the longest prefix named in LAYERS."""
    best = None
    for i, layer in enumerate(LAYERS):
        for unit in layer:
            if (module == unit or module.startswith(unit + ".")) and (best is None or len(unit) > len(best[1])):
                best = (i, unit)
    assert best is not None, f"{module} is in no layer: add it to LAYERS and to the README's layout"
    return best


def _imports(path: Path, known: set[str]) -> set[str]:
    """dlm_jax modules imported anywhere in the file (top level or inside functions)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:  # `from pkg import submodule` imports the submodule
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                     for a in node.names]
        for n in names:
            if n.startswith("dlm_jax"):
                while n not in known:
                    n = n.rsplit(".", 1)[0]
                out.add(n)
    return out


def test_imports_run_down_the_layers_without_cycles():
    mods = _modules()
    graph = {m: _imports(p, set(mods)) - {m} for m, p in mods.items()}
    upward, sideways = [], []
    for m, deps in graph.items():
        layer, unit = _unit(m)
        for d in deps:
            d_layer, d_unit = _unit(d)
            if d_layer > layer:
                upward.append(f"{m} (layer {layer}) imports {d} (layer {d_layer})")
            elif d_layer == layer and d_unit != unit and layer != len(LAYERS) - 1:
                sideways.append(f"{m} imports its sibling {d}")
    assert not upward, "\n".join(upward)
    assert not sideways, "\n".join(sideways)
    # cycles among modules (package __init__ files re-exporting their own submodules are not edges back)
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            if d.startswith(m + "."):
                continue
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(d):] + [d]))
            if d not in state:
                visit(d, stack + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_the_layer_check_catches_an_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from dlm_jax.training import loop\n")
    assert "dlm_jax.training.loop" in _imports(bad, set(_modules()))
    assert _unit("dlm_jax.training.loop")[0] > _unit("dlm_jax.model.encoder")[0]


def test_every_module_says_what_it_owns_and_functions_stay_short():
    long, undocumented = [], []
    for name, path in _modules().items():
        tree = ast.parse(path.read_text())
        if not ast.get_docstring(tree):
            undocumented.append(name)
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > 60:
                    long.append(f"{name}.{node.name}: {n} lines")
    assert not undocumented, f"modules without a docstring: {undocumented}"
    assert not long, "functions over 60 lines:\n" + "\n".join(long)


def _flags_defined(path: Path) -> set[str]:
    """Names of the absl flags a module defines at import (`flags.DEFINE_*("name", ...)`)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr.startswith("DEFINE_") and node.args and isinstance(node.args[0], ast.Constant)):
            out.add(node.args[0].value)
    return out


def test_tests_import_no_two_entry_points_whose_flags_collide():
    """Entry points define their flags at import; a pytest worker that imports two defining the same flag fails
    with DuplicateFlagError (CI's failure with `data.prepare` and `export`). Tests and benchmarks call the library
    function (e.g. `inference.export.export_run`) instead, or an entry point whose flags no other imported one has."""
    mods = _modules()
    entries = {m for m in LAYERS[-2] if m in mods}
    imported = set()
    for f in list((PACKAGE.parent / "tests").glob("*.py")) + list((PACKAGE.parent / "bench").glob("*.py")):
        imported |= _imports(f, set(mods)) & entries
    flags = {m: _flags_defined(mods[m]) for m in sorted(imported)}
    clashes = [f"{a} and {b} both define {sorted(flags[a] & flags[b])}" for a in flags for b in flags
               if a < b and flags[a] & flags[b]]
    assert not clashes, "\n".join(clashes)
    assert _flags_defined(mods["dlm_jax.export"]) & _flags_defined(mods["dlm_jax.data.prepare"])  # the check bites


def _family_name_comparisons(path: Path, names: set[str]) -> list[str]:
    """Comparisons that ask for a model family by name: `x.family == ...` / `in`, or a family's name compared."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Compare):
            continue
        sides = [node.left, *node.comparators]
        by_attr = any(isinstance(s, ast.Attribute) and s.attr == "family" for s in sides)
        consts = {c.value for s in sides for c in ast.walk(s) if isinstance(c, ast.Constant)}
        if by_attr or consts & names:
            out.append(f"{path.name}:{node.lineno}")
    return out


def test_only_the_model_package_names_families():
    """Outside dlm_jax/model/ the package asks a family (`family_of(cfg).prompt_separator`, ...), never its name."""
    from dlm_jax.model.family import REGISTRY
    names = set(REGISTRY)
    found = [hit for name, path in _modules().items() if not name.startswith("dlm_jax.model")
             for hit in _family_name_comparisons(path, names)]
    assert not found, "family names compared outside dlm_jax/model/:\n" + "\n".join(found)
    assert {"bert", "roberta", "xlmr-xl", "modernbert", "transformer", "llama"} <= names


def test_the_family_check_catches_a_name_comparison(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f(cfg, run):\n    return cfg.family == 'llama' or run.model.family in ('bert',)\n")
    good = tmp_path / "good.py"
    good.write_text("def f(kind):\n    return kind == 'encoder-decoder'\n")
    assert len(_family_name_comparisons(bad, {"llama", "bert"})) == 2
    assert not _family_name_comparisons(good, {"llama", "bert"})


def test_importing_the_package_silences_transformers_advice():
    """transformers' advice lines (on a torch-free install: "PyTorch was not found. Models won't be available...",
    printed by every command though dlm_jax needs torch for nothing) are off once dlm_jax is imported; its
    warnings stay."""
    import subprocess
    import sys
    probe = ("from transformers.utils import logging as tl\n"
             "tl.get_logger('transformers.probe').warning_advice('ADVICE')\n"
             "tl.get_logger('transformers.probe').warning('WARNING')\n")
    env = {k: v for k, v in __import__("os").environ.items() if k != "TRANSFORMERS_NO_ADVISORY_WARNINGS"}
    for first, advice in (("", True), ("import dlm_jax\n", False)):
        r = subprocess.run([sys.executable, "-c", first + probe], capture_output=True, text=True, timeout=300,
                           cwd=PACKAGE.parent, env=env)
        assert r.returncode == 0 and "WARNING" in r.stderr and ("ADVICE" in r.stderr) == advice, r.stderr[-2000:]
