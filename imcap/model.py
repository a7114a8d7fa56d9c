"""The captioning model: image encoder + target embedding + decoder + output layer, and its config.

``CaptionModel`` is a Gluon ``Block`` of hybridized parts. Training decodes a whole teacher-forced caption
(:meth:`CaptionModel.forward`); search uses :meth:`CaptionModel.encode` once and :meth:`CaptionModel.step` per
position, both hybridized so that one step is one cached graph call.
"""
import dataclasses
import logging
import os
from typing import Any, Dict, List, Optional, Tuple, Union

import mxnet as mx
from mxnet.gluon import Block, HybridBlock, nn

from . import constants as C
from .config import Config
from . import rnn, transformer, convolution  # noqa: F401  (register the decoders, in the order of --decoder's choices)
from .decoder import Decoder, decoder_config_type, decoder_name, decoder_names, get_decoder
from .rnn import RNNDecoderConfig
from .encoder import EncoderConfig, ImageFeatureEncoder
from .features import region_grid
from .vision.tail import EncoderTail, EncoderTailConfig
from .utils import ImcapError, atomic_path, check_condition

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class ModelConfig(Config):
    """Everything needed to rebuild a model (saved as ``config.yaml`` in the model dir).

    :param vocab_size: target vocabulary size, special symbols included.
    :param encoder: image encoder config (feature shape and projection).
    :param decoder: config of a registered decoder (:class:`imcap.rnn.RNNDecoderConfig`,
        :class:`imcap.transformer.TransformerDecoderConfig` or :class:`imcap.convolution.ConvolutionalDecoderConfig`).
    :param decoder_name: the ``--decoder`` name ``decoder``'s config type is registered under, derived from it (a
        value given is replaced); saved so that ``decoder`` loads back as its type.
    :param num_embed: target embedding size.
    :param embed_dropout: dropout on target embeddings.
    :param weight_tying: share the target embedding and the output layer (needs ``num_embed`` equal to the
        decoder's output size; Press & Wolf 2017).
    :param feature_extraction: how the cached features were made (the cache manifest), so that the captioner
        can run the same CNN on raw images.
    :param encoder_tail: the rest of the pretrained CNN after the cached layer, run (and fine-tuned) before
        ``encoder`` (:mod:`imcap.vision.tail`); None: the cached features go to ``encoder`` as they are.
    """
    vocab_size: int = 0
    encoder: EncoderConfig = dataclasses.field(default_factory=EncoderConfig)
    decoder: Config = dataclasses.field(default_factory=RNNDecoderConfig)
    decoder_name: str = C.DECODER_RNN
    num_embed: int = 256
    embed_dropout: float = 0.1
    weight_tying: bool = False
    feature_extraction: Optional[dict] = None
    encoder_tail: Optional[EncoderTailConfig] = None

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "ModelConfig":
        """As :meth:`Config.from_dict`, with ``decoder`` rebuilt as the config type registered under
        ``decoder_name`` (``rnn`` when missing).

        :raises ImcapError: on an unknown decoder name or unknown keys.
        """
        values = dict(values)
        name = values.get("decoder_name", C.DECODER_RNN)
        try:
            config_type = decoder_config_type(name)
        except KeyError:
            raise ImcapError("unknown decoder_name %r (known: %s)" % (name, ", ".join(decoder_names())))
        if isinstance(values.get("decoder"), dict):
            values["decoder"] = config_type.from_dict(values["decoder"])
        elif "decoder" not in values:
            values["decoder"] = config_type()
        return super().from_dict(values)

    def __post_init__(self) -> None:
        if type(self.decoder) in Decoder._registry:
            self.decoder_name = decoder_name(self.decoder)


def check_sizes(config: ModelConfig) -> None:
    """Check that the parts of ``config`` fit together: the decoder reads embeddings of ``num_embed`` and regions of
    the encoder's ``num_hidden``; weight tying needs ``num_embed`` equal to the decoder's output size.

    :raises ImcapError: naming the sizes that differ.
    """
    decoder: Any = config.decoder   # every registered decoder config has these fields
    check_condition(decoder.num_embed == config.num_embed, "the %s decoder reads embeddings of %d, the model's "
                    "--num-embed is %d" % (config.decoder_name, decoder.num_embed, config.num_embed))
    check_condition(decoder.encoder_num_hidden == config.encoder.num_hidden, "the %s decoder attends to regions of "
                    "%d, the encoder makes %d (--image-encoder-num-hidden)" % (config.decoder_name,
                                                                             decoder.encoder_num_hidden,
                                                                             config.encoder.num_hidden))
    check_condition(not config.weight_tying or config.num_embed == decoder.output_num_hidden,
                    "weight tying needs --num-embed == the decoder output size (%d != %d)"
                    % (config.num_embed, decoder.output_num_hidden))


class _Encode(HybridBlock):
    """Features ``(batch, regions, feature_dim)`` → static + dynamic decoder states (hybridized for search)."""

    def __init__(self, model: "CaptionModel", **kwargs) -> None:
        super().__init__(**kwargs)
        self.encoder_tail = model.encoder_tail
        self.encoder = model.encoder
        self.decoder = model.decoder

    def hybrid_forward(self, F, features):
        if self.encoder_tail is not None:
            features = self.encoder_tail(features)
        static, dynamic = self.decoder.init_state_graph(F, self.encoder(features))
        return static + dynamic


class _Step(HybridBlock):
    """One search step: previous word ids ``(batch,)`` + states → ``log-probs (batch, vocab)``,
    ``attention (batch, regions)`` and the new dynamic states (hybridized for search)."""

    def __init__(self, model: "CaptionModel", **kwargs) -> None:
        super().__init__(**kwargs)
        self.embedding = model.embedding
        self.decoder = model.decoder
        self.output_layer = model.output_layer
        self._num_static = model.decoder.num_static_states

    def hybrid_forward(self, F, prev_ids, *states):
        static, dynamic = list(states[:self._num_static]), list(states[self._num_static:])
        output, attention, dynamic = self.decoder.step(self.embedding(prev_ids), static, dynamic)
        return [F.log_softmax(self.output_layer(output), axis=-1), attention] + dynamic


class CaptionModel(Block):
    """Image-to-caption seq2seq model.

    :param config: the model config.
    :param models_dir: where the weights of a CNN tail (``config.encoder_tail``) are looked for; default: the shared
        models folder (:func:`imcap.vision.image_encoder.weights_dir`).
    :raises ImcapError: if the parts' sizes do not fit (:func:`check_sizes`), or a CNN tail's weights are missing.
    """

    def __init__(self, config: ModelConfig, models_dir: Optional[str] = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.config = config
        decoder_config: Any = config.decoder  # every registered decoder config has output_num_hidden
        check_sizes(config)
        with self.name_scope():
            self.encoder_tail = None if config.encoder_tail is None else \
                EncoderTail(config.encoder_tail, models_dir, prefix="encoder_tail_")
            self.encoder = ImageFeatureEncoder(config.encoder, prefix="encoder_")
            self.embedding = nn.HybridSequential(prefix="target_")
            with self.embedding.name_scope():
                self.embedding.add(nn.Embedding(config.vocab_size, config.num_embed))
                if config.embed_dropout > 0:
                    self.embedding.add(nn.Dropout(config.embed_dropout))
            self.decoder = get_decoder(decoder_config, prefix="decoder_")
            # Given the embedding's params, the Dense looks its weight up under the embedding's prefix: the same
            # Parameter (Gluon refuses a later reassignment of the attribute).
            params = self.embedding[0].params if config.weight_tying else None
            self.output_layer = nn.Dense(config.vocab_size, flatten=False, in_units=decoder_config.output_num_hidden,
                                         prefix="output_", params=params)
        # The search graphs share the parts' parameters. They are kept out of the Block's children, so that
        # save_parameters writes each parameter once under the parts' names (imcap 0.1.0 registered them as
        # children and so saved every parameter up to three times; load_params still reads those files).
        object.__setattr__(self, "_encode", _Encode(self, prefix=""))
        object.__setattr__(self, "_step", _Step(self, prefix=""))

    def hybridize(self, active: bool = True, **kwargs) -> None:
        """Hybridize the parts: what the decoder's teacher forcing runs (:meth:`imcap.decoder.Decoder.hybridize_sequence`:
        the RNN's step cell and per-length graphs, the whole sequence graph of the others), the encode and step graphs
        for search."""
        if self.encoder_tail is not None:
            self.encoder_tail.hybridize(active, **kwargs)
        self.encoder.hybridize(active, **kwargs)
        self.embedding.hybridize(active, **kwargs)
        self.decoder.hybridize_sequence(active, **kwargs)
        self.output_layer.hybridize(active, **kwargs)
        self._encode.hybridize(active, static_alloc=True)
        self._step.hybridize(active, static_alloc=True)

    def forward(self, features, target_in, repeats: int = 1):
        """Teacher-forced decoding.

        :param features: ``(images, regions, feature_dim)`` float32 (:attr:`feature_shape`).
        :param target_in: ``(batch, length)`` word ids, starting with ``<s>``; ``batch = images * repeats``.
        :param repeats: captions per image: the rows of ``target_in`` are each image's ``repeats`` captions in turn
            (``np.repeat`` order), and each image is encoded (by the CNN tail too) once, its encoding repeated
            (self-critical training decodes several sampled captions of one image).
        :return: logits ``(batch, length, vocab)`` and attention ``(batch, length, regions)`` (the regions of the
            CNN tail's output when there is one).
        """
        if self.encoder_tail is not None:
            features = self.encoder_tail(features)
        encoded = self.encoder(features)
        if repeats > 1:
            encoded = encoded.repeat(repeats, axis=0)
        static, dynamic = self.decoder.init_state(encoded)
        outputs, attention = self.decoder.decode_sequence(self.embedding(target_in), static, dynamic)
        return self.output_layer(outputs), attention

    def encode(self, features: mx.nd.NDArray) -> Tuple[List[mx.nd.NDArray], List[mx.nd.NDArray]]:
        """``(batch, regions, feature_dim)`` → ``(static, dynamic)`` decoder states for search."""
        states = self._encode(features)
        states = states if isinstance(states, (list, tuple)) else [states]
        n = self.decoder.num_static_states
        return list(states[:n]), list(states[n:])

    def step(self, prev_ids: mx.nd.NDArray, static: List[mx.nd.NDArray], dynamic: List[mx.nd.NDArray]):
        """One search step: ``prev_ids (batch,)`` → ``(log_probs (batch, vocab), attention (batch, regions),
        dynamic)``."""
        results = self._step(prev_ids, *static, *dynamic)
        return results[0], results[1], list(results[2:])

    @property
    def feature_shape(self) -> Tuple[int, int]:
        """``(regions, dim)`` of one image's input features: those of the CNN tail's input (the cached layer) when
        the model has one, else those of the encoder."""
        if self.config.encoder_tail is not None:
            regions, dim = self.config.encoder_tail.input_shape
            return int(regions), int(dim)
        return self.config.encoder.num_regions, self.config.encoder.feature_dim

    @property
    def attention_grid(self) -> Optional[Tuple[int, int]]:
        """``(rows, columns)`` of the grid of the regions the decoder attends to (row-major), or None when unknown:
        the CNN tail's output map when the model has one (e.g. 7 x 7 for features cached at a 14 x 14 block), else
        the square grid of the encoder's regions when their number is a square
        (:func:`imcap.features.region_grid`)."""
        tail = self.encoder_tail
        known = (int(tail.output_hw[0]), int(tail.output_hw[1])) if tail is not None else None
        return region_grid(int(self.config.encoder.num_regions), known)

    def num_parameters(self) -> int:
        """Number of trainable scalars (shared parameters counted once)."""
        seen, total = set(), 0
        for param in self.collect_params().values():
            if param.name not in seen and param.grad_req != "null":
                seen.add(param.name)
                total += int(mx.nd.prod(mx.nd.array(param.shape)).asscalar()) if param.shape else 0
        return total


# First name components of the duplicate copies that imcap 0.1.0 saved of every parameter (its search graphs were
# children of the model); they are ignored on loading.
LEGACY_DUPLICATE_PREFIXES = ("_encode", "_step")


def save_params(model: CaptionModel, path: str) -> None:
    """Write the parameters of ``model`` to ``path`` atomically, each once (shared ones, as with weight tying,
    under one name): about 4 bytes per float32 parameter."""
    with atomic_path(path) as tmp:
        model.save_parameters(tmp, deduplicate=True)


def load_params(model: CaptionModel, path: str, ctx: Union[mx.Context, List, None] = None) -> None:
    """Load a params file written by :func:`save_params`, or by imcap 0.1.0 (whose files also held copies of every
    parameter under the search graphs' names, see :data:`LEGACY_DUPLICATE_PREFIXES`).

    :raises ImcapError: if the file does not hold exactly the parameters of ``model`` (its shapes included).
    """
    try:
        legacy = any(name.split(".", 1)[0] in LEGACY_DUPLICATE_PREFIXES for name in mx.nd.load(path))
        model.load_parameters(path, ctx=ctx, ignore_extra=legacy)
    except (AssertionError, ValueError, mx.base.MXNetError) as e:
        raise ImcapError("%s does not fit the model: %s" % (path, str(e).strip().splitlines()[0]))


def load_model(model_dir: str, params_name: str = C.PARAMS_BEST_NAME, ctx: Union[mx.Context, List, None] = None
               ) -> Tuple[CaptionModel, Any]:
    """Load a model dir's config, vocabulary and parameters.

    :return: ``(model, vocab)``; the model is hybridized for search.
    :raises ImcapError: if a file of the model dir is missing.
    """
    from .vocab import load_vocab
    ctx = ctx or mx.cpu()
    for name in (C.CONFIG_NAME, C.VOCAB_TRG_NAME, params_name):
        check_condition(os.path.isfile(os.path.join(model_dir, name)), "%s: not a model dir (no %s)"
                        % (model_dir, name))
    config = ModelConfig.load(os.path.join(model_dir, C.CONFIG_NAME))
    vocab = load_vocab(os.path.join(model_dir, C.VOCAB_TRG_NAME))
    model = CaptionModel(config, prefix="model_")
    load_params(model, os.path.join(model_dir, params_name), ctx)
    model.hybridize()
    return model, vocab
