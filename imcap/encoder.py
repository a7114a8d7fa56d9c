"""The image-side encoder of the captioning model: cached CNN regions → model-sized region vectors.

The CNN itself runs offline (:mod:`imcap.extract_features`); this learned part projects its regions, as
Sockeye's ``image-pretrain-cnn`` encoder did (Bazzani et al. 2018).
"""
import dataclasses
import math

from mxnet.gluon import HybridBlock, nn

from .config import Config
from .layers import Sinusoidal
from .utils import check_condition


@dataclasses.dataclass
class EncoderConfig(Config):
    """Feature shape and projection of the image encoder.

    :param num_regions: regions per image (e.g. 49 for a 7x7 map).
    :param feature_dim: channels per region (e.g. 1280).
    :param num_hidden: size of the projected regions.
    :param positional_embedding: ``none``, ``learned`` (one learned vector per region) or ``fixed`` (2-D
        sinusoids of the region's row and column in the square grid, not trained), added to the normalized
        features before the projection (so the projection learns how to use them, for every decoder).
    :param dropout: dropout on the projected regions.
    """
    num_regions: int = 49
    feature_dim: int = 1280
    num_hidden: int = 512
    positional_embedding: str = "none"
    dropout: float = 0.0


class ImageFeatureEncoder(HybridBlock):
    """``(batch, regions, feature_dim)`` features → ``(batch, regions, num_hidden)`` encoded regions.

    Layer norm (without learned parameters) of the raw features (they are ReLU6 activations of very different scales per channel),
    optional positional embedding (learned, or fixed 2-D sinusoids: half of the channels encode the row, half the
    column, as in Vaswani et al. 2017 per axis), dense projection with ReLU, dropout.

    :raises ImcapError: for ``fixed`` positions of regions that are not a square grid, or a feature size that is
        not a multiple of 4 (sin and cos of rows and columns).
    """

    def __init__(self, config: EncoderConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        self.config = config
        with self.name_scope():
            # Without learned scale and shift (the projection absorbs them), so the backward pass skips it.
            self.norm = nn.LayerNorm(center=False, scale=False, in_channels=config.feature_dim)
            self.projection = nn.Dense(config.num_hidden, flatten=False, activation="relu",
                                       in_units=config.feature_dim)
            self.pos_embed = None
            if config.positional_embedding == "learned":
                self.pos_embed = self.params.get("pos_embed", shape=(1, config.num_regions, config.feature_dim),
                                                 init="zeros")
            elif config.positional_embedding == "fixed":
                side = int(round(math.sqrt(config.num_regions)))
                check_condition(side * side == config.num_regions, "--image-positional-embedding-type fixed needs a "
                                "square grid of regions (not %d)" % config.num_regions)
                check_condition(config.feature_dim % 4 == 0, "--image-positional-embedding-type fixed needs a "
                                "feature size divisible by 4 (not %d)" % config.feature_dim)
                self.pos_embed = self.params.get("pos_fixed", shape=(1, config.num_regions, config.feature_dim),
                                                 init=Sinusoidal(grid=True), grad_req="null")
            self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else None

    def hybrid_forward(self, F, features, pos_embed=None):
        x = self.norm(features)
        if pos_embed is not None:
            x = F.broadcast_add(x, pos_embed)
        x = self.projection(x)
        return self.dropout(x) if self.dropout is not None else x
