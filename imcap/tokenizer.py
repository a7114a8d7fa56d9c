"""The one tokenizer of imcap: captions (:mod:`imcap.prepare_data`) and constraint phrases (:mod:`imcap.phrases`)
are split into words by the same :func:`tokenize`, so a phrase matches the words a caption is made of."""
import unicodedata
from typing import List


def tokenize(text: str) -> List[str]:
    """Lower-case ``text``, turn every character that is not a letter, digit or whitespace into a space
    and split on whitespace.

    Unicode aware: letters and digits are what :meth:`str.isalnum` accepts, after NFC normalization (so a
    letter with a combining accent stays one letter).

    >>> tokenize("A man's red T-shirt, 2 dogs .")
    ['a', 'man', 's', 'red', 't', 'shirt', '2', 'dogs']
    >>> tokenize("Ein Mädchen im Café !")
    ['ein', 'mädchen', 'im', 'café']
    >>> tokenize(" . ")
    []
    """
    text = unicodedata.normalize("NFC", text).lower()
    return "".join(c if c.isalnum() or c.isspace() else " " for c in text).split()
