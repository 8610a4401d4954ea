"""Recall (macro average = the paper's UAR; average=None = per-class recall), as an offline `evaluate` module.

Same computation as the Hub's `evaluate-metric/recall` (scikit-learn's recall_score); shipped with the package
because `evaluate.load("recall")` fetches its script from the Hub.
"""

import datasets
import evaluate
from sklearn.metrics import recall_score

_DESCRIPTION = "Recall = TP / (TP + FN) per class; average='macro' is the unweighted mean over classes (UAR)."
_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): predicted class indices.
    references (`list` of `int`): true class indices.
    labels (`list` of `int`): the classes to score (and their order for average=None).
    average (`str` or `None`): "macro" (UAR), "micro", "weighted", "binary", or None for one value per class.
    zero_division: value for a class without true items (scikit-learn's argument).
Returns:
    recall (`float`, or `list` of `float` when average is None)
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Recall(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}),
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.recall_score.html"],
        )

    def _compute(self, predictions, references, labels=None, average="binary", zero_division="warn", sample_weight=None):
        score = recall_score(
            references, predictions, labels=labels, average=average, zero_division=zero_division, sample_weight=sample_weight
        )
        return {"recall": score.tolist() if average is None else float(score)}
