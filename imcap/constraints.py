"""Lexical constraints for beam search: phrases a caption must contain (positive constraints) and phrases it must
not contain (negative constraints), kept as numpy arrays over every hypothesis of a batch.

Positive constraints are met by dynamic beam allocation (Post & Vilar 2018, NAACL, "Fast Lexically Constrained
Decoding with Dynamic Beam Allocation for Neural Machine Translation"): at each step the candidates of an image are
the best ``beam`` continuations of its whole beam, each hypothesis's next constraint word(s) and each hypothesis's
best single continuation; a candidate's *bank* is the number of constraint words its hypothesis has met, and the
beam is shared out among the banks so that hypotheses that met more constraints are not crowded out by likelier
ones that met fewer. ``</s>`` is only allowed once every constraint is met, and a phrase once begun must be
continued word by word or its progress is undone. A constraint may be disjunctive, a set of alternative phrases of
which one must occur (``cat`` or ``kitten``), as the class constraints of Anderson et al. 2017 (EMNLP, "Guided Open
Vocabulary Image Captioning with Constrained Beam Search") are; its met alternative counts the length of its longest
one in the bank, so that banks stay comparable however the constraint is met. The bookkeeping is vectorized over
the batch as Hu et al. 2019, NAACL ("Improved Lexically Constrained Decoding for Translation and Monolingual
Rewriting") do it on a GPU: each image's phrases (every alternative's) are flattened into constraint *slots* (one per
word, labelled with their constraint), each hypothesis carries a ``met`` bit per slot
and the slot of the word its open phrase expects next, and the banks are filled round-robin over a sort of all
candidates (:func:`allocate_banks`); no Python loop runs over hypotheses or words.

Negative constraints: the avoided phrases of an image form a trie with Aho-Corasick failure links
(:class:`AvoidTrie`); each hypothesis carries its node (the longest end of its words that begins an avoided phrase),
which is reordered with the beam, and every word that would complete an avoided phrase from there is blocked.

The pieces, each tested alone (``test/unit/test_constraints.py``): :class:`RequiredPhrases` (slots, progress and
undo), :func:`allocate_banks`, :class:`AvoidTrie`, and :class:`SearchConstraints`, which joins them for one batch
search of :class:`imcap.beam_search.BeamSearch`.

Phrases here are lists of word ids; :mod:`imcap.inference` tokenizes text phrases, checks them and reports on them.
"""
import collections
from typing import Any, Dict, FrozenSet, List, Optional, Sequence, Set, Tuple, Union

import numpy as np

NEG_INF = -1e30  # the score of a forbidden word (imcap.beam_search uses the same)

Phrase = Sequence[int]


def count_occurrences(tokens: Sequence, phrase: Sequence) -> int:
    """How often ``phrase`` occurs in ``tokens`` as consecutive items, overlapping occurrences counted apart
    (``"a a"`` occurs twice in ``"a a a"``); an empty phrase occurs 0 times."""
    n = len(phrase)
    if n == 0:
        return 0
    tokens, phrase = list(tokens), list(phrase)
    return sum(1 for i in range(len(tokens) - n + 1) if tokens[i:i + n] == phrase)


def contains(tokens: Sequence, phrase: Sequence) -> bool:
    """Whether ``phrase`` (non-empty) occurs in ``tokens`` as consecutive items."""
    return count_occurrences(tokens, phrase) > 0


def conflicting(avoided: Sequence[Phrase], required: Sequence[Phrase]) -> List[int]:
    """Indexes of the ``avoided`` phrases that occur inside one of the ``required`` phrases (a caption cannot both
    contain the required phrase and avoid such a phrase): ``["red"]`` conflicts with ``["a", "red", "car"]``."""
    return [i for i, phrase in enumerate(avoided) if any(contains(req, phrase) for req in required)]


def _inner_phrases(phrases: Sequence[Phrase]) -> Set[Tuple[int, ...]]:
    """Every run of consecutive words inside ``phrases``, as tuples (the phrases that conflict with them)."""
    return {tuple(int(w) for w in p[i:j]) for p in phrases for i in range(len(p)) for j in range(i + 1, len(p) + 1)}


def _csr(lists: Sequence[Sequence[int]]) -> Tuple[np.ndarray, np.ndarray]:
    """``(indptr, values)`` of a list of int lists: list ``i`` is ``values[indptr[i]:indptr[i + 1]]``."""
    indptr = np.zeros(len(lists) + 1, dtype=np.int64)
    indptr[1:] = np.cumsum([len(x) for x in lists])
    values = np.array([v for x in lists for v in x], dtype=np.int64)
    return indptr, values


def _csr_gather(indptr: np.ndarray, values: np.ndarray, items: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """For each position ``j`` of ``items``, every value of list ``items[j]``: ``(positions, values)``, flat."""
    starts = indptr[items]
    counts = indptr[items + 1] - starts
    positions = np.repeat(np.arange(len(items)), counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    return positions, values[np.repeat(starts, counts) + offsets]


class AvoidTrie:
    """The avoided phrases of several sets (one set per image, or one for the global avoid list), as one forest of
    tries with Aho-Corasick failure links (Aho & Corasick 1975), so that one node per hypothesis says how much of
    every avoided phrase its last words make up, however the phrases overlap.

    A hypothesis's *state* is a node: the longest end of its words that is the beginning of an avoided phrase of its
    set (the set's root when none is); ``-1`` is the state of a hypothesis this trie does not apply to. States of
    many hypotheses are int64 arrays ``(rows,)``.

    :param phrase_sets: per set, its phrases (non-empty word id lists; empty ones are ignored).
    """

    def __init__(self, phrase_sets: Sequence[Sequence[Phrase]]) -> None:
        children: List[Dict[int, int]] = []
        terminal: List[bool] = []
        depth: List[int] = []

        def new_node(d: int) -> int:
            children.append({})
            terminal.append(False)
            depth.append(d)
            return len(children) - 1

        roots = []
        for phrases in phrase_sets:
            root = new_node(0)
            roots.append(root)
            for phrase in phrases:
                if len(phrase) == 0:
                    continue
                node = root
                for word in phrase:
                    word = int(word)
                    if word not in children[node]:
                        children[node][word] = new_node(depth[node] + 1)
                    node = children[node][word]
                terminal[node] = True
        fail = [-1] * len(children)
        root_of = [0] * len(children)
        for root in roots:  # breadth first: a node's failure link is set before its children's
            queue = collections.deque([root])
            while queue:
                node = queue.popleft()
                root_of[node] = root
                for word, child in children[node].items():
                    link = fail[node]
                    while link != -1 and word not in children[link]:
                        link = fail[link]
                    fail[child] = children[link][word] if link != -1 else root
                    queue.append(child)
        self.roots = np.array(roots, dtype=np.int64)
        self.num_nodes = len(children)
        self.max_depth = max(depth, default=0)
        self.fail = np.array(fail + [-1], dtype=np.int64)  # one spare entry: fail[-1] is -1
        self.root_of = np.array(root_of + [-1], dtype=np.int64)
        # the words that complete a phrase from each node (without following its failure links)
        self.ends_indptr, self.ends = _csr([sorted(w for w, c in children[n].items() if terminal[c])
                                            for n in range(len(children))])
        # the trie's edges (node, word) → child, as sorted keys node * num_words + word for np.searchsorted
        self.num_words = 1 + max((w for c in children for w in c), default=-1)
        edges = sorted((n * self.num_words + w, c) for n in range(len(children)) for w, c in children[n].items())
        self.edge_keys = np.array([k for k, _ in edges], dtype=np.int64)
        self.edge_child = np.array([c for _, c in edges], dtype=np.int64)

    def start(self, sets: np.ndarray) -> np.ndarray:
        """The states ``(rows,)`` of hypotheses with no word yet: the root of each row's set, ``-1`` where
        ``sets (rows,)`` is negative (the trie does not apply to that row)."""
        sets = np.asarray(sets, dtype=np.int64)
        return np.where(sets >= 0, self.roots[np.maximum(sets, 0)] if len(self.roots) else -1, -1)

    def _child(self, nodes: np.ndarray, words: np.ndarray) -> np.ndarray:
        """The child of each node along each word, or ``-1`` (``nodes``, ``words``: ``(n,)``, nodes >= 0)."""
        if len(self.edge_keys) == 0:
            return np.full(len(nodes), -1, dtype=np.int64)
        inside = (words >= 0) & (words < self.num_words)
        keys = np.where(inside, nodes * self.num_words + words, -1)
        at = np.minimum(np.searchsorted(self.edge_keys, keys), len(self.edge_keys) - 1)
        return np.where(inside & (self.edge_keys[at] == keys), self.edge_child[at], -1)

    def advance(self, states: np.ndarray, words: np.ndarray) -> np.ndarray:
        """The states ``(rows,)`` after each row appends its word ``words (rows,)`` (states of ``-1`` stay ``-1``).

        The Aho-Corasick transition: the child along the word of the longest node on the row's failure chain that
        has one, else the set's root; a loop over at most the trie's depth, vectorized over rows.
        """
        states = np.asarray(states, dtype=np.int64)
        words = np.asarray(words, dtype=np.int64)
        result = np.full(len(states), -1, dtype=np.int64)
        current = states.copy()
        for _ in range(self.max_depth + 1):
            todo = np.nonzero(current >= 0)[0]
            if len(todo) == 0:
                break
            child = self._child(current[todo], words[todo])
            found = child >= 0
            result[todo[found]] = child[found]
            current[todo[found]] = -1
            current[todo[~found]] = self.fail[current[todo[~found]]]
        lost = (result < 0) & (states >= 0)
        result[lost] = self.root_of[states[lost]]
        return result

    def blocked(self, states: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """The words each row must not write next because they would complete an avoided phrase:
        ``(rows, words)``, two flat int64 arrays of the same length (a row appears once per word it may not write;
        the same pair may appear twice)."""
        states = np.asarray(states, dtype=np.int64)
        rows, words = [], []
        current, index = states, np.arange(len(states))
        for _ in range(self.max_depth + 1):  # every node on the failure chain: every end of the row's words
            live = current >= 0
            current, index = current[live], index[live]
            if len(current) == 0:
                break
            positions, ends = _csr_gather(self.ends_indptr, self.ends, current)
            rows.append(index[positions])
            words.append(ends)
            current = self.fail[current]
        if not rows:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        return np.concatenate(rows), np.concatenate(words)


Constraint = Sequence[Phrase]  # the alternatives of one constraint: met by any one of these phrases


def as_alternatives(constraint: Union[Phrase, Constraint]) -> List[List[int]]:
    """One constraint as its list of alternatives: a phrase (word ids) is a constraint with one alternative; a list of
    phrases is a disjunctive constraint, met by any one of them (``[[cat], [kitten]]``).

    :raises ValueError: for an empty constraint or phrase, or one that mixes word ids and phrases.
    """
    items: List[Any] = list(constraint)
    if not items:
        raise ValueError("a required phrase needs at least one word")
    lists = [isinstance(item, (list, tuple, np.ndarray)) for item in items]
    if all(lists):
        alternatives = [[int(w) for w in item] for item in items]
    elif not any(lists):
        alternatives = [[int(w) for w in items]]
    else:
        raise ValueError("a constraint is a phrase (word ids) or a list of phrases, not a mix: %r" % (items,))
    if any(len(a) == 0 for a in alternatives):
        raise ValueError("a required phrase needs at least one word")
    return alternatives


class RequiredPhrases:
    """The required constraints of a batch of images, flattened per image into constraint *slots*, one per word of
    each alternative phrase.

    A constraint is a phrase, or (disjunctive) a set of alternative phrases of which the caption must contain one, as
    Anderson et al. 2017 (EMNLP, "Guided Open Vocabulary Image Captioning with Constrained Beam Search") require one
    of a class's words. A hypothesis's *bank* (:meth:`banks`) counts its progress in constraint words, as Post &
    Vilar's does: a met constraint counts its *weight*, the length of its longest alternative, and the phrase a
    hypothesis is in the middle of counts its words met so far (fewer than the weight); with one alternative per
    constraint this is the number of constraint words met.

    Arrays (``batch`` images, ``slots`` = the most alternatives' words of an image of the batch, at least 1; slots past
    an image's words are padding):

    * ``words (batch, slots)`` int64: the word id of each slot (``-1`` for padding);
    * ``phrase (batch, slots)`` int64: the index of the slot's alternative among all its image's alternatives (``-1``);
    * ``group (batch, slots)`` int64: the index of the slot's constraint among its image's constraints (``-1``);
    * ``begin (batch, slots)`` int64: the slot of the first word of the slot's alternative (``0`` for padding);
    * ``first``, ``last`` ``(batch, slots)`` bool: the slot holds the first, the last word of its alternative;
    * ``weight (batch, groups)`` int64: each constraint's weight (0 past an image's constraints);
    * ``num_groups (batch,)`` int64: the constraints of each image;
    * ``num_words (batch,)`` int64: the sum of each image's weights (its top bank).

    A hypothesis's progress is ``met (rows, slots)`` bool, the slots its words have met, and ``pending (rows,)``
    int64, the slot of the next word of the phrase it is in the middle of (``-1``: none). ``images (rows,)`` says
    which image each row belongs to. A constraint is met once every slot of one of its alternatives is (its last
    slot is: an alternative's slots are met in order and undone together).

    :param constraints: per image, its required constraints: each a phrase (a non-empty word id list) or a list of
        alternative phrases (see :func:`as_alternatives`). The same constraint given twice must be met twice.
    :raises ValueError: for an empty phrase or constraint.
    """

    def __init__(self, constraints: Sequence[Sequence[Union[Phrase, Constraint]]]) -> None:
        batch = len(constraints)
        images = [[as_alternatives(c) for c in image] for image in constraints]
        slots = max([sum(len(p) for c in image for p in c) for image in images] + [1])
        groups = max([len(image) for image in images] + [1])
        self.words = np.full((batch, slots), -1, dtype=np.int64)
        self.phrase = np.full((batch, slots), -1, dtype=np.int64)
        self.group = np.full((batch, slots), -1, dtype=np.int64)
        self.begin = np.zeros((batch, slots), dtype=np.int64)
        self.first = np.zeros((batch, slots), dtype=bool)
        self.last = np.zeros((batch, slots), dtype=bool)
        self.weight = np.zeros((batch, groups), dtype=np.int64)
        self.num_groups = np.array([len(image) for image in images], dtype=np.int64).reshape(batch)
        for i, image in enumerate(images):
            slot, number = 0, 0
            for g, alternatives in enumerate(image):
                self.weight[i, g] = max(len(p) for p in alternatives)
                for phrase in alternatives:
                    n = len(phrase)
                    self.words[i, slot:slot + n] = phrase
                    self.phrase[i, slot:slot + n] = number
                    self.group[i, slot:slot + n] = g
                    self.begin[i, slot:slot + n] = slot
                    self.first[i, slot] = True
                    self.last[i, slot + n - 1] = True
                    slot, number = slot + n, number + 1
        self.num_words = self.weight.sum(axis=1)

    @property
    def num_slots(self) -> int:
        return self.words.shape[1]

    def start(self, images: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """``(met, pending)`` of hypotheses with no word yet, one row per entry of ``images (rows,)``."""
        rows = len(images)
        return np.zeros((rows, self.num_slots), dtype=bool), np.full(rows, -1, dtype=np.int64)

    def groups_met(self, met: np.ndarray, images: np.ndarray) -> np.ndarray:
        """``(rows, groups)`` bool: the constraints each row has met (one of their alternatives in full)."""
        out = np.zeros((len(images), self.weight.shape[1] + 1), dtype=bool)   # a spare column for padding's -1
        rows, slots = np.nonzero(met & self.last[images])
        out[rows, self.group[images[rows], slots]] = True
        return out[:, :-1]

    def banks(self, met: np.ndarray, pending: np.ndarray, images: np.ndarray) -> np.ndarray:
        """``(rows,)`` int64: each row's bank, the weights of the constraints it has met plus the words met of the
        phrase it is in the middle of."""
        done = self.groups_met(met, images)
        banks = (done * self.weight[images]).sum(axis=1)
        busy = pending >= 0
        rows = np.nonzero(busy)[0]
        at = pending[rows]
        still_open = ~done[rows, self.group[images[rows], at]]
        banks[rows[still_open]] += at[still_open] - self.begin[images[rows], at][still_open]
        return banks

    def all_met(self, met: np.ndarray, images: np.ndarray) -> np.ndarray:
        """``(rows,)`` bool: the row has met every constraint of its image."""
        return self.groups_met(met, images).sum(axis=1) == self.num_groups[images]

    def _open_firsts(self, met: np.ndarray, images: np.ndarray) -> np.ndarray:
        """``(rows, slots)`` bool: the first slots of the alternatives of the constraints each row has not met."""
        done = np.concatenate([self.groups_met(met, images), np.ones((len(images), 1), dtype=bool)], axis=1)
        slot_done = np.take_along_axis(done, np.where(self.group[images] >= 0, self.group[images], -1), axis=1)
        return self.first[images] & ~slot_done

    def allowed(self, met: np.ndarray, pending: np.ndarray, images: np.ndarray) -> np.ndarray:
        """The slots whose word would advance each row, ``(rows, slots)`` bool: the next word of the phrase a row
        is in the middle of, else the first word of each alternative of the constraints it has not met."""
        busy = pending >= 0
        continuing = busy[:, None] & (np.arange(self.num_slots)[None, :] == pending[:, None])
        starting = ~busy[:, None] & self._open_firsts(met, images)
        return continuing | starting

    def advance(self, met: np.ndarray, pending: np.ndarray, images: np.ndarray,
                words: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """The progress after each row writes ``words (rows,)``; ``met`` and ``pending`` are not changed.

        A row in the middle of a phrase that writes the phrase's next word meets that slot (and is done with the
        phrase after its last word). Writing another word undoes the phrase: its slots are unmet again. A row not in
        a phrase (or one that just undid it) whose word is the first word of an alternative of a constraint it has
        not met begins that phrase (the first such alternative, when several begin with the word); a one-word
        alternative is met at once.

        :return: ``(met (rows, slots) bool, pending (rows,) int64)``.
        """
        met = met.copy()
        rows = np.arange(len(words))
        slot_words = self.words[images]                                        # (rows, slots)
        busy = pending >= 0
        at = np.maximum(pending, 0)
        continued = busy & (slot_words[rows, at] == words)
        met[rows[continued], at[continued]] = True
        new_pending = np.full(len(words), -1, dtype=np.int64)
        going_on = continued & ~self.last[images, at]
        new_pending[going_on] = at[going_on] + 1
        undone = busy & ~continued
        if undone.any():
            phrases = self.phrase[images]
            met &= ~(undone[:, None] & (phrases == phrases[rows, at][:, None]))
        begins = (~continued)[:, None] & self._open_firsts(met, images) & (slot_words == words[:, None])
        began = begins.any(axis=1)
        slot = begins.argmax(axis=1)
        met[rows[began], slot[began]] = True
        going_on = began & ~self.last[images, slot]
        new_pending[going_on] = slot[going_on] + 1
        return met, new_pending


def allocate_banks(scores: np.ndarray, banks: np.ndarray, valid: np.ndarray, top_bank: np.ndarray,
                   k: int) -> Tuple[np.ndarray, np.ndarray]:
    """Dynamic beam allocation: choose ``k`` of each image's candidates, shared out among the banks.

    The banks take turns, best first within each and the highest bank first in each round (the order of Hu et al.
    2019, which comes to Post & Vilar's equal bank sizes, a bank with too few candidates leaving its places to the
    others): round 1 takes the best candidate of bank ``top_bank``, then of ``top_bank - 1``, ... of bank 0; round 2
    the second best of each; and so on until ``k`` are chosen. With one bank (an image without constraints) this is
    the plain top ``k``.

    :param scores: ``(batch, n)`` the candidates' scores (higher is better).
    :param banks: ``(batch, n)`` int, the constraint words each candidate has met, ``0 .. top_bank``.
    :param valid: ``(batch, n)`` bool, which candidates exist.
    :param top_bank: ``(batch,)`` int, each image's number of constraint words.
    :param k: candidates chosen per image.
    :return: ``(chosen, chosen_valid)``, each ``(batch, k)``: indexes into the ``n`` candidates, in the order
        chosen, and whether each is a valid candidate (an image with fewer than ``k`` valid ones gets invalid ones
        last).
    """
    order = np.argsort(np.where(valid, -scores, np.inf), axis=1, kind="stable")   # best first, invalid last
    banks = np.take_along_axis(banks, order, axis=1)
    valid = np.take_along_axis(valid, order, axis=1)
    num_banks = int(top_bank.max()) + 1
    one_hot = (banks[:, :, None] == np.arange(num_banks)[None, None, :]) & valid[:, :, None]   # (batch, n, banks)
    rank = np.take_along_axis(one_hot.cumsum(axis=1), banks[:, :, None], axis=2)[:, :, 0] - 1  # place in its bank
    key = np.where(valid, rank * num_banks + (top_bank[:, None] - banks), np.iinfo(np.int64).max)
    pick = np.argsort(key, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(order, pick, axis=1), np.take_along_axis(valid, pick, axis=1)


class SearchConstraints:
    """The constraints of one batch search: each image's required phrases, its avoided phrases and the global avoid
    list, with the progress of every hypothesis (rows ``i * beam + j``), reordered with the beam by :meth:`update`.

    An avoided phrase (the image's own or the global list's) that occurs inside one of the image's required phrases
    (any alternative of a disjunctive constraint) is not avoided for that image: the required phrase wins
    (:func:`conflicting`).

    :param required: per image, the constraints its caption must meet: each a phrase (word id list) it must contain,
        or a list of alternative phrases of which it must contain one (:class:`RequiredPhrases`).
    :param avoid: per image, the phrases its caption must not contain, besides the global list.
    :param beam_size: hypotheses per image.
    :param global_avoid: the trie of the global avoid list (one set, see :class:`AvoidTrie`), or None.
    :param global_phrases: the phrases of that list, as tuples (to find those that conflict with an image's
        required phrases).
    """

    def __init__(self, required: Sequence[Sequence[Union[Phrase, Constraint]]], avoid: Sequence[Sequence[Phrase]],
                 beam_size: int,
                 global_avoid: Optional[AvoidTrie] = None, global_phrases: FrozenSet[Tuple[int, ...]] = frozenset()):
        batch = len(required)
        self.batch, self.beam = batch, beam_size
        flat = [[p for c in image for p in as_alternatives(c)] for image in required]  # every alternative phrase
        self.images = np.repeat(np.arange(batch), beam_size)                     # (rows,) image of each row
        self.required: Optional[RequiredPhrases] = None
        if any(len(phrases) > 0 for phrases in required):
            self.required = RequiredPhrases(required)
            self.met, self.pending = self.required.start(self.images)
        own: List[List[Phrase]] = []
        use_global = np.ones(batch, dtype=bool)
        for i in range(batch):
            clash = set(conflicting(avoid[i], flat[i]))
            own.append([phrase for j, phrase in enumerate(avoid[i]) if j not in clash])
            inner = _inner_phrases(flat[i]) if global_avoid is not None else set()
            if inner & global_phrases:
                use_global[i] = False  # this image gets the rest of the global list in a trie of its own
                own[i] += [list(p) for p in sorted(global_phrases - inner)]
        self.global_avoid = global_avoid
        self.global_states: Optional[np.ndarray] = None
        if global_avoid is not None:
            self.global_states = global_avoid.start(np.where(use_global, 0, -1)[self.images])
        self.own_avoid: Optional[AvoidTrie] = None
        self.own_states: Optional[np.ndarray] = None
        if any(own):
            self.own_avoid = AvoidTrie(own)
            self.own_states = self.own_avoid.start(np.array([i if own[i] else -1 for i in range(batch)])[self.images])

    @property
    def has_required(self) -> bool:
        """Whether some image of the batch has required phrases (the search then allocates its beam to banks)."""
        return self.required is not None

    def constrained_images(self) -> np.ndarray:
        """``(batch,)`` bool: the image has required phrases."""
        if self.required is None:
            return np.zeros(self.batch, dtype=bool)
        return self.required.num_words > 0

    def all_met(self) -> np.ndarray:
        """``(rows,)`` bool: the hypothesis has met every required phrase of its image."""
        if self.required is None:
            return np.ones(len(self.images), dtype=bool)
        return self.required.all_met(self.met, self.images)

    def constraint_words(self) -> Tuple[np.ndarray, np.ndarray]:
        """``(rows, words)`` flat: the words that would advance each row on its required phrases."""
        if self.required is None:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        rows, slots = np.nonzero(self.required.allowed(self.met, self.pending, self.images))
        return rows, self.required.words[self.images[rows], slots]

    def block(self, log_probs: np.ndarray, eos: Optional[int]) -> np.ndarray:
        """Forbid, in place, each row's words that would complete an avoided phrase, and ``</s>`` (unless ``eos``
        is None: the last step) in rows that have not met every required phrase.

        :param log_probs: ``(rows, vocab)``; changed in place and returned.
        """
        for trie, states in ((self.global_avoid, self.global_states), (self.own_avoid, self.own_states)):
            if trie is not None and states is not None:
                rows, words = trie.blocked(states)
                inside = words < log_probs.shape[1]
                log_probs[rows[inside], words[inside]] = NEG_INF
        if self.required is not None and eos is not None:
            log_probs[~self.all_met(), eos] = NEG_INF
        return log_probs

    def candidates(self, normalized: np.ndarray, raw: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
        """Dynamic beam allocation of one step: the ``k`` hypotheses each image keeps.

        The candidates of an image are its best ``k`` continuations over the whole beam, each row's words that
        advance its required phrases, and each row's best continuation; duplicates and forbidden candidates (raw
        score at most ``NEG_INF / 2``) dropped; then :func:`allocate_banks` by each candidate's bank
        (:meth:`RequiredPhrases.banks`).

        :param normalized: ``(rows, vocab)`` length-normalized scores of every continuation (what is ranked).
        :param raw: ``(rows, vocab)`` their summed log-probabilities (what says a continuation is forbidden).
        :param k: the beam size.
        :return: ``(best, active)`` each ``(batch, k)``: indexes into each image's ``k * vocab`` continuations (as
            :func:`imcap.beam_search.top_k` gives them) and whether each is a real hypothesis (an image with fewer
            than ``k`` allowed continuations fills its beam with inactive ones).
        :raises ValueError: if no image of the batch has required phrases.
        """
        if self.required is None:
            raise ValueError("dynamic beam allocation needs required phrases")
        batch, vocab = self.batch, normalized.shape[1]
        flat = normalized.reshape(batch, k * vocab)
        top = np.argpartition(-flat, k - 1, axis=1)[:, :k]                   # the best k, in any order
        place = np.arange(batch * k) % k                                        # a row's place in its beam
        best_of_row = (place * vocab + normalized.argmax(axis=1)).reshape(batch, k)
        allowed = self.required.allowed(self.met, self.pending, self.images)   # (rows, slots)
        words = self.required.words[self.images]
        advancing = np.where(allowed, place[:, None] * vocab + words, -1).reshape(batch, -1)
        index = np.sort(np.concatenate([top, best_of_row, advancing], axis=1), axis=1)     # (batch, n)
        valid = (index >= 0) & (np.take_along_axis(raw.reshape(batch, k * vocab), np.maximum(index, 0), axis=1)
                                > NEG_INF / 2)
        valid[:, 1:] &= index[:, 1:] != index[:, :-1]
        origin = (index // vocab + (np.arange(batch) * k)[:, None]).reshape(-1)
        met, pending = self.required.advance(self.met[origin], self.pending[origin], self.images[origin],
                                       (index % vocab).reshape(-1))
        banks = self.required.banks(met, pending, self.images[origin]).reshape(index.shape)
        scores = np.take_along_axis(flat, np.maximum(index, 0), axis=1)
        chosen, active = allocate_banks(scores, banks, valid, self.required.num_words, k)
        best = np.take_along_axis(np.maximum(index, 0), chosen, axis=1)
        return np.where(active, best, best[:, :1]), active  # an inactive place copies the image's first

    def update(self, origin: np.ndarray, words: np.ndarray) -> None:
        """Reorder the hypotheses' progress with the beam: new row ``r`` continues row ``origin[r]`` with
        ``words[r]`` (both ``(rows,)``)."""
        if self.required is not None:
            self.met, self.pending = self.required.advance(self.met[origin], self.pending[origin], self.images, words)
        if self.global_avoid is not None and self.global_states is not None:
            self.global_states = self.global_avoid.advance(self.global_states[origin], words)
        if self.own_avoid is not None and self.own_states is not None:
            self.own_states = self.own_avoid.advance(self.own_states[origin], words)

    def finished_images(self, raw: np.ndarray, normalized: np.ndarray, finished: np.ndarray, nbest: int) -> np.ndarray:
        """The open rows ``(rows,)`` bool of constrained images whose search is over.

        Without constraints a beam search ends when every hypothesis it keeps is finished; with them the lower banks
        are kept whatever their score, and would go on to ``max_output_length``. An image with at least ``nbest``
        finished hypotheses that meet every constraint stops once (a) every open hypothesis that has met every
        constraint scores (length-normalized) below the ``nbest``-th of them, as in a plain beam search, and (b)
        every open hypothesis that has not is already less probable (summed log-probability) than it: such a
        hypothesis still has constraint words to write, which can only lower its log-probability, and could win
        only through the length penalty's reward for length, which in practice means repeating cheap words
        (``"in the water in the water ..."``) before the constraint. Both are exact without a length penalty.

        :param raw: ``(rows,)`` the hypotheses' summed log-probabilities.
        :param normalized: ``(rows,)`` their length-normalized scores.
        :param finished: ``(rows,)`` bool.
        :param nbest: finished hypotheses wanted per image.
        """
        if self.required is None:
            return np.zeros(len(finished), dtype=bool)
        met = self.all_met()
        complete = finished & met & (raw > NEG_INF / 2)
        shape, place = (self.batch, self.beam), min(nbest, self.beam) - 1

        def nth_best(values: np.ndarray) -> np.ndarray:
            return -np.sort(-np.where(complete, values, -np.inf).reshape(shape), axis=1)[:, place]

        threshold_normalized, threshold_raw = nth_best(normalized), nth_best(raw)
        best_open_met = np.where(finished | ~met, -np.inf, normalized).reshape(shape).max(axis=1)
        best_open_unmet = np.where(finished | met, -np.inf, raw).reshape(shape).max(axis=1)
        done = ((self.required.num_words > 0) & (threshold_normalized > -np.inf)
                & (best_open_met < threshold_normalized) & (best_open_unmet < threshold_raw))
        return done[self.images] & ~finished
