"""The import rules of docs/architecture.md, read off the source: model code never imports a command-line module,
inference never imports training, the library cores import no argparse, foundation modules import only each
other, the figures (imcap/plots/) import no command line, no training and no MXNet; and its table of modules, which
lists every module of imcap/ and of its subpackages (``plots.attention``) exactly once, in the layers the rules name."""
import ast
import collections
import os
import re
import subprocess
import sys
from typing import Dict, List, Optional, Set

import pytest

PACKAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "imcap")
ARCHITECTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "docs", "architecture.md")

# The command-line tools: each is a thin layer over library modules, and no library module imports one.
CLI = {"arguments", "train", "captioner", "extract_features", "average", "evaluate", "visualize", "prepare_data", "serve",
       "launch", "lexical_constraints", "export.__main__"}
VISION = {"vision.images", "vision.efficientnet", "vision.classifier", "vision.zoo", "vision.image_encoder",
          "vision.tail"}
EXPORT = {"export.builder", "export.blocks", "export.rnn", "export.transformer", "export.convolution", "export.cnn",
          "export.graphs", "export.exported", "export.package"}
MODEL = {"layers", "encoder", "decoder", "rnn", "rnn_teacher_forcing", "transformer", "convolution", "model",
         "beam_search", "search_steps", "mxnet_steps", "onnx_steps", "onnx_encoder", "constraints"} | VISION | EXPORT
TRAINING = {"training", "loss", "self_critical"}


def _source(module: str) -> ast.Module:
    """The syntax tree of ``imcap/<module>.py`` (``plots.attention``: imcap/plots/attention.py)."""
    with open(os.path.join(PACKAGE, module.replace(".", os.sep) + ".py"), encoding="utf-8") as f:
        return ast.parse(f.read())


def _imported(base: List[str], name: Optional[str], known: Set[str]) -> str:
    """The module of imcap an import names, relative to imcap: ``base.name`` when that is a module (``from . import
    constants``, ``from .plots import attention``), else ``base`` (``from .utils import check_condition``)."""
    candidate = ".".join(base + [name]) if name else ".".join(base)
    return candidate if candidate in known or not base else ".".join(base)


def imcap_imports(module: str):
    """The imcap modules ``imcap/<module>.py`` imports (anywhere in the file, functions included), named as the
    table names them (``plots.figure``, relative imports resolved from the module's package), and whether it
    imports argparse."""
    known, package = set(modules()), module.split(".")[:-1]
    names, argparse = set(), False
    for node in ast.walk(_source(module)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                argparse |= alias.name == "argparse"
                if alias.name.startswith("imcap."):
                    names.add(_imported(alias.name.split(".")[1:], None, known))
        elif isinstance(node, ast.ImportFrom):
            argparse |= node.module == "argparse"
            if node.level:   # from .x import y / from . import x / from ..x import y
                base = package[:len(package) - (node.level - 1)] + (node.module.split(".") if node.module else [])
            elif node.module and node.module.startswith("imcap."):
                base = node.module.split(".")[1:]
            else:
                continue
            names.update(_imported(base, alias.name, known) for alias in node.names)
    return names, argparse


def third_party_imports(module: str) -> Set[str]:
    """The top-level names of the packages other than imcap that ``imcap/<module>.py`` imports, anywhere in it."""
    found = set()
    for node in ast.walk(_source(module)):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module.split(".")[0])
    return found - {"imcap"}


def modules() -> List[str]:
    """Every module of imcap/ and of its subpackages (folders with an ``__init__.py``), relative to imcap: ``utils``,
    ``plots.attention``. A package's ``__init__.py`` is not a module of the table."""
    found = []
    for folder, folders, files in os.walk(PACKAGE):
        folders[:] = sorted(d for d in folders if os.path.isfile(os.path.join(folder, d, "__init__.py")))
        package = os.path.relpath(folder, PACKAGE)
        prefix = "" if package == os.curdir else package.replace(os.sep, ".") + "."
        found.extend(prefix + name[:-3] for name in files if name.endswith(".py") and name != "__init__.py")
    return sorted(found)


def plotting_modules() -> List[str]:
    """The modules of imcap/plots/: the figures."""
    return [module for module in modules() if module.startswith("plots.")]


def table() -> Dict[str, List[str]]:
    """The modules of docs/architecture.md's table ("## The modules"), by layer, as the table names them: the
    backticked names of each row's module cell (a row with an empty layer cell is in the layer above it)."""
    with open(ARCHITECTURE, encoding="utf-8") as f:
        section = f.read().split("## The modules", 1)[1].split("\n## ", 1)[0]
    layers: Dict[str, List[str]] = collections.OrderedDict()
    layer = None
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if len(cells) < 3 or cells[:2] == ["layer", "module"] or set(cells[0] + cells[1]) <= set("-: "):
            continue
        layer = cells[0] or layer
        assert layer, "the table's first row has no layer: %r" % line
        names = re.findall(r"`([^`]+)`", cells[1])
        assert names and re.sub(r"`[^`]+`|[, ]", "", cells[1]) == "", "not a list of `module` names: %r" % cells[1]
        layers.setdefault(layer, []).extend(names)
    return layers


def test_the_table_lists_every_module_exactly_once():
    listed = [name for names in table().values() for name in names]
    twice = sorted(name for name, count in collections.Counter(listed).items() if count > 1)
    assert not twice, "listed more than once in docs/architecture.md: %s" % twice
    missing = sorted(set(modules()) - set(listed))
    assert not missing, "modules of imcap/ missing from docs/architecture.md's table: %s" % missing
    unknown = sorted(set(listed) - set(modules()))
    assert not unknown, "docs/architecture.md's table names modules imcap/ does not have: %s" % unknown


def test_the_rules_layers_are_the_tables():
    layers = table()
    assert set(layers) == {"foundation", "data", "vision", "model", "search", "library", "plotting", "serving",
                           "tools"}, \
        list(layers)
    assert set(layers["plotting"]) == set(plotting_modules()), "the table's plotting modules are not imcap/plots/: %s" \
        % (set(layers["plotting"]) ^ set(plotting_modules()))
    assert set(layers["tools"]) == CLI, "the table's tools are not the CLI modules: %s" % (set(layers["tools"]) ^ CLI)
    model = set(layers["vision"]) | set(layers["model"]) | set(layers["search"])
    assert model == MODEL, "the table's vision, model and search modules are not MODEL: %s" % (model ^ MODEL)
    assert set(layers["vision"]) == VISION, "the table's vision modules are not imcap/vision/: %s" % (
        set(layers["vision"]) ^ VISION)


@pytest.mark.parametrize("module", sorted(table()["foundation"]))
def test_foundation_modules_import_only_each_other(module):
    names, _ = imcap_imports(module)
    assert names <= set(table()["foundation"]), names - set(table()["foundation"])


@pytest.mark.parametrize("module", sorted(MODEL))
def test_model_code_imports_no_cli_module_and_no_training(module):
    names, argparse = imcap_imports(module)
    assert not names & CLI and not names & TRAINING and not argparse, names


@pytest.mark.parametrize("module", ["inference", "phrases", "training"])
def test_library_cores_read_no_command_line(module):
    names, argparse = imcap_imports(module)
    assert not argparse and not names & CLI, names


@pytest.mark.parametrize("module", ["inference", "phrases"])
def test_inference_never_imports_training(module):
    names, _ = imcap_imports(module)
    assert not names & TRAINING and "reward" not in names, names


def test_no_library_module_imports_a_cli_module():
    for module in modules():
        if module in CLI:
            continue
        names, _ = imcap_imports(module)
        assert not names & CLI, (module, names & CLI)


@pytest.mark.parametrize("module", plotting_modules())
def test_the_figures_import_no_cli_module_no_training_and_no_mxnet(module):
    names, argparse = imcap_imports(module)
    assert not names & CLI and not names & TRAINING and not argparse, names
    assert not third_party_imports(module) & {"mxnet", "gluonnlp"}, third_party_imports(module)


def test_the_figures_and_the_region_grid_load_without_mxnet():
    """Importing every module of imcap.plots loads neither MXNet nor GluonNLP, transitively (a notebook draws figures
    without them); imcap.features, whose region_grid the server's API shares, loads no matplotlib either."""
    code = ("import sys\nimport imcap.features\nassert 'matplotlib' not in sys.modules\n"
            + "".join("import imcap.%s\n" % module for module in plotting_modules())
            + "loaded = sorted(m for m in ('mxnet', 'gluonnlp') if m in sys.modules)\nassert not loaded, loaded\n")
    root = os.path.dirname(os.path.abspath(PACKAGE))
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


LONGEST_FUNCTION = 60   # lines, docstring included: a function that reads at once


@pytest.mark.parametrize("module", ["beam_search", "search_steps", "mxnet_steps", "onnx_steps", "search_options",
                                    "constraints", "inference",
                                    "phrases", "visualize"] + plotting_modules())
def test_no_function_of_the_search_inference_phrase_and_figure_code_is_longer_than_a_screen(module):
    long = ["%s (%d lines)" % (node.name, node.end_lineno - node.lineno + 1) for node in ast.walk(_source(module))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > LONGEST_FUNCTION]
    assert not long, "%s: %s" % (module, ", ".join(long))


def test_the_search_and_the_onnx_runtime_load_without_mxnet():
    """The search (its vocabulary helpers included), the ONNX Runtime runtime, the exported dirs' reader and the
    Captioner (whose onnxruntime backend needs neither) load neither MXNet nor GluonNLP, transitively."""
    code = ("import sys\nimport imcap.beam_search, imcap.onnx_steps, imcap.export.exported, imcap.inference\n"
            "import imcap.vocab, imcap.captioner, imcap.onnx_encoder, imcap.vision.classifier\n"
            "loaded = sorted(m for m in ('mxnet', 'gluonnlp') if m in sys.modules)\nassert not loaded, loaded\n")
    root = os.path.dirname(os.path.abspath(PACKAGE))
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("module", ["onnx_steps", "export.builder"])
def test_the_onnx_runtime_and_the_graph_builder_import_no_mxnet(module):
    """imcap.onnx_steps runs exported models without MXNet (and imports no module of imcap that loads it);
    imcap.export.builder writes ONNX nodes from numpy arrays alone."""
    assert not third_party_imports(module) & {"mxnet", "gluonnlp"}, third_party_imports(module)
    names, _ = imcap_imports(module)
    assert names <= {"constants", "export.builder", "search_steps"} - {module}, names
    assert not third_party_imports("search_steps") & {"mxnet", "gluonnlp"}   # the contract and its base class
