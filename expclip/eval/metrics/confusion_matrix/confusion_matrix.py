"""Confusion matrix, as an offline `evaluate` module (same computation as the Hub's `evaluate-metric/confusion_matrix`).

Rows are true classes, columns predicted classes, in the order of `labels`.
"""

import datasets
import evaluate
from sklearn.metrics import confusion_matrix

_DESCRIPTION = "Confusion matrix: entry (i, j) counts items of true class i predicted as class j."
_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): predicted class indices.
    references (`list` of `int`): true class indices.
    labels (`list` of `int`): the classes, in row/column order.
    normalize (`str` or `None`): "true" normalises each row (recall per cell), "pred" columns, "all" the whole.
Returns:
    confusion_matrix (`list` of `list`)
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ConfusionMatrix(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}),
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.confusion_matrix.html"],
        )

    def _compute(self, predictions, references, labels=None, normalize=None, sample_weight=None):
        matrix = confusion_matrix(references, predictions, labels=labels, normalize=normalize, sample_weight=sample_weight)
        return {"confusion_matrix": matrix.tolist()}
