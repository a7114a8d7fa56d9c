"""The JSON API of ``python -m imcap.serve``, a FastAPI app over a :class:`imcap.serving.batching.BatchingCaptioner`.

- ``POST /v1/caption``: the image as the multipart field ``image`` or as the raw request body; options as query
  parameters (``?beam_size=3&nbest_size=3&constraints=a+dog``) or, with multipart, as a JSON object in the field
  ``options``: the fields of :class:`imcap.search_options.SearchOptions` (several captions per image: ``nbest_size``
  with ``diverse_beam_groups``/``diverse_beam_strength``, or with ``sample``, ``sampling_temperature``,
  ``sampling_top_k``, ``sampling_top_p`` and ``seed``: a request's samples depend on its seed alone), ``attention``,
  ``constraints`` and ``avoid``. Answers ``{"caption", "tokens", "score", "nbest": [{"caption", "tokens", "score"},
  ...], "attention": [[weight per region] per word, </s> last], "attention_grid", "constraints": [{"phrase", "met"}],
  "avoid": [{"phrase", "met"}], "constraints_met", "guide": [{"class", "name", "probability", "words", "met"}],
  "guide_pushed": [{"word", "probability", "bonus", "written"}], "guide_held_back": [{"word", "probability"}],
  "warnings", "options", "image", "batch_size", "seconds"}``. A constraint may be disjunctive: a list of alternative
  phrases in the JSON options (``{"constraints": [["cat", "kitten"], "red"]}``), or ``cat | kitten`` in a query
  parameter; its report then has ``alternatives``.
- ``GET /v1/health``: ``{"status": "ok", ...}`` (503 when the worker is down).
- ``GET /v1/model``: the models' configuration, vocabulary size, checkpoints, the request defaults and the limits.

Every error is ``{"error": message}`` with its status: 400 (not an image, broken image, bad multipart), 413 (upload
or pixel count over the limit), 422 (unknown or invalid option, or a result with an error: the captioner could not
caption the request as asked), 500 (a search that failed), 503 (queue full, timeout, worker down). The body is read
into memory with a byte limit and never written to disk; no request names a file.
"""
import asyncio
import dataclasses
import json
import logging
import math
import os
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple, cast

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from .. import constants as C
from .batching import BatchingCaptioner, Captioned, QueueFullError
from ..search_options import SearchOptions
from ..inference import CaptionInput, CaptionResult, Captioner
from ..output_handler import guidance_report
from ..phrases import check_phrases, phrase_text, split_alternatives
from .uploads import STATUS_TOO_LARGE, UploadError, UploadLimits, UploadedImage, decode_upload, sniff_image, \
    too_large_message
from ..utils import ImcapError

logger = logging.getLogger(__name__)

API_PREFIX = "/v1"
IMAGE_FIELD = "image"
OPTIONS_FIELD = "options"
MULTIPART_OVERHEAD = 64 * 1024   # bytes a multipart body may have beyond the image (boundaries, the options field)
MAX_FIELD_BYTES = 64 * 1024      # largest multipart field other than the image
MAX_PARTS = 4
MAX_PHRASES = 20                 # constraints, and avoid phrases, per request
MAX_PHRASE_CHARS = 200
ATTENTION_DECIMALS = 6
STATUS_UNPROCESSABLE = 422
STATUS_UNAVAILABLE = 503
STATUS_INTERNAL = 500

_INT_OPTIONS = ("beam_size", "nbest_size", "max_output_length", "no_repeat_ngram_size", "sampling_top_k", "seed",
                "diverse_beam_groups")
_FLOAT_OPTIONS = ("length_penalty_alpha", "length_penalty_beta", "sampling_temperature", "sampling_top_p",
                  "diverse_beam_strength", "guide_soft_weight", "guide_against")
_BOOL_OPTIONS = ("allow_unk", "sample", "attention")
_LIST_OPTIONS = ("constraints", "avoid")
OPTION_NAMES = _INT_OPTIONS + _FLOAT_OPTIONS + _BOOL_OPTIONS + _LIST_OPTIONS
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


class ApiError(ImcapError):
    """A refused request: its message and HTTP status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclasses.dataclass(frozen=True)
class RequestOptions:
    """What one request asks for: its search options, whether to return attention, and its phrases."""
    search: SearchOptions
    attention: bool = True
    constraints: Tuple[Any, ...] = ()   # phrases, or lists of alternative phrases
    avoid: Tuple[str, ...] = ()


def _options_error(message: str) -> ApiError:
    return ApiError(message, STATUS_UNPROCESSABLE)


def _from_text(name: str, text: str) -> Any:
    """The value of option ``name`` given as text (a query parameter)."""
    try:
        if name in _INT_OPTIONS:
            return int(text)
        if name in _FLOAT_OPTIONS:
            value = float(text)
            if not math.isfinite(value):
                raise ValueError(text)
            return value
    except ValueError:
        raise _options_error("option %s: not %s: %r" % (name, "an integer" if name in _INT_OPTIONS else "a number",
                                                        text))
    if name in _BOOL_OPTIONS:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise _options_error("option %s: not true or false: %r" % (name, text))
    return text


def _from_json(name: str, value: Any) -> Any:
    """The value of option ``name`` given in JSON, checked for its type."""
    if name in _INT_OPTIONS:
        ok = isinstance(value, int) and not isinstance(value, bool)
        what = "an integer"
    elif name in _FLOAT_OPTIONS:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        what = "a number"
    elif name in _BOOL_OPTIONS:
        ok, what = isinstance(value, bool), "true or false"
    else:   # constraints: each a phrase, or a list of alternative phrases (a disjunctive constraint); avoid: phrases
        ok = _are_phrases(name, value)
        what = "a list of phrases or of lists of alternative phrases" if name == "constraints" else "a list of phrases"
    if not ok:
        raise _options_error("option %s: not %s: %s" % (name, what, json.dumps(value)[:100]))
    return float(value) if name in _FLOAT_OPTIONS else value


def _are_phrases(name: str, value: Any) -> bool:
    """Whether a JSON value is what a :class:`CaptionInput` takes as its ``constraints`` or ``avoid``
    (:func:`imcap.phrases.check_phrases`)."""
    try:
        check_phrases(name, value, alternatives=name == "constraints")
    except (TypeError, ValueError):
        return False
    return True


def parse_options(query: Sequence[Tuple[str, str]], json_options: Optional[str],
                  defaults: SearchOptions) -> RequestOptions:
    """The options of a request: query parameters (``constraints`` and ``avoid`` repeated, one phrase each) and the
    JSON object of the multipart field ``options``; each option may come from one of the two.

    :raises ApiError: 422 for an unknown option, a value of the wrong type or out of its range
        (:class:`imcap.search_options.SearchOptions`), an option given twice, or more than :data:`MAX_PHRASES`
        phrases (the server's limits are checked by :meth:`imcap.serving.batching.SearchLimits.check`).
    """
    values: Dict[str, Any] = {}
    for name, text in query:
        if name not in OPTION_NAMES:
            raise _options_error("unknown option %r (options: %s)" % (name, ", ".join(OPTION_NAMES)))
        if name in _LIST_OPTIONS:
            values.setdefault(name, []).append(text)
        elif name in values:
            raise _options_error("option %s given twice" % name)
        else:
            values[name] = _from_text(name, text)
    if json_options is not None:
        try:
            given = json.loads(json_options)
        except ValueError as e:
            raise _options_error("field %s: not JSON (%s)" % (OPTIONS_FIELD, e))
        if not isinstance(given, dict):
            raise _options_error("field %s: not a JSON object" % OPTIONS_FIELD)
        for name, value in given.items():
            if name not in OPTION_NAMES:
                raise _options_error("unknown option %r (options: %s)" % (name, ", ".join(OPTION_NAMES)))
            if name in values:
                raise _options_error("option %s given both as a query parameter and in %s" % (name, OPTIONS_FIELD))
            values[name] = _from_json(name, value)
    phrases = {}
    for name in _LIST_OPTIONS:
        phrases[name] = tuple(values.pop(name, []))
        if name == "constraints":   # "cat | kitten" in a query parameter: one constraint with two alternatives
            phrases[name] = tuple(split_alternatives(p) if isinstance(p, str) else list(p) for p in phrases[name])
        if len(phrases[name]) > MAX_PHRASES or any(len(phrase_text(p)) > MAX_PHRASE_CHARS for p in phrases[name]):
            raise _options_error("option %s: at most %d phrases of at most %d characters"
                                 % (name, MAX_PHRASES, MAX_PHRASE_CHARS))
    attention = values.pop("attention", True)
    try:
        search = defaults.replace(**values)
    except (TypeError, ValueError) as e:   # SearchOptions names the option out of range
        raise _options_error(str(e))
    return RequestOptions(search, attention, phrases["constraints"], phrases["avoid"])


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, read into memory.

    :raises ApiError: 413 as soon as the declared or the received length passes ``limit`` bytes.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(too_large_message(int(declared), limit), STATUS_TOO_LARGE)
    chunks: List[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(too_large_message(size, limit), STATUS_TOO_LARGE)
        chunks.append(chunk)
    return b"".join(chunks)


class _MultipartReader:
    """Parts of a ``multipart/form-data`` body, kept in memory: ``{field name: bytes}`` (python-multipart)."""

    def __init__(self, max_image_bytes: int) -> None:
        self.parts: Dict[str, bytearray] = {}
        self.max_image_bytes = max_image_bytes
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""
        self._name: Optional[str] = None

    def parse(self, content_type: str, body: bytes) -> Dict[str, bytes]:
        from python_multipart.multipart import MultipartParser, parse_options_header
        _, params = parse_options_header(content_type)
        boundary = params.get(b"boundary")
        if not boundary:
            raise ApiError("multipart body without a boundary", 400)
        callbacks: Dict[str, Callable] = dict(on_part_begin=self._begin, on_header_field=self._header_field,
                                              on_header_value=self._header_value_data, on_header_end=self._header_end,
                                              on_headers_finished=self._headers_finished, on_part_data=self._data)
        parser = MultipartParser(boundary, cast(Any, callbacks))
        try:
            parser.write(body)
            parser.finalize()
        except ApiError:
            raise
        except Exception as e:  # python-multipart's errors on malformed bodies
            raise ApiError("malformed multipart body (%s)" % e, 400)
        return {name: bytes(data) for name, data in self.parts.items()}

    def _begin(self) -> None:
        self._disposition = b""
        self._name = None

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _header_value_data(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name, self._header_value = b"", b""

    def _headers_finished(self) -> None:
        from python_multipart.multipart import parse_options_header
        _, params = parse_options_header(self._disposition)
        name = params.get(b"name")
        if name is None:
            raise ApiError("a multipart part without a name", 400)
        self._name = name.decode("utf-8", "replace")
        if self._name not in (IMAGE_FIELD, OPTIONS_FIELD):
            raise ApiError("unknown multipart field %r (fields: %s, %s)" % (self._name, IMAGE_FIELD, OPTIONS_FIELD),
                           STATUS_UNPROCESSABLE)
        if self._name in self.parts:
            raise ApiError("multipart field %r given twice" % self._name, STATUS_UNPROCESSABLE)
        if len(self.parts) >= MAX_PARTS:
            raise ApiError("too many multipart parts", 400)
        self.parts[self._name] = bytearray()

    def _data(self, data: bytes, start: int, end: int) -> None:
        assert self._name is not None
        part = self.parts[self._name]
        part += data[start:end]
        limit = self.max_image_bytes if self._name == IMAGE_FIELD else MAX_FIELD_BYTES
        if len(part) > limit:
            raise ApiError(too_large_message(len(part), limit), STATUS_TOO_LARGE)


def split_request(content_type: str, body: bytes, max_image_bytes: int) -> Tuple[bytes, Optional[str]]:
    """``(image bytes, JSON options or None)`` of a request body: the multipart fields ``image`` and ``options``, or
    the raw body as the image.

    :raises ApiError: 400 for a malformed multipart body or one without ``image``, 413 for an image over
        ``max_image_bytes``, 422 for an unknown field.
    """
    if not content_type.lower().startswith("multipart/form-data"):
        return body, None
    parts = _MultipartReader(max_image_bytes).parse(content_type, body)
    if IMAGE_FIELD not in parts:
        raise ApiError("the multipart body has no field %r" % IMAGE_FIELD, 400)
    options = parts.get(OPTIONS_FIELD)
    try:
        return parts[IMAGE_FIELD], options.decode("utf-8") if options is not None else None
    except UnicodeDecodeError:
        raise ApiError("field %s: not UTF-8" % OPTIONS_FIELD, STATUS_UNPROCESSABLE)


def phrase_report(result: CaptionResult, key: str, asked: Sequence[str]) -> List[Dict[str, Any]]:
    """``[{"phrase", "met"}]`` of a request's ``constraints`` or ``avoid`` phrases: what the result says of each
    phrase when it says (its ``constraints``/``avoid`` entries with ``phrase`` and ``met``), else the phrases asked
    for with ``met`` None."""
    reported = getattr(result, key, None)
    if isinstance(reported, list) and reported and all(hasattr(p, "phrase") and hasattr(p, "met") for p in reported):
        return [dict({"phrase": str(p.phrase), "met": bool(p.met)},
                     **({"alternatives": list(p.alternatives)} if getattr(p, "alternatives", None) else {}))
                for p in reported]
    return [{"phrase": phrase_text(phrase), "met": None} for phrase in asked]


def guide_report(result: CaptionResult) -> List[Dict[str, Any]]:
    """``[{"class", "name", "probability", "words", "met"}]``: the classes that guided the caption (a server run with
    ``--guide-with-classifier``), else ``[]``."""
    return [{"class": int(g.class_index), "name": str(g.class_name), "probability": round(float(g.probability), 4),
             "words": list(g.words), "met": bool(g.met)} for g in getattr(result, "guide", None) or []]


def caption_response(captioned: Captioned, options: RequestOptions, upload: UploadedImage,
                     grid: Optional[Tuple[int, int]]) -> Dict[str, Any]:
    """The JSON of a captioned request."""
    result = captioned.result
    nbest = result.nbest or [(result.tokens, result.score)]
    attention = None
    if options.attention and result.attention is not None:
        attention = np.round(np.asarray(result.attention, dtype=np.float64), ATTENTION_DECIMALS).tolist()
    return {"caption": result.caption, "tokens": list(result.tokens), "score": float(result.score),
            "nbest": [{"caption": result.text(tokens), "tokens": list(tokens), "score": float(score)}
                      for tokens, score in nbest],
            "attention": attention, "attention_grid": list(grid) if grid else None,
            "constraints": phrase_report(result, "constraints", options.constraints),
            "avoid": phrase_report(result, "avoid", options.avoid),
            "constraints_met": getattr(result, "constraints_met", None),
            "guide": guide_report(result),
            **dict({"guide_pushed": [], "guide_held_back": []}, **guidance_report(result)),
            "warnings": [str(w) for w in getattr(result, "warnings", None) or []],
            "options": options.search.to_dict(),
            "image": {"format": upload.format, "width": upload.width, "height": upload.height},
            "batch_size": captioned.batch_size,
            "seconds": {"wait": round(captioned.wait_seconds, 4), "search": round(captioned.search_seconds, 4)}}


def attention_grid(captioner: Captioner) -> Optional[Tuple[int, int]]:
    """``(rows, columns)`` of the grid of the regions the decoder attends to (row-major), or None when it is unknown
    (each model's ``attention_grid``: :attr:`imcap.model.CaptionModel.attention_grid`, or the one an export records).
    The models of an ensemble must agree, else None.
    """
    grids: Set[Optional[Tuple[int, int]]] = {model.attention_grid for model in captioner.models}
    return grids.pop() if len(grids) == 1 else None


def describe_models(captioner: Captioner, models: Sequence[str], checkpoints: Optional[Sequence[str]]
                    ) -> Dict[str, Any]:
    """What ``GET /v1/model`` says of the loaded models (JSON-ready)."""
    encoder = captioner.get_image_encoder()
    names = list(checkpoints) if checkpoints else [getattr(model, "checkpoint", None) or C.PARAMS_BEST_NAME
                                                   for model in captioner.models]   # an export's own
    return {"models": [{"dir": os.path.basename(os.path.normpath(model_dir)), "checkpoint": name,
                        "config": model.config.to_dict() if captioner.backend == C.BACKEND_MXNET else model.config}
                       for model_dir, name, model in zip(models, names, captioner.models)],
            "backend": captioner.backend,
            "vocabulary_size": len(captioner.vocab), "feature_shape": list(captioner.feature_shape),
            "attention_grid": attention_grid(captioner), "image_encoder": encoder.describe(),
            "test_time_augmentations": list(captioner.test_time_augmentations), "imcap_version": __version__}


def _error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(service: BatchingCaptioner, model_info: Dict[str, Any], limits: UploadLimits,
               request_timeout: float = 120.0, decode_threads: Optional[int] = None) -> FastAPI:
    """The FastAPI app of the JSON API (a Gradio page may be mounted on it, see :mod:`imcap.serving.web_page`).

    :param service: the started queue in front of the models.
    :param model_info: what ``GET /v1/model`` says (:func:`describe_models`); the defaults and limits are added.
    :param limits: the upload limits.
    :param request_timeout: seconds a request waits for its caption before a 503.
    :param decode_threads: images decoded at once (in the thread pool; default: the number of cores).
    """
    app = FastAPI(title="imcap", version=__version__, docs_url=None, redoc_url=None,
                  openapi_url=API_PREFIX + "/openapi.json")
    size = service.captioner.get_image_encoder().input_size
    grid = attention_grid(service.captioner)
    decoding = asyncio.Semaphore(decode_threads or os.cpu_count() or 2)
    started = time.time()
    info = dict(model_info, defaults=service.defaults.to_dict(), limits=dict(
        dataclasses.asdict(service.limits), max_upload_bytes=limits.max_bytes, max_image_pixels=limits.max_pixels),
        batching={"max_batch_size": service.max_batch_size, "max_wait_ms": service.max_wait * 1000.0})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(str(exc.detail), exc.status_code)

    @app.get(API_PREFIX + "/health")
    async def health() -> JSONResponse:
        """Whether the caption worker runs, and its counters."""
        body = {"status": "ok" if service.alive else "down", "uptime_seconds": round(time.time() - started, 1),
                "batching": service.describe()}
        return JSONResponse(body, status_code=200 if service.alive else STATUS_UNAVAILABLE)

    @app.get(API_PREFIX + "/model")
    async def model() -> Dict[str, Any]:
        """The models' configuration, vocabulary size and checkpoints; the request defaults and limits."""
        return info

    @app.post(API_PREFIX + "/caption")
    async def caption(request: Request) -> JSONResponse:
        """Caption one image: multipart field ``image`` (options: query parameters or the JSON field ``options``)
        or the raw body (options: query parameters)."""
        try:
            body = await read_body(request, limits.max_bytes + MULTIPART_OVERHEAD)
            data, json_options = split_request(request.headers.get("content-type", ""), body, limits.max_bytes)
            options = parse_options(request.query_params.multi_items(), json_options, service.defaults)
            service.limits.check(options.search)
            with service.preparing():  # the worker waits for images being decoded
                upload = sniff_image(data, limits)
                async with decoding:
                    pixels = await run_in_threadpool(decode_upload, upload, size)
                item = CaptionInput(image=pixels, constraints=list(options.constraints), avoid=list(options.avoid),
                                    source="upload", line=1)   # its own input: its samples never depend on batching
                future = service.submit(item, options.search)
            captioned = await asyncio.wait_for(asyncio.wrap_future(future), request_timeout)
        except UploadError as e:
            return _error(str(e), e.status)
        except ApiError as e:
            return _error(str(e), e.status)
        except QueueFullError as e:
            return _error(str(e), STATUS_UNAVAILABLE)
        except asyncio.TimeoutError:
            return _error("no caption after %g s: the server is overloaded" % request_timeout, STATUS_UNAVAILABLE)
        except ImcapError as e:  # options out of range, bad phrases, a stopped worker
            return _error(str(e), STATUS_UNAVAILABLE if not service.alive else STATUS_UNPROCESSABLE)
        except Exception as e:  # noqa: BLE001 - e.g. a search that failed: this request's error, not the server's end
            logger.exception("POST /v1/caption failed")
            return _error("internal error: %s" % (str(e).splitlines()[0] if str(e) else type(e).__name__),
                          STATUS_INTERNAL)
        if captioned.result.error is not None:
            return _error(captioned.result.error, STATUS_UNPROCESSABLE)
        return JSONResponse(caption_response(captioned, options, upload, grid))

    return app
