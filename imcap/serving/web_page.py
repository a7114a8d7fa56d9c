"""The web page of ``python -m imcap.serve``: a Gradio app over the same :class:`imcap.serving.batching.BatchingCaptioner` as
the JSON API, mounted on its FastAPI app.

A person uploads, pastes or picks an example image, sets the beam size and the n-best size, optionally phrases the
caption must include or avoid (lexical constraints), and reads the caption, the n-best list with scores and the
attention of each word over the image (the figure of ``python -m imcap.visualize attention``, drawn in memory by the
function the server passes in). Page requests are checked like API uploads (:mod:`imcap.serving.uploads`) and join the same
batches as API requests.

Gradio runs offline here: analytics off, no Hugging Face hub, no server-side rendering, the theme's own fonts (no
font CDN), no footer links. It keeps uploads in its cache dir (``GRADIO_TEMP_DIR``; ``imcap.serve`` points it at a
private temporary directory it removes on exit), with copies of the examples; it serves no other file, and its events
take no file but an upload (:func:`mount_page`).
"""
import logging
import os
import threading
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .batching import BatchingCaptioner
from ..inference import CaptionInput
from ..output_handler import guidance_report
from ..phrases import split_alternatives
from ..search_options import SearchOptions
from .uploads import UploadError, UploadLimits, decode_preview, decode_upload, sniff_image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no telemetry, no version check
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_SSR_MODE", "False")

logger = logging.getLogger(__name__)

# Draws the attention figure: (image (H, W, 3) uint8, tokens, attention (len(tokens) + 1, regions)) -> RGB pixels.
AttentionDrawer = Callable[[np.ndarray, Sequence[str], np.ndarray], np.ndarray]

PREVIEW_SIDE = 800        # pixels: an upload is shrunk to this before the figure is drawn
MAX_PHRASES = 20
NBEST_HEADERS = ["rank", "caption", "score"]
CSS = """
#caption textarea { font-size: 1.35em; font-weight: 600; }
#attention img { object-fit: contain; }
"""


GUIDE_MAX_SOFT_WEIGHT = 5.0   # the page's slider ranges (the API takes any value in range)
GUIDE_MAX_AGAINST = 0.2


def split_phrases(text: Optional[str]) -> List[str]:
    """The phrases of a text field: one per line (or separated by ``;``), blanks dropped."""
    if not text:
        return []
    parts = [p.strip() for line in text.splitlines() for p in line.split(";")]
    return [p for p in parts if p]


def describe_guidance(result: Any, shown: int = 8) -> str:
    """The page's lines on soft guidance and guidance against (empty when neither was used): the words pushed, with
    their bonus and whether the caption has them, and the words held back (the first ``shown`` of each)."""
    report = guidance_report(result)
    text = ""
    pushed = report.get("guide_pushed", [])
    if pushed:
        text += "\n\npushed by the classifier: " + ", ".join(
            "%s (+%.2f)%s" % (w["word"], w["bonus"], " ✓" if w["written"] else "") for w in pushed[:shown])
    held_back = report.get("guide_held_back", [])
    if held_back:
        more = " and %d more" % (len(held_back) - shown) if len(held_back) > shown else ""
        text += "\n\nheld back (the classifier rules them out): " + ", ".join(
            w["word"] for w in held_back[:shown]) + more
    return text


def describe_result(constraints: Sequence[Any], avoid: Sequence[str], constraints_met: Any, batch_size: int,
                    seconds: float, beam_size: int) -> str:
    """The status line under a caption (Markdown)."""
    parts = ["beam %d" % beam_size, "searched with %d image%s" % (batch_size, "" if batch_size == 1 else "s"),
             "%.2f s" % seconds]
    if constraints or avoid:
        if constraints_met is None:
            parts.append("constraints: not reported")
        else:
            parts.append("constraints met" if constraints_met else "**constraints not met**")
    return " · ".join(parts)


class CaptionPage:
    """What the page's controls call: one instance per server.

    :param service: the started queue in front of the models.
    :param limits: upload limits (as the API's).
    :param draw_attention: draws the attention figure (e.g. :func:`imcap.plots.attention.render_attention`); None: no
        figure.
    :param timeout: seconds a page request waits for its caption.
    """

    def __init__(self, service: BatchingCaptioner, limits: UploadLimits,
                 draw_attention: Optional[AttentionDrawer] = None, timeout: float = 120.0) -> None:
        self.service = service
        self.limits = limits
        self.draw_attention = draw_attention
        self.timeout = timeout
        self.size = service.captioner.get_image_encoder().input_size
        self._draw_lock = threading.Lock()  # matplotlib's pyplot is not thread-safe

    def caption(self, path: Optional[str], beam_size: float, nbest_size: float, include: str, avoid: str,
                soft_weight: Optional[float] = None, against: Optional[float] = None
                ) -> Tuple[str, List[List[Any]], Optional[np.ndarray], str]:
        """Caption the image Gradio saved at ``path`` (its upload cache; None: no image); ``soft_weight`` and
        ``against``: the guide's settings of a guided server's page (None: the server's).

        :return: the caption, the n-best rows ``[rank, caption, score]``, the attention figure, a status line.
        :raises gradio.Error: for a file that is not an image, is too large, or options out of range.
        """
        import gradio as gr
        if not path:
            return "", [], None, "Upload, paste or pick an image."
        if not in_upload_folder(path):  # Gradio checks it too (mount_page); a page never names another file
            raise gr.Error("only uploaded images are captioned")
        with open(path, "rb") as f:
            data = f.read(self.limits.max_bytes + 1)
        constraints = [split_alternatives(p) for p in split_phrases(include)]   # "cat | kitten": either
        avoided = split_phrases(avoid)
        try:
            guide = {name: float(value) for name, value in (("guide_soft_weight", soft_weight),
                                                            ("guide_against", against)) if value is not None}
            options = SearchOptions.of(self.service.defaults, beam_size=int(beam_size), nbest_size=int(nbest_size),
                                       **guide)
            if len(constraints) > MAX_PHRASES or len(avoided) > MAX_PHRASES:
                raise UploadError("at most %d phrases to include and %d to avoid" % (MAX_PHRASES, MAX_PHRASES))
            with self.service.preparing():
                upload = sniff_image(data, self.limits)
                pixels = decode_upload(upload, self.size)
                future = self.service.submit(CaptionInput(image=pixels, constraints=constraints, avoid=avoided,
                                                          source="page", line=1), options)
            captioned = future.result(self.timeout)
        except Exception as e:  # shown on the page; the server goes on
            raise gr.Error(str(e) or type(e).__name__)
        result = captioned.result
        seconds = captioned.wait_seconds + captioned.search_seconds
        if result.error is not None:
            return "", [], None, "**Could not caption:** %s" % result.error
        nbest = result.nbest or [(result.tokens, result.score)]
        rows = [[rank, result.text(tokens), round(float(score), 4)] for rank, (tokens, score) in enumerate(nbest, 1)]
        figure = None
        if self.draw_attention is not None and result.attention is not None:
            preview = decode_preview(upload, PREVIEW_SIDE)
            with self._draw_lock:
                figure = self.draw_attention(preview, result.tokens, np.asarray(result.attention))
        status = describe_result(constraints, avoided, getattr(result, "constraints_met", None),
                                 captioned.batch_size, seconds, options.beam_size)
        guides = getattr(result, "guide", None) or []
        if guides:   # a server run with --guide-with-classifier
            status += "\n\nguided by the classifier: " + ", ".join(
                "%s (%s, %.2f)%s" % (" | ".join(g.words), g.class_name, g.probability, " ✓" if g.met else " ✗")
                for g in guides)
        status += describe_guidance(result)
        for warning in getattr(result, "warnings", None) or []:
            status += "\n\n⚠ %s" % warning
        return result.caption, rows, figure, status


def in_upload_folder(path: str) -> bool:
    """Whether ``path`` is inside Gradio's upload cache (``GRADIO_TEMP_DIR``), where it keeps uploads and copies of
    the examples."""
    from gradio.utils import get_upload_folder
    folder = os.path.realpath(get_upload_folder())
    return os.path.commonpath([os.path.realpath(path), folder]) == folder


def build_page(page: CaptionPage, examples: Sequence[str] = (), title: str = "imcap",
               description: str = "") -> Any:
    """The Gradio Blocks of the page (mount it with :func:`mount_page`).

    :param page: what the controls call.
    :param examples: image files offered as examples (Gradio copies them into its cache here).
    :param title: the page's heading and tab title.
    :param description: a Markdown line under the heading (e.g. the model).
    """
    import gradio as gr
    max_beam = page.service.limits.max_beam_size
    defaults = page.service.defaults
    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=(600, 3600)) as blocks:
        gr.Markdown("# %s\n%s" % (title, description))
        with gr.Row():
            with gr.Column(scale=2):
                image = gr.Image(type="filepath", image_mode=None, sources=["upload", "clipboard"],
                                 label="Image (upload, drop or paste)", elem_id="image", height=360)
                if examples:
                    gr.Examples(examples=[[path] for path in examples], inputs=[image], label="Examples",
                                examples_per_page=len(examples), api_visibility="private", elem_id="examples")
                with gr.Row():
                    beam_size = gr.Slider(1, max_beam, value=defaults.beam_size, step=1, label="Beam size",
                                          elem_id="beam_size")
                    nbest_size = gr.Slider(1, max_beam, value=max(defaults.nbest_size, min(3, defaults.beam_size)),
                                           step=1, label="N-best (at most the beam size)", elem_id="nbest_size")
                include = gr.Textbox(label="Include phrases (one per line; cat | kitten: either one)", lines=2,
                                     elem_id="include", placeholder="e.g. a dog")
                avoid = gr.Textbox(label="Avoid phrases (one per line)", lines=2, elem_id="avoid",
                                   placeholder="e.g. grass")
                guide_controls = _guide_controls(page, defaults)
                button = gr.Button("Caption", variant="primary", elem_id="caption_button")
            with gr.Column(scale=3):
                caption = gr.Textbox(label="Caption", interactive=False, elem_id="caption", lines=1)
                status = gr.Markdown(elem_id="status")
                nbest = gr.Dataframe(headers=NBEST_HEADERS, datatype=["number", "str", "number"],
                                     interactive=False, label="N-best (log-probability / length penalty)",
                                     elem_id="nbest", column_widths=["12%", "68%", "20%"])
        gr.Markdown("### Attention of each word over the image\nThe image, then one panel per word (`<end>`: "
                    "the end of the caption): where the model looked, blue to red, as "
                    "`python -m imcap.visualize attention` draws it.")
        attention = gr.Image(show_label=False, interactive=False, type="numpy", format="png",
                             elem_id="attention", buttons=["download"])
        inputs = [image, beam_size, nbest_size, include, avoid] + guide_controls
        outputs = [caption, nbest, attention, status]
        limit = page.service.max_batch_size  # page requests join the API's batches: let as many run at once
        image.change(page.caption, inputs, outputs, concurrency_limit=limit, api_visibility="private")
        button.click(page.caption, inputs, outputs, concurrency_limit=limit, api_visibility="private")
    return blocks


def _guide_controls(page: CaptionPage, defaults: SearchOptions) -> List[Any]:
    """The sliders of soft guidance and guidance against, on the page of a server guided by the classifier (none
    otherwise)."""
    import gradio as gr
    if getattr(page.service.captioner, "guide", None) is None:
        return []
    with gr.Row():
        soft = gr.Slider(0.0, GUIDE_MAX_SOFT_WEIGHT, value=defaults.guide_soft_weight, step=0.1,
                         label="Soft guide weight (0: off)", elem_id="guide_soft_weight")
        against = gr.Slider(0.0, GUIDE_MAX_AGAINST, value=defaults.guide_against, step=0.005,
                            label="Guide against (0: off)", elem_id="guide_against")
    return [soft, against]


def mount_page(app: Any, blocks: Any, limits: UploadLimits, path: str = "/") -> Any:
    """Mount ``blocks`` on the FastAPI ``app`` at ``path``, offline, with the upload limit of ``limits``. Gradio serves
    the files of its cache (uploads, the figures, copies of the examples made by :func:`build_page`) and no other, and
    its events take uploaded files only."""
    import gradio as gr
    theme = gr.themes.Default(primary_hue="blue")
    app = gr.mount_gradio_app(app, blocks, path=path, footer_links=[], run_history=False, show_error=True,
                              max_file_size=limits.max_bytes, ssr_mode=False, mcp_server=False, theme=theme, css=CSS)
    # Gradio checks that a file an event receives was uploaded (is in its cache) only once the Blocks "has launched",
    # which launch() sets and mount_gradio_app() does not: without this, a request naming any file of the server
    # would have Gradio copy it into its cache, and serve it.
    blocks.has_launched = True
    return app


def example_images(check_images: str, flickr8k: str, flickr_count: int = 4) -> List[str]:
    """Example files that exist: the photos of ``check_images`` and the first ``flickr_count`` images of Flickr8k's
    test split (``flickr8k/test.txt``, under ``flickr8k/images``)."""
    paths: List[str] = []
    if os.path.isdir(check_images):
        paths += [os.path.join(check_images, name) for name in sorted(os.listdir(check_images))
                  if name.lower().endswith((".jpg", ".jpeg", ".png"))]
    split = os.path.join(flickr8k, "test.txt")
    if os.path.isfile(split):
        with open(split, encoding="utf-8") as f:
            names = [line.strip() for line in f if line.strip()][:flickr_count]
        paths += [p for p in (os.path.join(flickr8k, "images", name) for name in names) if os.path.isfile(p)]
    return paths


def model_summary(info: Dict[str, Any]) -> str:
    """One Markdown line on the models of ``GET /v1/model``'s ``info``."""
    models = info.get("models", [])
    names = ", ".join("`%s` (%s)" % (m["dir"], m["checkpoint"]) for m in models)
    decoder = models[0]["config"].get("decoder_name", "?") if models else "?"
    return ("Image captioning with %s: %s decoder, %d words, %s features. JSON API: `POST /v1/caption`, "
            "`GET /v1/model`, `GET /v1/health`." % (names or "no model", decoder, info.get("vocabulary_size", 0),
                                                   info.get("image_encoder", {}).get("encoder", "?")))
