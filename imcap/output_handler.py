"""Output formats of the captioner behind one interface and a factory (after Sockeye's ``output_handler.py``).

Every handler writes exactly one line per input line; a line that could not be captioned is written empty
(``caption``), as ``score\\t`` with an empty caption (``caption_with_score``) or as a JSON object with an
``error`` key (``json``).
"""
import json
from typing import IO, Any, Dict

import numpy as np

from . import constants as C
from .inference import CaptionResult  # the results handled here (imported from here before imcap.inference)


class OutputHandler:
    """Writes one line per :class:`CaptionResult` to a stream."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def handle(self, result: CaptionResult) -> None:
        self.stream.write(self.format(result) + "\n")

    def format(self, result: CaptionResult) -> str:
        raise NotImplementedError()


class CaptionOutputHandler(OutputHandler):
    """The caption alone (``--output-type caption``)."""

    def format(self, result: CaptionResult) -> str:
        return result.caption


class CaptionWithScoreOutputHandler(OutputHandler):
    """``score<TAB>caption`` (``--output-type caption_with_score``), as Sockeye's ``translation_with_score``."""

    def format(self, result: CaptionResult) -> str:
        return "%.6f\t%s" % (result.score, result.caption) if result.error is None else "\t"


def guidance_report(result: CaptionResult) -> Dict[str, Any]:
    """``{"guide_pushed": [{"word", "probability", "bonus", "written"}], "guide_held_back": [{"word",
    "probability"}]}``: what soft guidance pushed and guidance against held back (each key only when used)."""
    report: Dict[str, Any] = {}
    if getattr(result, "guide_pushed", None):
        report["guide_pushed"] = [{"word": w.word, "probability": round(float(w.probability), 4),
                                   "bonus": round(float(w.bonus), 4), "written": bool(w.written)}
                                  for w in result.guide_pushed]
    if getattr(result, "guide_held_back", None):
        report["guide_held_back"] = [{"word": w.word, "probability": round(float(w.probability), 6)}
                                     for w in result.guide_held_back]
    return report


class JSONOutputHandler(OutputHandler):
    """One JSON object per line (``--output-type json``): ``caption``, ``tokens``, ``score``, ``attention``
    (per generated word, ``</s>`` included, the weights over the regions), ``nbest`` and ``image``; a line with
    lexical constraints also has ``constraints_met`` and, per phrase, ``constraints`` and ``avoid``:
    ``[{"phrase": ..., "met": true|false}, ...]`` (a disjunctive constraint also has its ``alternatives``), and
    ``warnings`` when a phrase could not be used as given; a caption guided by the classifier has ``guide``:
    ``[{"class", "name", "probability", "words", "met"}]``, soft guidance ``guide_pushed``: ``[{"word", "probability",
    "bonus", "written"}]`` and guidance against ``guide_held_back``: ``[{"word", "probability"}]`` (when used); a failed
    line has ``error``."""

    def format(self, result: CaptionResult) -> str:
        obj = {"line": result.line, "image": result.source, "caption": result.caption, "tokens": result.tokens,
               "score": result.score}
        if result.attention is not None:
            obj["attention"] = np.round(result.attention.astype(np.float64), 5).tolist()
        if result.nbest:
            obj["nbest"] = [{"caption": result.text(t), "score": s} for t, s in result.nbest]
        if getattr(result, "guide", None):
            obj["guide"] = [{"class": g.class_index, "name": g.class_name, "probability": round(g.probability, 4),
                             "words": g.words, "met": g.met} for g in result.guide]
        obj.update(guidance_report(result))
        if result.constraints_met is not None:
            obj["constraints_met"] = result.constraints_met
            obj["constraints"] = [dict({"phrase": p.phrase, "met": p.met},
                                       **({"alternatives": p.alternatives} if p.alternatives else {}))
                                  for p in result.constraints]
            obj["avoid"] = [{"phrase": p.phrase, "met": p.met} for p in result.avoid]
        if result.warnings:
            obj["warnings"] = list(result.warnings)
        if result.error is not None:
            obj["error"] = result.error
        return json.dumps(obj, ensure_ascii=False)


_HANDLERS = {C.OUTPUT_TYPE_CAPTION: CaptionOutputHandler,
             C.OUTPUT_TYPE_CAPTION_WITH_SCORE: CaptionWithScoreOutputHandler,
             C.OUTPUT_TYPE_JSON: JSONOutputHandler}


def get_output_handler(output_type: str, stream: IO[str]) -> OutputHandler:
    """The handler of ``--output-type``."""
    return _HANDLERS[output_type](stream)
