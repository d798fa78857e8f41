"""The LSDO model: one module per paper component; see ``lsdo_model.LSDOModel``."""

from lsdo.model.lsdo_model import LSDOModel, TextFeatures, build_model

__all__ = ["LSDOModel", "TextFeatures", "build_model"]
