"""Self-critical sequence training (Rennie et al. 2017, "Self-critical Sequence Training for Image Captioning"):
fine-tune a captioning model for CIDEr-D by REINFORCE on captions sampled from the model itself.

Per image, :class:`SelfCritical` samples several captions, rewards each with its CIDEr-D (:mod:`imcap.reward`)
against the image's training references, and takes as the baseline of a caption the mean reward of the other
samples of the same image (Luo 2020, "A Better Variant of Self-Critical Sequence Training"). The Trainer
(:mod:`imcap.training`) feeds it batches of images and steps the optimizer on the gradients it records.
"""
from typing import List, NamedTuple, Sequence

import gluonnlp as nlp
import mxnet as mx
import numpy as np
from mxnet import autograd

from . import constants as C
from .data import ImageBatch
from .loss import policy_gradient_loss
from .model import CaptionModel
from .reward import CiderD
from .utils import check_condition
from .vocab import ids_to_tokens, never_generated_bias


def leave_one_out_baseline(rewards: np.ndarray) -> np.ndarray:
    """The baseline of each sample: the mean reward of the other samples of its image (Luo 2020).

    :param rewards: ``(images, samples)`` rewards, ``samples >= 2``.
    :return: ``(images, samples)`` baselines.
    :raises ImcapError: with fewer than 2 samples per image.
    """
    k = rewards.shape[1]
    check_condition(k >= 2, "the leave-one-out baseline needs at least 2 samples per image, not %d" % k)
    return (rewards.sum(axis=1, keepdims=True) - rewards) / (k - 1)


def gumbel_max_sample(logits: mx.nd.NDArray) -> mx.nd.NDArray:
    """One index per row of ``logits (rows, n)``, drawn from ``softmax(logits)`` by the Gumbel-max trick (Gumbel 1954;
    Maddison et al. 2014): ``argmax(logits + G)`` with ``G = -log(-log(U))``, ``U`` uniform (MXNet's generator).

    Unlike ``mx.nd.random.multinomial`` on the softmax, whose float32 cumulative sum can end below the uniform draw
    and then return ``n``, an index that does not exist, it always returns an index ``< n`` and never one whose logit
    is ``-1e9`` below the others. ``U`` starts at 1e-7, so ``G >= -2.78`` (a cut of probability 1e-7).

    :return: ``(rows,)`` float32 indices.
    """
    uniform = mx.nd.random.uniform(low=1e-7, high=1.0, shape=logits.shape, ctx=logits.context)
    return mx.nd.argmax(logits - mx.nd.log(-mx.nd.log(uniform)), axis=-1)


class SelfCriticalStats(NamedTuple):
    """What one self-critical forward/backward pass saw: the number of sampled captions, the summed negative
    log-likelihood of their tokens (nats) and the number of those tokens (``</s>`` included), and their summed
    reward (CIDEr-D, 0-10 per caption)."""
    captions: int
    nll: float
    tokens: int
    reward: float


class SelfCritical:
    """Samples captions, rewards them and records the policy-gradient loss's gradients on ``model``.

    :param model: the model being trained (initialized on ``ctx``).
    :param vocab: its target vocabulary.
    :param references: per training image, its reference captions as word ids (without ``<s>``/``</s>``), e.g.
        :attr:`imcap.data.ImageBatcher.references`; the CIDEr-D document frequencies come from all of them.
    :param samples: captions sampled per image (>= 2).
    :param max_length: the longest sampled caption (tokens, ``</s>`` included).
    :param ctx: the (single) device.
    :raises ImcapError: with fewer than 2 samples per image.
    :raises ValueError: without references.
    """

    def __init__(self, model: CaptionModel, vocab: nlp.Vocab, references: Sequence[Sequence[Sequence[int]]],
                 samples: int, max_length: int, ctx: mx.Context) -> None:
        check_condition(samples >= 2, "self-critical training needs at least 2 samples per image, not %d" % samples)
        self.model = model
        self.vocab = vocab
        self.samples = samples
        self.max_length = max_length
        self.ctx = ctx
        self.reward = CiderD([[ids_to_tokens(vocab, ref) for ref in refs] for refs in references])
        # -1e9 for the words the policy never writes, 0 for the others: (1, vocab)
        self.blocked = mx.nd.array(never_generated_bias(vocab, -1e9), ctx=ctx)

    def sample(self, features: mx.nd.NDArray, repeats: int = 1) -> np.ndarray:
        """Sample ``repeats`` captions per image of ``features (images, regions, dim)`` from the model (no
        dropout), word by word from the softmax over the words other than ``<s>``, ``<pad>`` and ``<unk>``
        (:func:`gumbel_max_sample`, MXNet's random generator). Each image is encoded once; its states are repeated.

        :return: ``(images * repeats, length)`` int32 word ids, each image's captions in turn (``np.repeat`` order),
            each ended by ``</s>`` (unless cut at ``max_length``) and padded with 0 after it;
            ``length <= max_length``.
        """
        vocab, ctx = self.vocab, self.ctx
        eos = vocab[C.EOS_SYMBOL]
        rows = features.shape[0] * repeats
        static, dynamic = self.model.encode(features)
        if repeats > 1:
            static = [s.repeat(repeats, axis=0) for s in static]
            dynamic = [d.repeat(repeats, axis=0) for d in dynamic]
        prev = mx.nd.full((rows,), vocab[C.BOS_SYMBOL], ctx=ctx, dtype=np.float32)
        finished = np.zeros(rows, dtype=bool)
        words: List[np.ndarray] = []
        for _ in range(self.max_length):
            log_probs, _, dynamic = self.model.step(prev, static, dynamic)
            drawn = gumbel_max_sample(mx.nd.broadcast_add(log_probs, self.blocked)).asnumpy().astype(np.int32)
            drawn[finished] = 0
            words.append(drawn)
            finished |= drawn == eos
            if finished.all():
                break
            prev = mx.nd.array(drawn, ctx=ctx, dtype=np.float32)
        return np.stack(words, axis=1)

    def forward_backward(self, batch: ImageBatch) -> SelfCriticalStats:
        """Record the gradients of one self-critical update on a batch of images: sample ``samples`` captions per
        image, reward each with its CIDEr-D against the image's references, and back-propagate
        ``-(reward - baseline) * log p(caption)`` averaged over the captions (:func:`policy_gradient_loss`). The
        log-probabilities are those of the policy that sampled: no dropout, and a softmax over the words it may
        write (with the full softmax, pushing sampled words down would pile probability onto ``<pad>``, ``<s>``
        and ``<unk>``, which are never sampled and so never pushed down). The caller steps the optimizer.

        :param batch: ``features (images, regions, dim)`` and the images' numbers in ``references``.
        """
        k, ctx = self.samples, self.ctx
        features = mx.nd.array(batch.features, ctx=ctx)                        # (images, regions, dim)
        images = np.repeat(batch.images, k)
        sampled = self.sample(features, k)                                     # (images * k, length)
        captions = [ids_to_tokens(self.vocab, row) for row in sampled]
        rewards = self.reward.scores(images.tolist(), captions).reshape(-1, k)         # (images, k)
        advantage = mx.nd.array((rewards - leave_one_out_baseline(rewards)).reshape(-1), ctx=ctx)   # (images * k,)
        target_in = np.concatenate([np.full((len(sampled), 1), self.vocab[C.BOS_SYMBOL], dtype=np.int32),
                                    sampled[:, :-1]], axis=1)
        with autograd.record(train_mode=False):
            logits, _ = self.model(features, mx.nd.array(target_in, ctx=ctx), k)
            loss, nll = policy_gradient_loss(logits, mx.nd.array(sampled, ctx=ctx), advantage, self.blocked)
        loss.backward()
        return SelfCriticalStats(captions=len(sampled), nll=float(nll.asscalar()), tokens=int((sampled != 0).sum()),
                                 reward=float(rewards.sum()))
