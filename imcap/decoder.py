"""The decoder contract and the registry of decoders (after Sockeye's ``decoder.py``: ``Decoder.register`` /
``get_decoder``; GluonNLP's ``Seq2SeqDecoder``).

Every decoder keeps one contract, so that training, beam search, ensembles and scoring never ask which one they
hold:

* :meth:`Decoder.init_state` ``(encoded)``: ``(batch, regions, encoder_hidden)`` → ``(static, dynamic)`` lists of
  arrays whose first axis is the batch. ``static`` states (e.g. attention keys) depend on the image only, so beam
  search repeats them once and never reorders them; ``dynamic`` states (recurrent state, caches of the prefix) are
  reordered along with the hypotheses (``take`` along axis 0). A dynamic state may grow along another axis from
  step to step (the Transformer's self-attention cache).
* :meth:`Decoder.init_state_graph` ``(F, encoded)``: the same in any graph (``F`` is ``mx.nd`` or ``mx.sym``); the
  model's hybridized encode graph calls it.
* :meth:`Decoder.step` ``(embedded, static, dynamic)``: one target position ``(batch, embed)`` → ``(output (batch,
  out), attention (batch, regions), new dynamic)``, in any graph (the hybridized search step calls it).
* :meth:`Decoder.decode_sequence` ``(embedded, static, dynamic)``: a whole target prefix ``(batch, length, embed)``
  → ``(outputs (batch, length, out), attention (batch, length, regions))``, equal to stepping through it.
* :meth:`Decoder.hybridize_sequence` ``(active, **kwargs)``: hybridize what ``decode_sequence`` runs (training).

:class:`BlockDecoder` is the base of decoders that decode a block of positions at once (Transformer, ConvS2S): a
step is ``decode_sequence`` of length one, written once there.

Registered decoders: ``rnn`` (:mod:`imcap.rnn`; Show, Attend and Tell, or Show and Tell), ``transformer``
(:mod:`imcap.transformer`) and ``cnn`` (:mod:`imcap.convolution`). Each config has ``num_embed`` and
``output_num_hidden`` (the size of the output, the vocabulary projection's input) and a classmethod
``from_options(options)`` that builds it from ``imcap.train``'s options, so the CLI needs no list of decoders.
"""
import abc
from typing import Any, Dict, List, Tuple, Type

from mxnet.gluon import HybridBlock

from . import layers
from .config import Config
from .utils import ImcapError, check_condition


class Decoder(HybridBlock, metaclass=abc.ABCMeta):
    """Base of all decoders; see the module docstring for the contract.

    :attr num_static_states: number of static states :meth:`init_state` returns.
    :attr num_dynamic_states: number of dynamic states.
    """

    _registry: Dict[Type[Config], Tuple[str, Type["Decoder"]]] = {}

    num_dynamic_states: int = 0
    num_static_states: int = 0

    @classmethod
    def register(cls, config_type: Type[Config], name: str):
        """Class decorator: decoders of ``config_type`` are built by :func:`get_decoder`, and chosen on the command
        line as ``--decoder name``."""
        def wrapper(decoder_cls):
            cls._registry[config_type] = (name, decoder_cls)
            return decoder_cls
        return wrapper

    def init_state(self, encoded) -> Tuple[List, List]:
        """Initial ``(static, dynamic)`` states of ``encoded (batch, regions, encoder_hidden)`` (NDArray or Symbol)."""
        return self.init_state_graph(layers.symbol_or_ndarray(encoded), encoded)

    @abc.abstractmethod
    def init_state_graph(self, F, encoded) -> Tuple[List, List]:
        """:meth:`init_state` with the graph namespace ``F`` (``mx.nd`` or ``mx.sym``) given."""

    @abc.abstractmethod
    def step(self, embedded, static: List, dynamic: List) -> Tuple[Any, Any, List]:
        """One position: ``embedded (batch, embed)`` → ``(output (batch, out), attention (batch, regions),
        new dynamic states)``."""

    @abc.abstractmethod
    def decode_sequence(self, embedded, static: List, dynamic: List) -> Tuple[Any, Any]:
        """Teacher forcing: ``embedded (batch, length, embed)`` → ``(outputs (batch, length, out), attention
        (batch, length, regions))``, equal to :meth:`step` through the positions."""

    def hybridize_sequence(self, active: bool = True, **kwargs) -> None:
        """Hybridize what :meth:`decode_sequence` runs; by default the whole decoder, whose ``hybrid_forward``
        decodes a sequence."""
        self.hybridize(active, **kwargs)


class BlockDecoder(Decoder):
    """A decoder that decodes a block of positions at once, after a prefix its dynamic states hold (Transformer,
    ConvS2S). Subclasses write :meth:`decode_block`; a step is a block of length one, and a sequence is one block
    with a causal mask. The first static state (the encoded regions) is not an input of the graph: only what
    :meth:`init_state_graph` projects from it is."""

    @abc.abstractmethod
    def decode_block(self, F, embedded, static: List, dynamic: List, causal: bool) -> Tuple[Any, Any, List]:
        """``embedded (batch, L, embed)`` after the prefix in ``dynamic`` → ``(outputs (batch, L, out), attention
        (batch, L, regions), new dynamic)``; ``causal`` masks later positions of the block (needless when L = 1).
        ``static[0]`` is ``None`` here."""

    def step(self, embedded, static, dynamic):
        """One position: :meth:`decode_block` of length one, without a mask (the one query sees the whole
        prefix)."""
        F = layers.symbol_or_ndarray(embedded)
        outputs, attention, dynamic = self.decode_block(F, F.expand_dims(embedded, axis=1), [None] + static[1:],
                                                        dynamic, False)
        return F.squeeze(outputs, axis=1), F.squeeze(attention, axis=1), dynamic

    def decode_sequence(self, embedded, static, dynamic):
        """All positions at once with a causal mask (the hybridized :meth:`hybrid_forward`)."""
        return self(embedded, *static[1:], *dynamic)

    def hybrid_forward(self, F, embedded, *states):
        n = self.num_static_states - 1
        static, dynamic = [None] + list(states[:n]), list(states[n:])
        outputs, attention, _ = self.decode_block(F, embedded, static, dynamic, True)
        return outputs, attention


def get_decoder(config: Config, prefix: str = "decoder_") -> Decoder:
    """Build the decoder registered for ``type(config)``.

    :raises ImcapError: if no decoder is registered for it.
    """
    check_condition(type(config) in Decoder._registry, "no decoder for config %s" % type(config).__name__)
    return Decoder._registry[type(config)][1](config, prefix=prefix)


def decoder_name(config: Config) -> str:
    """Registered name (``--decoder`` choice) of a decoder config."""
    return Decoder._registry[type(config)][0]


def decoder_names() -> List[str]:
    """The registered decoder names, in registration order (the ``--decoder`` choices)."""
    return [name for name, _ in Decoder._registry.values()]


def decoder_config_type(name: str) -> Type[Config]:
    """Config type registered under ``name``.

    :raises KeyError: if no decoder has that name.
    """
    for config_type, (registered, _) in Decoder._registry.items():
        if registered == name:
            return config_type
    raise KeyError(name)


def decoder_config_from_options(name: str, options: Any) -> Config:
    """The config of decoder ``name`` that ``imcap.train``'s options describe (``options``: any object with those
    attribute names, e.g. the parsed command line).

    :raises ImcapError: on an unknown name, or options the decoder refuses.
    """
    try:
        config_type: Any = decoder_config_type(name)
    except KeyError:
        raise ImcapError("unknown decoder %r (known: %s)" % (name, ", ".join(decoder_names())))
    return config_type.from_options(options)
