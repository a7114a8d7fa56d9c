"""The import rules of docs/architecture.md, read off the source: model code never imports a command-line module,
inference never imports training, the two library cores import no argparse, foundation modules import only each
other; and its table of modules, which lists every module of imcap/ exactly once, in the layers the rules name."""
import ast
import collections
import os
import re
from typing import Dict, List

import pytest

PACKAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "imcap")
ARCHITECTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "docs", "architecture.md")

# The command-line tools: each is a thin layer over library modules, and no library module imports one.
CLI = {"arguments", "train", "captioner", "extract_features", "average", "evaluate", "visualize", "prepare_data", "serve",
       "launch", "lexical_constraints"}
MODEL = {"layers", "encoder", "encoder_tail", "decoder", "rnn", "rnn_teacher_forcing", "transformer", "convolution",
         "model", "image_encoder", "beam_search", "constraints"}
TRAINING = {"training", "loss", "self_critical"}


def imcap_imports(module: str):
    """The imcap modules ``imcap/<module>.py`` imports (anywhere in the file, functions included), and whether it
    imports argparse."""
    with open(os.path.join(PACKAGE, module + ".py"), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    names, argparse = set(), False
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                argparse |= alias.name == "argparse"
                if alias.name.startswith("imcap."):
                    names.add(alias.name.split(".")[1])
        elif isinstance(node, ast.ImportFrom):
            argparse |= node.module == "argparse"
            if node.level == 1:   # from .x import y / from . import x
                if node.module:
                    names.add(node.module.split(".")[0])
                else:
                    names.update(alias.name for alias in node.names)
            elif node.module and node.module.startswith("imcap."):
                names.add(node.module.split(".")[1])
    return names, argparse


def modules():
    return sorted(name[:-3] for name in os.listdir(PACKAGE) if name.endswith(".py") and name != "__init__.py")


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
    assert set(layers) == {"foundation", "data", "model", "search", "library", "serving", "tools"}, list(layers)
    assert set(layers["tools"]) == CLI, "the table's tools are not the CLI modules: %s" % (set(layers["tools"]) ^ CLI)
    model = set(layers["model"]) | set(layers["search"])
    assert model == MODEL, "the table's model and search modules are not MODEL: %s" % (model ^ MODEL)


@pytest.mark.parametrize("module", sorted(table()["foundation"]))
def test_foundation_modules_import_only_each_other(module):
    names, _ = imcap_imports(module)
    assert names <= set(table()["foundation"]), names - set(table()["foundation"])


@pytest.mark.parametrize("module", sorted(MODEL))
def test_model_code_imports_no_cli_module_and_no_training(module):
    names, argparse = imcap_imports(module)
    assert not names & CLI and not names & TRAINING and not argparse, names


@pytest.mark.parametrize("module", ["inference", "training"])
def test_library_cores_read_no_command_line(module):
    names, argparse = imcap_imports(module)
    assert not argparse and not names & CLI, names


def test_inference_never_imports_training():
    names, _ = imcap_imports("inference")
    assert not names & TRAINING and "reward" not in names, names


def test_no_library_module_imports_a_cli_module():
    for module in modules():
        if module in CLI:
            continue
        names, _ = imcap_imports(module)
        assert not names & CLI, (module, names & CLI)
