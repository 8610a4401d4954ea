"""The original's type4 and type5 prompt lists (README: Reproducing the paper), written out string by string as data, against
what the public API builds (`model.text_classifier(...).prompts`) for the 11-class list and its 7- and 8-class
prefixes; labels outside the 11 names get the plain templates; the plain-template sets keep their own names."""

import pytest
import torch
from transformers import CLIPTokenizer

from configuration_expclip import PROMPT_SETS
from modeling_expclip import ExpCLIPModel

CLASSES = ["happiness", "sadness", "neutral", "anger", "surprise", "disgust", "fear", "contempt", "anxiety",
           "helplessness", "disappointment"]

# README: Reproducing the paper, copied from its text: type4 = prompts 1-5 with the per-class edits (sadness 2 and 3).
ORIGINAL_TYPE4 = {
    "happiness": [
        "an expression of happiness.",
        "a photo of a face with an expression of happiness.",
        "a photo radiating happiness in a person.",
        "a photo showing someone immersed in happiness.",
        "a photo capturing happiness within an individual.",
    ],
    "sadness": [
        "an expression of sadness.",
        "a cropped photo emphasizing a face expressing sadness.",
        "a photo exuding sadness in a person.",
        "a photo showing someone immersed in sadness.",
        "a photo capturing sadness within an individual.",
    ],
    "neutral": [
        "an expression of neutral.",
        "a photo of a face with an expression of neutral.",
        "a photo radiating neutral in a person.",
        "a photo showing someone immersed in neutral.",
        "a photo capturing neutral within an individual.",
    ],
    "anger": [
        "an expression of anger.",
        "a photo of a face with an expression of anger.",
        "a photo radiating anger in a person.",
        "a photo showing someone immersed in anger.",
        "a photo capturing anger within an individual.",
    ],
    "surprise": [
        "an expression of surprise.",
        "a photo of a face with an expression of surprise.",
        "a photo radiating surprise in a person.",
        "a photo showing someone immersed in surprise.",
        "a photo capturing surprise within an individual.",
    ],
    "disgust": [
        "an expression of disgust.",
        "a photo of a face with an expression of disgust.",
        "a photo radiating disgust in a person.",
        "a photo showing someone immersed in disgust.",
        "a photo capturing disgust within an individual.",
    ],
    "fear": [
        "an expression of fear.",
        "a photo of a face with an expression of fear.",
        "a photo radiating fear in a person.",
        "a photo showing someone immersed in fear.",
        "a photo capturing fear within an individual.",
    ],
    "contempt": [
        "an expression of contempt.",
        "a photo of a face with an expression of contempt.",
        "a photo radiating contempt in a person.",
        "a photo showing someone immersed in contempt.",
        "a photo capturing contempt within an individual.",
    ],
    "anxiety": [
        "an expression of anxiety.",
        "a photo of a face with an expression of anxiety.",
        "a photo radiating anxiety in a person.",
        "a photo showing someone immersed in anxiety.",
        "a photo capturing anxiety within an individual.",
    ],
    "helplessness": [
        "an expression of helplessness.",
        "a photo of a face with an expression of helplessness.",
        "a photo radiating helplessness in a person.",
        "a photo showing someone immersed in helplessness.",
        "a photo capturing helplessness within an individual.",
    ],
    "disappointment": [
        "an expression of disappointment.",
        "a photo of a face with an expression of disappointment.",
        "a photo radiating disappointment in a person.",
        "a photo showing someone immersed in disappointment.",
        "a photo capturing disappointment within an individual.",
    ],
}

# README: Reproducing the paper, copied from its text: type5 = prompts 1-10 with every per-class edit.
ORIGINAL_TYPE5 = {
    "happiness": [
        "an expression of happiness.",
        "a photo of a face with an expression of happiness.",
        "a photo radiating happiness in a person.",
        "a photo showing someone immersed in happiness.",
        "a photo capturing happiness within an individual.",
        "a photo of a face exuding happiness.",
        "a photo of a person embodying happiness.",
        "a good photo capturing someone's happiness.",
        "a cropped photo emphasizing a face expressing happiness.",
        "a clean photo showcasing a person's happiness.",
    ],
    "sadness": [
        "an expression of sadness.",
        "a cropped photo emphasizing a face expressing sadness.",
        "a photo exuding sadness in a person.",
        "a photo showing someone immersed in sadness.",
        "a photo capturing sadness within an individual.",
        "a photo of a face displaying sadness.",
        "a photo of a person embodying sadness.",
        "a good photo capturing someone's sadness.",
        "a photo of a face with an expression of sadness.",
        "a clean photo showcasing a person's sadness.",
    ],
    "neutral": [
        "an expression of neutral.",
        "a photo of a face with an expression of neutral.",
        "a photo radiating neutral in a person.",
        "a photo showing someone immersed in neutral.",
        "a photo capturing neutral within an individual.",
        "a photo of a face displaying neutral.",
        "a photo of a person embodying neutral.",
        "a good photo capturing someone's neutral state.",
        "a cropped photo emphasizing a face expressing neutral.",
        "a clean photo showcasing a person's neutral expression.",
    ],
    "anger": [
        "an expression of anger.",
        "a photo of a face with an expression of anger.",
        "a photo radiating anger in a person.",
        "a photo showing someone immersed in anger.",
        "a photo capturing anger within an individual.",
        "a photo of a face displaying anger.",
        "a photo of a person embodying anger.",
        "a good photo capturing someone's anger.",
        "a cropped photo emphasizing a face expressing anger.",
        "a clean photo showcasing a person's angry expression.",
    ],
    "surprise": [
        "an expression of surprise.",
        "a photo of a face with an expression of surprise.",
        "a photo radiating surprise in a person.",
        "a photo showing someone immersed in surprise.",
        "a photo capturing surprise within an individual.",
        "a photo of a face displaying surprise.",
        "a photo of a person embodying surprise.",
        "a good photo capturing someone's surprise.",
        "a cropped photo emphasizing a face expressing surprise.",
        "a clean photo showcasing a person's surprised expression.",
    ],
    "disgust": [
        "an expression of disgust.",
        "a photo of a face with an expression of disgust.",
        "a photo radiating disgust in a person.",
        "a photo showing someone immersed in disgust.",
        "a photo capturing disgust within an individual.",
        "a photo of a face displaying disgust.",
        "a photo of a person embodying disgust.",
        "a good photo capturing someone's disgust.",
        "a cropped photo emphasizing a face expressing disgust.",
        "a clean photo showcasing a person's disgusted expression.",
    ],
    "fear": [
        "an expression of fear.",
        "a photo of a face with an expression of fear.",
        "a photo radiating fear in a person.",
        "a photo showing someone immersed in fear.",
        "a photo capturing fear within an individual.",
        "a photo of a face displaying fear.",
        "a photo of a person embodying fear.",
        "a good photo capturing someone's fear.",
        "a cropped photo emphasizing a face expressing fear.",
        "a clean photo showcasing a person's fearful expression.",
    ],
    "contempt": [
        "an expression of contempt.",
        "a photo of a face with an expression of contempt.",
        "a photo radiating contempt in a person.",
        "a photo showing someone immersed in contempt.",
        "a photo capturing contempt within an individual.",
        "a photo of a face displaying contempt.",
        "a photo of a person embodying contempt.",
        "a good photo capturing someone's contempt.",
        "a cropped photo emphasizing a face expressing contempt.",
        "a clean photo showcasing a person's contemptuous expression.",
    ],
    "anxiety": [
        "an expression of anxiety.",
        "a photo of a face with an expression of anxiety.",
        "a photo radiating anxiety in a person.",
        "a photo showing someone immersed in anxiety.",
        "a photo capturing anxiety within an individual.",
        "a photo of a face displaying anxiety.",
        "a photo of a person embodying anxiety.",
        "a good photo capturing someone's anxiety.",
        "a cropped photo emphasizing a face expressing anxiety.",
        "a clean photo showcasing a person's anxious expression.",
    ],
    "helplessness": [
        "an expression of helplessness.",
        "a photo of a face with an expression of helplessness.",
        "a photo radiating helplessness in a person.",
        "a photo showing someone immersed in helplessness.",
        "a photo capturing helplessness within an individual.",
        "a photo of a face displaying helplessness.",
        "a photo of a person embodying helplessness.",
        "a good photo capturing someone's helplessness.",
        "a cropped photo emphasizing a face expressing helplessness.",
        "a clean photo showcasing a person's helpless expression.",
    ],
    "disappointment": [
        "an expression of disappointment.",
        "a photo of a face with an expression of disappointment.",
        "a photo radiating disappointment in a person.",
        "a photo showing someone immersed in disappointment.",
        "a photo capturing disappointment within an individual.",
        "a photo of a face displaying disappointment.",
        "a photo of a person embodying disappointment.",
        "a good photo capturing someone's disappointment.",
        "a cropped photo emphasizing a face expressing disappointment.",
        "a clean photo showcasing a person's disappointed expression.",
    ],
}

ORIGINALS = {"type4": ORIGINAL_TYPE4, "type5": ORIGINAL_TYPE5}


@pytest.fixture(scope="module")
def model(tiny_expclip_dir):
    return ExpCLIPModel.from_pretrained(tiny_expclip_dir).eval()


@pytest.fixture(scope="module")
def tokenizer(tiny_expclip_dir):
    return CLIPTokenizer.from_pretrained(tiny_expclip_dir)


@pytest.mark.parametrize("num_classes", [7, 8, 11])
@pytest.mark.parametrize("prompt_set", ["type4", "type5"])
def test_type4_and_type5_are_the_originals_per_class_lists(model, tokenizer, prompt_set, num_classes):
    class_names = CLASSES[:num_classes]
    classifier = model.text_classifier(tokenizer, class_names, prompt_set)
    expected = [ORIGINALS[prompt_set][name] for name in class_names]
    assert classifier.prompts == expected
    assert len(classifier.prompt_embeds) == num_classes * (5 if prompt_set == "type4" else 10)


def test_the_lists_differ_from_the_plain_templates_where_spec_says(model, tokenizer):
    plain = model.text_classifier(tokenizer, CLASSES, "type5-templates").prompts
    edited = model.text_classifier(tokenizer, CLASSES, "type5").prompts
    changed = {(name, k + 1) for name, p, e in zip(CLASSES, plain, edited) for k in range(10) if p[k] != e[k]}
    assert changed == {("happiness", 6), ("sadness", 2), ("sadness", 3), ("sadness", 9), ("neutral", 8)} | {
        (name, 10) for name in CLASSES if name not in ("happiness", "sadness")}


@pytest.mark.parametrize("prompt_set,count", [("type4-templates", 5), ("type5-templates", 10)])
def test_template_sets_fill_every_class_the_same_way(model, tokenizer, prompt_set, count):
    prompts = model.text_classifier(tokenizer, ["sadness", "anger"], prompt_set).prompts
    assert prompts[0][1] == "a photo of a face with an expression of sadness."
    assert prompts[1][count - 1] == ("a photo capturing anger within an individual." if count == 5
                                     else "a clean photo showcasing a person's anger.")


def test_a_label_outside_the_eleven_gets_the_plain_templates(model, tokenizer):
    prompts = model.text_classifier(tokenizer, ["boredom", "sadness"], "type5").prompts
    assert prompts[0] == [template.format("boredom") for template in PROMPT_SETS["type5-templates"]]
    assert prompts[1] == ORIGINAL_TYPE5["sadness"]


def test_a_prompt_override_still_wins_over_the_original_list(model, tokenizer):
    prompts = model.text_classifier(tokenizer, ["happiness", "sadness"], "type5", {"sadness": ["a sad face."]}).prompts
    assert prompts == [ORIGINAL_TYPE5["happiness"], ["a sad face."]]


def test_type4_scores_differ_from_the_plain_templates_on_a_random_model(model, tokenizer):
    """The edits change the scores (README: Reproducing the paper: on a random model the type4 argmax can change)."""
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    edited = model.classify(images, model.text_classifier(tokenizer, CLASSES[:7], "type4"))
    plain = model.classify(images, model.text_classifier(tokenizer, CLASSES[:7], "type4-templates"))
    assert not torch.allclose(edited[:, 1], plain[:, 1])  # sadness: two of its five prompts differ
    assert torch.allclose(edited[:, 0], plain[:, 0], atol=1e-5)  # happiness: no type4 edit
