"""The import rules of docs/architecture.md, read off the source: model code never imports a command-line module,
inference never imports training, and the two library cores import no argparse."""
import ast
import os

import pytest

PACKAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "imcap")

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
