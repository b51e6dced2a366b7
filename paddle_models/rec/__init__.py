"""The recommender zoo: LR, FM, FFM, DeepFM, DeepFFM, Wide&Deep (FTRL + AdaGrad), xDeepFM, DCN, DCNv2
(CTR models on libfm / Criteo / PaddleRec-slot data) and the DSSM two-tower retrieval model (RecBole
atomic files, e.g. MovieLens-100k), with features from config, one task for the shared Trainer and
FTRL-Proximal for Wide&Deep's wide part (``paddle_models.engine.ftrl``)."""
from . import dcn, dcnv2, deepffm, deepfm, dssm, ffm, fm, lr, widedeep, xdeepfm  # noqa: F401  (registration)
from .features import FeatureError, FeatureMap, Layout
from .task import RecTask

__all__ = ["FeatureError", "FeatureMap", "Layout", "RecTask"]
