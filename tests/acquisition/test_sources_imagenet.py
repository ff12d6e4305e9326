"""ImageNet/WordNet: whole-word term search, hyponyms, per-synset URL lists, clean negatives."""

from __future__ import annotations

import pytest
from pocketml.acquisition.sources import make_source
from pocketml.acquisition.sources.imagenet import matching_synsets, naive_matching_synsets, read_words

from pocketml.errors import PocketMLError
from tests.acquisition.hostile_http import HostileServer

# Shaped like ImageNet's words.txt (wnid TAB comma-separated lemmas). The first lines are real
# WordNet synsets; n99000001/2 are made-up lemma lines that contain the letters "hot" and "dog"
# without being about hot dogs, as many real lemmas do ("shot", "photo", "dogwood", "dogsled").
WORDS = """\
n07697537\thotdog, hot dog, red hot
n07676602\tfrank, frankfurter, hotdog, hot dog, dog, wiener, wienerwurst, weenie
n07697699\tchili dog
n07695965\tsandwich
n07697100\thamburger, beefburger, burger
n07555863\tfood, solid food
n07739125\tapple
n07753592\tbanana
n07873807\tpizza, pizza pie
n02084071\tdog, domestic dog, Canis familiaris
n99000001\tsnapshot of a dogsled
n99000002\tphotographer's dogwood
"""
IS_A = """\
n07555863 n07695965
n07695965 n07697537
n07695965 n07697100
n07697537 n07697699
n07555863 n07739125
n07555863 n07753592
n07555863 n07873807
"""


@pytest.fixture()
def wordnet(tmp_path):
    (tmp_path / "words.txt").write_text(WORDS)
    (tmp_path / "wordnet.is_a.txt").write_text(IS_A)
    return tmp_path


def test_word_boundary_search_vs_naive_substring(wordnet):
    words = read_words(str(wordnet / "words.txt"))
    assert matching_synsets(words, ["hot dog"]) == ["n07697537", "n07676602"]
    naive = naive_matching_synsets(words, ["hot dog"])
    # The naive test also takes the sled photo and the dogwood: wrong images under the hot dog label.
    assert set(naive) - set(matching_synsets(words, ["hot dog"])) == {"n99000001", "n99000002"}


def test_term_spellings_hotdog_hot_dog_hot_hyphen_dog():
    words = {"a": "hot-dog stand", "b": "Hotdog", "c": "hot dogs", "d": "shot dog"}
    assert matching_synsets(words, ["hot dog"]) == ["a", "b"]


def synset_server(photo_folder) -> HostileServer:
    server = HostileServer(sorted((photo_folder / "train" / "cat").glob("*.jpg"))[:3])
    for wnid in ["n07697537", "n07676602", "n07697699", "n07697100", "n07739125", "n07753592", "n07873807"]:
        server.files[f"/file/{wnid}"] = "".join(f"http://img.example/{wnid}/{i}.jpg\r\n" for i in range(5)).encode()
    return server


def test_positives_hyponyms_and_negatives_from_the_endpoint(wordnet, photo_folder):
    with synset_server(photo_folder) as server:
        table = {"type": "imagenet", "terms": ["hot dog"], "words": str(wordnet / "words.txt"),
                 "is_a": str(wordnet / "wordnet.is_a.txt"), "urls_endpoint": server.base + "/file/{wnid}",
                 "max_per_synset": 3, "negatives": 10, "negatives_per_synset": 2, "negative_roots": ["n07555863"]}
        source = make_source(table)
        positives, negatives = source.synsets()
        items = list(source.items())
    assert positives == ["n07697537", "n07676602", "n07697699"]  # chili dog comes in as a hyponym
    # Negatives: other foods only; never the positives, their hyponyms, or sandwich/food above them.
    assert sorted(negatives) == ["n07697100", "n07739125", "n07753592", "n07873807"]
    hot = [i for i in items if i.label == "hot_dog"]
    assert len(hot) == 9 and all(i.url.split("/")[3] in positives for i in hot)
    assert len([i for i in items if i.label == "not_hot_dog"]) == 8


def test_negative_sampling_is_seeded(wordnet):
    table = {"type": "imagenet", "terms": ["hot dog"], "words": str(wordnet / "words.txt"),
             "is_a": str(wordnet / "wordnet.is_a.txt"), "negatives": 2}
    first = make_source({**table, "seed": 1}).synsets()[1]
    assert first == make_source({**table, "seed": 1}).synsets()[1]
    assert not set(first) & {"n07697537", "n07676602", "n07697699", "n07695965", "n07555863"}


def test_urls_from_a_local_fall11_list(wordnet):
    (wordnet / "fall11.txt").write_text("n07697537_1\thttp://a/1.jpg\nn07739125_4\thttp://a/apple.jpg\nn07697537_9\thttp://a/2.jpg\n")
    items = list(make_source({"type": "imagenet", "wnids": ["n07697537"], "label": "hot_dog",
                              "url_list": str(wordnet / "fall11.txt")}).items())
    assert [(i.url, i.label) for i in items] == [("http://a/1.jpg", "hot_dog"), ("http://a/2.jpg", "hot_dog")]


def test_no_match_is_a_clear_error(wordnet):
    source = make_source({"type": "imagenet", "terms": ["hot pocket"], "words": str(wordnet / "words.txt")})
    with pytest.raises(PocketMLError, match="no ImageNet synset matches"):
        list(source.items())
    with pytest.raises(PocketMLError, match="need `words`"):
        make_source({"type": "imagenet", "terms": ["hot dog"]})
