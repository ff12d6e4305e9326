"""ImageNet / WordNet: positives from synsets whose lemmas match a term (with their hyponyms),
negatives sampled from other synsets, URLs from a per-synset list endpoint or a fall11 list.

Term search matches whole words: `hot dog` finds "hotdog, hot dog, red hot" but not a synset
that merely contains the letters h-o-t and d-o-g somewhere ("shot", "photo", "dogwood"), which
the naive `'hot' in t and 'dog' in t` test picks up. Negatives exclude the positives, their
hyponyms and their hypernyms (a "sandwich" synset may well contain hot dogs).
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field

from pocketml.acquisition.sources.base import Source, SourceItem
from pocketml.acquisition.sources.textio import open_lines

from pocketml.errors import PocketMLError

NAME = "imagenet"
ENDPOINT = "http://www.image-net.org/api/text/imagenet.synset.geturls?wnid={wnid}"


@dataclass
class ImageNetConfig:
    terms: list[str] = field(default_factory=list)  # search terms for positives, e.g. ["hot dog"]
    wnids: list[str] = field(default_factory=list)  # synset ids taken as positives in addition to the terms
    label: str = ""  # label of the positives (default: the first term, spaces as underscores)
    words: str = ""  # words.txt (`wnid<TAB>lemma, lemma`): local path or URL; needed for terms/negatives
    is_a: str = ""  # wordnet.is_a.txt (`parent child`): local path or URL; empty = no hyponym expansion
    hyponyms: bool = True  # also take every synset below a positive (frankfurter bun -> its kinds)
    urls_endpoint: str = ENDPOINT  # per-synset URL list; {wnid} is replaced by the synset id
    url_list: str = ""  # instead of the endpoint: a local fall11 list (`wnid_n<TAB>url`), .gz accepted
    max_per_synset: int = 0  # URLs taken from one positive synset (0 = all)
    negatives: int = 0  # how many other synsets to sample as negatives (0 = none)
    negatives_per_synset: int = 20  # URLs taken from each negative synset
    negative_roots: list[str] = field(default_factory=list)  # sample negatives only below these wnids (e.g. food)
    negative_label: str = ""  # label of the negatives (default: not_<label>)
    seed: int = 0  # negative sampling is reproducible for a given seed


CONFIG = ImageNetConfig


def term_pattern(term: str) -> re.Pattern[str]:
    """Whole-word pattern: 'hot dog' matches 'hot dog', 'hot-dog', 'hotdog'; not 'shot dogwood'."""
    words = [re.escape(w) for w in re.split(r"[\s\-_]+", term.strip().lower()) if w]
    if not words:
        raise PocketMLError(f"imagenet term {term!r} has no words")
    return re.compile(r"(?<![a-z0-9])" + r"[\s\-]*".join(words) + r"(?![a-z0-9])", re.IGNORECASE)


def matching_synsets(words: dict[str, str], terms: list[str]) -> list[str]:
    patterns = [term_pattern(t) for t in terms]
    return [wnid for wnid, lemmas in words.items() if any(p.search(lemmas) for p in patterns)]


def naive_matching_synsets(words: dict[str, str], terms: list[str]) -> list[str]:
    """The substring test this module replaces, kept to show (in tests) what it gets wrong."""
    return [w for w, lemmas in words.items() if any(all(part in lemmas.lower() for part in t.split()) for t in terms)]


def read_words(location: str) -> dict[str, str]:
    with open_lines(location, "imagenet.words") as fh:
        return {wnid.strip(): lemmas.strip() for wnid, _, lemmas in (line.partition("\t") for line in fh) if lemmas}


def read_children(location: str) -> dict[str, list[str]]:
    children: dict[str, list[str]] = defaultdict(list)
    with open_lines(location, "imagenet.is_a") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) == 2:
                children[parts[0]].append(parts[1])
    return children


def descendants(roots: list[str], children: dict[str, list[str]]) -> set[str]:
    seen, stack = set(roots), list(roots)
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in seen:
                seen.add(child)
                stack.append(child)
    return seen


def ancestors(nodes: set[str], children: dict[str, list[str]]) -> set[str]:
    parents: dict[str, list[str]] = defaultdict(list)
    for parent, kids in children.items():
        for kid in kids:
            parents[kid].append(parent)
    return descendants(list(nodes), parents) - nodes


class ImageNetSource:
    name = NAME

    def __init__(self, config: ImageNetConfig):
        if not config.terms and not config.wnids:
            raise PocketMLError("[source(imagenet)] needs `terms` (e.g. [\"hot dog\"]) or `wnids`")
        if (config.terms or config.negatives) and not config.words:
            raise PocketMLError("[source(imagenet)] `terms` and `negatives` need `words` (ImageNet words.txt path or URL)")
        self.config = config
        self.label = config.label or (config.terms[0] if config.terms else config.wnids[0]).strip().replace(" ", "_")
        self.negative_label = config.negative_label or f"not_{self.label}"

    def synsets(self) -> tuple[list[str], list[str]]:
        """(positive wnids incl. hyponyms, sampled negative wnids)."""
        cfg = self.config
        words = read_words(cfg.words) if cfg.words else {}
        children = read_children(cfg.is_a) if cfg.is_a else {}
        positives = list(dict.fromkeys(cfg.wnids + matching_synsets(words, cfg.terms)))
        if not positives:
            raise PocketMLError(f"no ImageNet synset matches terms {cfg.terms}; check the spelling or give `wnids`")
        if cfg.hyponyms and children:
            positives = list(dict.fromkeys(positives + sorted(descendants(positives, children) - set(positives))))
        return positives, self._negatives(set(positives), words, children)

    def _negatives(self, positives: set[str], words: dict[str, str], children: dict[str, list[str]]) -> list[str]:
        if not self.config.negatives:
            return []
        excluded = positives | descendants(list(positives), children) | ancestors(positives, children)
        pool = descendants(self.config.negative_roots, children) if self.config.negative_roots else set(words)
        candidates = sorted(pool - excluded)
        count = min(self.config.negatives, len(candidates))
        return random.Random(self.config.seed).sample(candidates, count)

    def items(self) -> Iterator[SourceItem]:
        positives, negatives = self.synsets()
        caps = {w: self.config.max_per_synset for w in positives} | {w: self.config.negatives_per_synset for w in negatives}
        labels = {w: self.label for w in positives} | {w: self.negative_label for w in negatives}
        for wnid, url in self._urls(list(caps), caps):
            yield SourceItem(url, labels[wnid], NAME)

    def _urls(self, wnids: list[str], caps: dict[str, int]) -> Iterator[tuple[str, str]]:
        if self.config.url_list:
            yield from self._urls_from_list(set(wnids), caps)
            return
        for wnid in wnids:
            location = self.config.urls_endpoint.format(wnid=wnid)
            with open_lines(location, f"imagenet URL list of {wnid}") as fh:
                urls = (u.strip() for u in fh if u.strip().startswith(("http://", "https://")))
                for n, url in enumerate(urls):
                    if caps[wnid] and n >= caps[wnid]:
                        break
                    yield wnid, url

    def _urls_from_list(self, wanted: set[str], caps: dict[str, int]) -> Iterator[tuple[str, str]]:
        taken: dict[str, int] = defaultdict(int)
        with open_lines(self.config.url_list, "imagenet.url_list") as fh:
            for line in fh:
                name, _, url = line.rstrip("\r\n").partition("\t")
                wnid = name.split("_", 1)[0]
                if wnid in wanted and url and not (caps[wnid] and taken[wnid] >= caps[wnid]):
                    taken[wnid] += 1
                    yield wnid, url.strip()


def make_source(config: ImageNetConfig) -> Source:
    return ImageNetSource(config)
