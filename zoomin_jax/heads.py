"""The heads an evaluation reports, in display order, and which a config's model has."""

from __future__ import annotations

import ml_collections

HEADS = {"mnet": "M-Net", "mnet_anet": "M-Net + A-Net", "zoom_in": "Zoom-in-Net", "pair": "Both eyes"}


def heads_for(config: ml_collections.ConfigDict) -> list[str]:
    """The heads a config's model has, in display order ("pair" only with `model.pair_eyes`)."""
    return [h for h in HEADS if h != "pair" or config.model.get("pair_eyes", False)]
