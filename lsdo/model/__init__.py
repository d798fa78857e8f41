"""The LSDO model: one module per paper component; see ``lsdo_model`` (``build_model``).

:class:`LSDOModel` is the base of both implementations: :class:`PaperLSDOModel` (``impl=paper``)
and :class:`OfficialLSDOModel` (``impl=official``, the authors' released code).
"""

from lsdo.model.lsdo_model import LSDOModel, OfficialLSDOModel, PaperLSDOModel, TextFeatures, build_model

__all__ = ["LSDOModel", "OfficialLSDOModel", "PaperLSDOModel", "TextFeatures", "build_model"]
