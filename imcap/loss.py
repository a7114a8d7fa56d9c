"""Training losses: token cross-entropy with label smoothing and the doubly-stochastic attention penalty (teacher
forcing), and the policy-gradient loss of self-critical sequence training.

Both work on whole padded batches: id 0 (``<pad>``) in the target marks the positions that do not count.
"""
from typing import Tuple

import mxnet as mx


def sequence_loss(logits: mx.nd.NDArray, attention: mx.nd.NDArray, target_out: mx.nd.NDArray,
                  label_smoothing: float, attention_weight: float) -> Tuple[mx.nd.NDArray, mx.nd.NDArray]:
    """Summed token cross-entropy (with label smoothing, Szegedy et al. 2016) plus the doubly-stochastic attention
    penalty ``attention_weight * sum_r (1 - sum_t a_tr)^2`` (Xu et al. 2015, eq. 14), and the summed negative
    log-likelihood.

    :param logits: ``(batch, length, vocab)`` unnormalized scores.
    :param attention: ``(batch, length, regions)`` attention weights of each target position.
    :param target_out: ``(batch, length)`` word ids, 0 = padding (not counted).
    :param label_smoothing: the share ``eps`` (0-1) of the target's probability spread uniformly over the vocabulary:
        the loss of a token is ``(1 - eps) * nll - eps * mean log p``.
    :param attention_weight: weight of the attention penalty (0: none).
    :return: ``(loss to minimize, nll)``, both scalars ``(1,)`` summed over the batch's tokens (nats).
    """
    log_probs = mx.nd.log_softmax(logits, axis=-1)
    mask = target_out != 0
    nll = -mx.nd.pick(log_probs, target_out, axis=-1) * mask
    loss = nll
    if label_smoothing > 0:
        vocab = log_probs.shape[-1]
        ones = mx.nd.ones((vocab, 1), ctx=log_probs.context) / vocab
        mean = mx.nd.dot(log_probs, ones).reshape(nll.shape)  # a GEMM: MXNet's CPU mean is much slower
        loss = (1 - label_smoothing) * nll - label_smoothing * mean * mask
    loss = mx.nd.sum(loss)
    if attention_weight > 0:  # Xu et al. 2015, eq. 14: every region should get attention over the caption
        coverage = mx.nd.sum(attention * mx.nd.expand_dims(mask, axis=2), axis=1)   # (batch, regions)
        loss = loss + attention_weight * mx.nd.sum(mx.nd.square(1 - coverage))
    return loss, mx.nd.sum(nll)


def policy_gradient_loss(logits: mx.nd.NDArray, sampled: mx.nd.NDArray, advantage: mx.nd.NDArray,
                         blocked: mx.nd.NDArray) -> Tuple[mx.nd.NDArray, mx.nd.NDArray]:
    """REINFORCE with a baseline (Williams 1992; Rennie et al. 2017): ``-mean_i (advantage_i * log p(caption_i))``,
    whose gradient is ``-(reward - baseline) * grad log p(caption)`` averaged over the captions.

    The policy is the softmax of ``logits + blocked``: with ``blocked`` -1e9 for the words the sampler never writes
    (``<s>``, ``<pad>``, ``<unk>``), it is the distribution the captions were drawn from.

    :param logits: ``(captions, length, vocab)`` scores of the sampled captions under teacher forcing.
    :param sampled: ``(captions, length)`` the sampled word ids (``</s>`` included), 0 = padding (not counted).
    :param advantage: ``(captions,)`` reward minus baseline of each caption.
    :param blocked: ``(1, vocab)``: 0 for the words the policy may write, -1e9 for the others.
    :return: ``(loss to minimize, nll)``: the loss ``(1,)`` and the summed negative log-likelihood ``(1,)`` of the
        sampled tokens under the policy (nats).
    """
    mask = sampled != 0
    policy = mx.nd.log_softmax(mx.nd.broadcast_add(logits, mx.nd.expand_dims(blocked, 0)), axis=-1)
    token_log_probs = mx.nd.pick(policy, sampled, axis=-1) * mask
    loss = -mx.nd.sum(mx.nd.sum(token_log_probs, axis=1) * advantage) / sampled.shape[0]
    return loss, -mx.nd.sum(token_log_probs)
