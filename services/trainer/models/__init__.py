"""The model families behind one interface: ``fit(prepared) → Fitted`` (artifact arrays)."""

from __future__ import annotations

from services.trainer.models.als import ALSModel
from services.trainer.models.base import Fitted, ModelFamily
from services.trainer.models.bpr import BPRModel
from services.trainer.models.ease import EASEModel
from services.trainer.models.knn import KNNModel
from services.trainer.models.popularity import PopularityModel
from services.trainer.models.rerank import RerankModel
from services.trainer.models.segment import SegmentModel
from services.trainer.models.svd import SVDModel

FAMILIES: dict[str, type[ModelFamily]] = {
    "svd": SVDModel,
    "knn": KNNModel,
    "popularity": PopularityModel,
    "als": ALSModel,
    "bpr": BPRModel,
    "ease": EASEModel,
    "segment": SegmentModel,
    "rerank": RerankModel,
}

__all__ = [
    "FAMILIES",
    "ALSModel",
    "BPRModel",
    "EASEModel",
    "Fitted",
    "KNNModel",
    "ModelFamily",
    "PopularityModel",
    "RerankModel",
    "SVDModel",
    "SegmentModel",
]
