"""Prompts p_n (docs/method.md §1): hand examples, the real PadChest tail rows, the tokenizer,
report prompts (hand-counted with the real CLIP tokenizer, every real OpenI report)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from transformers import CLIPTokenizer

from trcgl.data.manifest import Manifest
from trcgl.data.readers import read_nih
from trcgl.data.report_text import split_sentences
from trcgl.data.vocab import load_mapping
from trcgl.diffusion.prompts import (
    PromptParts,
    build_prompt,
    fits_tokenizer,
    label_text,
    localisation_sentences,
    parse_localizations,
    prompt_parts,
    prompts_for_manifest,
    report_prompt,
    report_sentences,
    shorten_prompt,
    token_lengths,
    view_phrase,
)
from trcgl.diffusion.text import CLIP_VOCAB_SIZE, load_tokenizer
from trcgl.errors import ConfigError

#: The tail classes of CXR-LT by the project's mapping on the real PadChest CSV.
TAIL = ["Hydropneumothorax", "pneumoperitoneo", "Subcutaneous Emphysema", "azygos lobe",
        "Pneumothorax"]  # fmt: skip


@pytest.fixture(scope="module")
def tokenizer() -> CLIPTokenizer:
    return load_tokenizer()


# -- hand examples ----------------------------------------------------------------------------
def test_method_example():
    locs = "[['pneumothorax', 'loc left', 'loc apical'], ['normal']]"
    assert (
        build_prompt(["Pneumothorax"], "PA", locs)
        == "chest x-ray, PA view: pneumothorax, left apical"
    )


@pytest.mark.parametrize(
    ("view", "phrase"),
    [("PA", "PA view"), ("AP", "AP view"), ("AP_horizontal", "supine AP view"),
     ("L", "lateral view"), ("COSTAL", None), ("", None), (None, None)],
)  # fmt: skip
def test_views(view, phrase):
    assert view_phrase(view) == phrase


def test_padchest_localisations_by_label():
    locs = (
        "[['pleural effusion', 'loc pleural', 'loc right'], ['normal'], [], "
        "['pleural effusion both sides', 'loc pleural'], ['NSG tube', 'loc gastric chamber'], "
        "['unchanged'], ['normal', 'loc cardiac']]"
    )
    labels = ["pleural effusion", "Support Devices", "Normal"]
    assert build_prompt(labels, "AP_horizontal", locs) == (
        "chest x-ray, supine AP view: pleural effusion, pleural right bilateral, "
        "support devices, gastric chamber, normal"
    )


def test_sentence_locations_go_to_every_related_finding_only():
    locs = "[['emphysema', 'interstitial pattern', 'loc hemithorax', 'loc left'], ['pneumothorax']]"
    assert build_prompt(["Emphysema", "interstitial pattern", "Pneumothorax"], "L", locs) == (
        "chest x-ray, lateral view: emphysema, hemithorax left, "
        "interstitial pattern, hemithorax left, pneumothorax"
    )


def test_mapping_relates_raw_findings_to_classes():
    # "callus rib fracture" is a raw finding that the mapping counts toward "fracture".
    locs = "[['callus rib fracture', 'loc rib', 'loc left'], ['azygos lobe', 'loc lobar']]"
    mapping = load_mapping()
    assert mapping.classes_of("callus rib fracture") == ("fracture",)
    prompt = build_prompt(["fracture", "azygos lobe"], "PA", locs, mapping=mapping)
    assert prompt == "chest x-ray, PA view: fracture, rib left, azygos lobe, lobar"


def test_flat_localisation_list_groups_runs():
    groups = parse_localizations("['infiltrates', 'loc right', 'loc basal', 'normal', 'loc left']")
    assert groups == ((("infiltrates",), ("right", "basal")), (("normal",), ("left",)))


def test_nan_entries_and_unparseable_strings_never_crash():
    assert build_prompt(["Pneumothorax"], "PA", "[nan, ['pneumothorax', 'loc right']]") == (
        "chest x-ray, PA view: pneumothorax, right"
    )
    for bad in ("[['pneumothorax', 'loc right'", "not a list", "{1: 2}", "42", "nan", ""):
        assert build_prompt(["Pneumothorax"], "PA", bad) == "chest x-ray, PA view: pneumothorax"


def test_no_label_and_unknown_view():
    assert build_prompt([], "PA") == "chest x-ray, PA view: no finding"
    assert build_prompt(["No Finding"], "AP", dataset="nih") == "chest x-ray, AP view: no finding"
    assert build_prompt(["Mass"], "UNK") == "chest x-ray: mass"
    with pytest.raises(ConfigError, match=r"unknown dataset"):
        build_prompt(["Mass"], "PA", dataset="mimic")


def test_nih_rows(nih_sample):
    assert build_prompt(["Effusion", "Mass"], "AP", dataset="nih") == (
        "chest x-ray, AP view: effusion, mass"
    )
    manifest = read_nih(nih_sample / "Data_Entry_sample.csv").manifest
    prompts = dict(zip(manifest.frame["image"], prompts_for_manifest(manifest, "nih"), strict=True))
    assert prompts["00000012_000.png"] == "chest x-ray, PA view: effusion, mass"
    assert prompts["00000404_000.png"] == (
        "chest x-ray, AP view: atelectasis, effusion, mass, consolidation, pleural thickening"
    )


# -- shortening -------------------------------------------------------------------------------
def test_shortening_drops_locations_first_then_trailing_labels(tokenizer):
    long_locs = tuple(f"place{i}" for i in range(30))
    parts = PromptParts("PA view", (("pneumothorax", long_locs), ("mass", ("left",))))
    assert not fits_tokenizer(parts.text(), tokenizer)
    # The last item's locations go first; still too long, then the first item's.
    assert shorten_prompt(parts, tokenizer) == "chest x-ray, PA view: pneumothorax, mass"
    short = PromptParts("PA view", (("pneumothorax", ("left", "apical")), ("mass", long_locs)))
    assert shorten_prompt(short, tokenizer) == (
        "chest x-ray, PA view: pneumothorax, left apical, mass"
    )
    many = PromptParts("PA view", tuple((f"finding number {i}", ()) for i in range(30)))
    many_kept = (*many.items, ("pneumothorax", ()))
    text = shorten_prompt(PromptParts("PA view", many_kept), tokenizer, keep=["Pneumothorax"])
    assert fits_tokenizer(text, tokenizer)
    assert text.startswith("chest x-ray, PA view: finding number 0, finding number 1")
    assert text.endswith(", pneumothorax")


# -- real PadChest ----------------------------------------------------------------------------
def test_padchest_tail_rows(padchest, tokenizer):
    frame = padchest.manifest.frame
    rows = frame[frame[TAIL].any(axis=1)]
    assert len(rows) > 1000
    tail = Manifest(rows, padchest.manifest.classes)
    prompts = prompts_for_manifest(tail, "padchest", tokenizer=tokenizer, keep=TAIL)
    lengths = np.array(token_lengths(prompts, tokenizer))
    assert lengths.max() <= 77
    assert (lengths > 5).all()
    unshortened = prompts_for_manifest(tail, "padchest")
    assert sum(a != b for a, b in zip(prompts, unshortened, strict=True)) >= 1  # some were long
    has_location = 0
    for prompt, (_, row) in zip(prompts, rows.iterrows(), strict=True):
        assert prompt.startswith("chest x-ray")
        for cls in TAIL:
            if row[cls]:
                assert cls.lower() in prompt, (prompt, cls)
        has_location += prompt != build_prompt([c for c in tail.classes if row[c]], row["view"])
    assert has_location > len(rows) // 2  # most tail rows are localised in the report
    # report prompts: the label words, then the localisations as sentences, to 77 tokens
    reports = prompts_for_manifest(
        tail, "padchest", source="report", tokenizer=tokenizer, keep=TAIL
    )
    assert max(token_lengths(reports, tokenizer)) <= 77
    with_sentences = 0
    for prompt, (_, row) in zip(reports, rows.iterrows(), strict=True):
        labels = [c for c in tail.classes if row[c]]
        head = prompt_parts(labels, row["view"]).without_locations().text()
        sentences = localisation_sentences(row["localizations"])
        if sentences:
            assert prompt == head or prompt.startswith(f"{head}. "), prompt
            with_sentences += prompt.startswith(f"{head}. {sentences[0].split()[0]}")
        else:
            assert prompt == build_prompt(labels, row["view"], row["localizations"])
    assert with_sentences > len(rows) * 0.9


def test_prompt_parts_are_structured():
    parts = prompt_parts(["Pneumothorax", "Mass"], "PA", "[['pneumothorax', 'loc left']]")
    assert parts.items == (("pneumothorax", ("left",)), ("mass", ()))
    assert parts.without_locations().text() == "chest x-ray, PA view: pneumothorax, mass"


# -- tokenizer --------------------------------------------------------------------------------
def test_tokenizer_matches_open_clip(tokenizer):
    import open_clip

    reference = open_clip.get_tokenizer("ViT-B-32")
    assert len(tokenizer) == CLIP_VOCAB_SIZE
    prompts = [
        "chest x-ray, PA view: pneumothorax, left apical",
        "chest x-ray, supine AP view: pleural effusion, pleural right bilateral, support devices",
        "Hydropneumothorax   and  SUBCUTANEOUS emphysema!! 3.5 cm, don't",
        "",
    ]
    expected = reference(prompts)
    for prompt, row in zip(prompts, expected, strict=True):
        ids = row.tolist()
        ids = ids[: ids.index(49407) + 1]  # open_clip pads with 0 after the end token
        assert tokenizer(prompt).input_ids == ids
    padded = tokenizer(prompts[0], padding="max_length", max_length=77).input_ids
    assert len(padded) == 77 and padded[-1] == 49407


def test_broken_tokenizer_guard(tmp_path):
    # The offline stand-in: a tokenizer with a handful of tokens, loaded without an error.
    tiny = CLIPTokenizer(vocab={"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2}, merges=[])
    tiny.save_pretrained(tmp_path / "tiny")
    with pytest.raises(ConfigError, match=r"only \d+ tokens.*hf download"):
        load_tokenizer(tmp_path / "tiny")
    # Offline, an uncached hub id gives transformers' 2-token stand-in without an error.
    with pytest.raises(ConfigError, match=r"only 2 tokens"):
        load_tokenizer("trcgl-test/no-such-tokenizer")
    with pytest.raises(ConfigError, match=r"cannot load a CLIP tokenizer"):
        load_tokenizer(tmp_path / "missing-folder-that-is-no-hub-id")


def test_tokenizer_from_local_folder(tmp_path, tokenizer):
    pipeline = tmp_path / "pipeline"
    tokenizer.save_pretrained(pipeline / "tokenizer")  # diffusers layout
    loaded = load_tokenizer(pipeline)
    prompt = "chest x-ray, PA view: pneumothorax, left apical"
    assert loaded(prompt).input_ids == tokenizer(prompt).input_ids


# -- report prompts ---------------------------------------------------------------------------
# Token counts (CLIP BPE, start and end tokens included; open_clip gives the same ids, see
# test_tokenizer_matches_open_clip): "chest x-ray, PA view: pneumothorax" is 14 tokens (chest,
# x, -, ray, ",", pa, view, ":" and 4 for pneumothorax), the full stop after it 1, "The lungs
# are clear." and "Heart size is normal." 5 each, "Small left apical pneumothorax" 8 (apical 2),
# every further "left" 1.
HEAD = "chest x-ray, PA view: pneumothorax"
CLEAR, HEART = "The lungs are clear.", "Heart size is normal."


def test_report_prompt_hand_counts(tokenizer):
    assert token_lengths([HEAD, f"{HEAD}. {CLEAR}", f"{HEAD}. {CLEAR} {HEART}"], tokenizer) == [
        14, 20, 25
    ]  # fmt: skip
    parts = prompt_parts(["Pneumothorax"], "PA")
    assert report_prompt(parts, [CLEAR, HEART], tokenizer) == f"{HEAD}. {CLEAR} {HEART}"
    # 20 sentences: 15 + 5 k <= 77 keeps k = 12 whole sentences (75 tokens), in report order
    sentences = [CLEAR, HEART] * 10
    prompt = report_prompt(parts, sentences, tokenizer)
    assert prompt == f"{HEAD}. " + " ".join(sentences[:12])
    assert token_lengths([prompt, f"{prompt} {sentences[12]}"], tokenizer) == [75, 80]
    # budgets of 29 and 30 tokens: two and three sentences (25 and 30 tokens)
    assert report_prompt(parts, sentences, tokenizer, 29) == f"{HEAD}. {CLEAR} {HEART}"
    assert report_prompt(parts, sentences, tokenizer, 30) == f"{HEAD}. {CLEAR} {HEART} {CLEAR}"
    # one sentence too long on its own: its first 62 tokens of words (8 + 54 "left")
    long = "Small left apical pneumothorax" + " left" * 100 + "."
    prompt = report_prompt(parts, [long, CLEAR], tokenizer)
    assert prompt == f"{HEAD}. Small left apical pneumothorax" + " left" * 54
    assert token_lengths([prompt], tokenizer) == [77]
    # not even one word fits behind the labels: the labels alone
    assert report_prompt(parts, [long], tokenizer, 15) == HEAD
    # no report: the label prompt, shortened as shorten_prompt does
    assert report_prompt(parts, [], tokenizer) == HEAD
    located = prompt_parts(["Pneumothorax"], "PA", "[['pneumothorax', 'loc left', 'loc apical']]")
    assert report_prompt(located, []) == f"{HEAD}, left apical"
    assert report_prompt(located, [CLEAR]) == f"{HEAD}. {CLEAR}"  # the report says where


def test_report_prompt_never_drops_label_words(tokenizer):
    labels = ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule",
              "Pneumonia", "Pneumothorax", "Consolidation", "Edema"]  # fmt: skip
    parts = prompt_parts(labels, "AP")
    head = parts.text()
    prompt = report_prompt(parts, [CLEAR, HEART] * 10, tokenizer)
    assert prompt.startswith(f"{head}. ") and fits_tokenizer(prompt, tokenizer)
    # labels too many for 77 tokens on their own: as the label prompt (keep honoured)
    many = prompt_parts([f"finding number {i}" for i in range(30)] + ["Pneumothorax"], "PA")
    assert report_prompt(many, [CLEAR], tokenizer, keep=["Pneumothorax"]) == shorten_prompt(
        many, tokenizer, keep=["Pneumothorax"]
    )


def test_padchest_localisations_as_sentences():
    locs = (
        "[['pleural effusion', 'loc pleural', 'loc right'], ['normal'], [], "
        "['NSG tube', 'loc gastric chamber'], ['loc left']]"
    )
    assert localisation_sentences(locs) == [
        "Pleural effusion, pleural right.",
        "Normal.",
        "NSG tube, gastric chamber.",
    ]
    assert localisation_sentences("['infiltrates', 'loc right', 'loc basal', 'normal']") == [
        "Infiltrates, right basal.",
        "Normal.",
    ]
    assert localisation_sentences("not a list") == [] == localisation_sentences("")
    # a report column wins over the localisations
    assert report_sentences("Lungs clear. Heart normal.", locs) == ["Lungs clear.", "Heart normal."]
    assert report_sentences("", locs)[0] == "Pleural effusion, pleural right."


def _report_manifest() -> Manifest:
    frame = pd.DataFrame(
        {
            "image": ["a.png", "b.png", "c.png"],
            "image_id": ["a", "b", "c"],
            "patient_id": ["p1", "p2", "p3"],
            "view": ["AP_horizontal", "PA", "L"],
            "split": "train",
            "source": "real",
            "weight": 1.0,
            "localizations": [
                "[['pleural effusion', 'loc pleural', 'loc right'], ['NSG tube', 'loc gastric "
                "chamber'], ['normal']]",
                "",
                "[['pneumothorax', 'loc left']]",
            ],
            "report": ["", "", "Small left pneumothorax. No effusion."],
            "pleural effusion": [1, 0, 0],
            "Support Devices": [1, 0, 0],
            "Pneumothorax": [0, 0, 1],
        }
    )
    return Manifest(frame, ("pleural effusion", "Support Devices", "Pneumothorax"))


def test_report_prompts_for_a_manifest(tokenizer):
    manifest = _report_manifest()
    labels = prompts_for_manifest(manifest, "padchest")
    assert labels == [
        "chest x-ray, supine AP view: pleural effusion, pleural right, support devices, "
        "gastric chamber",
        "chest x-ray, PA view: no finding",
        "chest x-ray, lateral view: pneumothorax, left",
    ]
    reports = prompts_for_manifest(manifest, "padchest", source="report", tokenizer=tokenizer)
    assert reports == [
        "chest x-ray, supine AP view: pleural effusion, support devices. Pleural effusion, "
        "pleural right. NSG tube, gastric chamber. Normal.",
        "chest x-ray, PA view: no finding",  # no report text: the label prompt
        "chest x-ray, lateral view: pneumothorax. Small left pneumothorax. No effusion.",
    ]
    assert prompts_for_manifest(manifest, "padchest", source="report") == reports
    # the default is the label prompt, byte for byte, whatever text columns the manifest has
    bare = Manifest(manifest.frame.drop(columns=["report"]), manifest.classes)
    assert prompts_for_manifest(bare, "padchest", tokenizer=tokenizer) == labels
    assert prompts_for_manifest(manifest, "padchest", source="labels") == labels
    with pytest.raises(ConfigError, match=r"unknown prompt source 'impression'"):
        prompts_for_manifest(manifest, "padchest", source="impression")


def test_openi_report_prompts(openi, tokenizer):
    manifest = openi.manifest
    prompts = prompts_for_manifest(manifest, "plain", source="report", tokenizer=tokenizer)
    lengths = np.array(token_lengths(prompts, tokenizer))
    assert lengths.max() <= 77
    labels = prompts_for_manifest(manifest, "plain")
    y = manifest.labels().astype(bool)
    shortened, longer = 0, []
    for prompt, head, report, row in zip(prompts, labels, manifest.frame["report"], y, strict=True):
        for cls in np.asarray(manifest.classes)[row]:
            assert label_text(cls) in head  # every label word, in the untouched header
        sentences = split_sentences(report)
        if not sentences:
            assert prompt == head
            continue
        assert prompt == head or prompt.startswith(f"{head}. ")
        rest = prompt[len(head) + 2 :]
        whole = [k for k in range(1, len(sentences) + 1) if rest == " ".join(sentences[:k])]
        if whole == [len(sentences)]:
            continue
        shortened += 1
        if whole:  # whole sentences kept: the next one would not fit
            longer.append(f"{prompt} {sentences[whole[0]]}")
        else:  # the first sentence cut after some words: one word more would not fit
            words = sentences[0].split()
            kept = rest.split()
            assert kept == words[: len(kept)]
            longer.append(f"{head}. {' '.join(words[: len(kept) + 1])}")
    assert len(manifest) == 7470 and shortened > 1000
    assert min(token_lengths(longer, tokenizer)) > 77
