"""Spatial words in captions, for a caption-aware horizontal flip (``dataset.flip=caption_aware``).

A horizontal flip mirrors the clip: what was on the left is on the right, a pan to the left becomes
a pan to the right, a clockwise turn becomes a counter-clockwise one. A caption that says so is
then wrong unless its spatial words are swapped too. :func:`swap_spatial` does the swap, or says
that it cannot be done safely (``None``: the training data path then does not flip that clip).

The rules, one table, checked in this order for each word (matches are on whole words,
case-insensitive; a hyphen separates words, so ``left-hand`` is ``left`` + ``hand``; the
replacement keeps the case: ``left`` -> ``right``, ``Left`` -> ``Right``, ``LEFT`` -> ``RIGHT``):

=====  ==========================================  ===========  =========================================
rule   words / context                             verdict      examples
=====  ==========================================  ===========  =========================================
N      other words holding the letters (NEVER)     unchanged    bright, upright, frightened, righteous,
                                                                copyright, Wright, alright, rights, lefts,
                                                                leftover(s), leftist, outright, downright
A      ALWAYS_SWAP forms                           swap         leftmost, leftward(s), lefthand(ed) and
                                                                their right- mirrors
C      the clockwise family (CLOCKWISE)            swap         clockwise <-> counterclockwise; counter
                                                                clockwise, counter-clockwise,
                                                                anticlockwise -> clockwise
1      a left/right pair (PAIR_JOIN)               swap         left and right, from right to left,
                                                                right then left
2      right: fixed non-spatial phrases            AMBIGUOUS    all right, right of way, right side up
3      right: DETERMINERS + right + CORRECT_NOUNS  AMBIGUOUS    the right answer / way / time / one
4      right + a part (AFTER)                      swap         right hand, right-handed, right corner
5      right after RIGHT_COPULA                    AMBIGUOUS    is right, that's right, just right,
                                                                looks right
6      right + INTENSIFIED, no determiner or       AMBIGUOUS    right now, right away, right after, right
       preposition before                                       there, walks right into, back right away
7      left + over/behind/alone/unattended         AMBIGUOUS    left over, was left behind, left alone
       (LEFT_VERB_AFTER), no determiner or
       preposition before ("left over": always)
8      left after LEFT_SUBJECTS                    AMBIGUOUS    he left, was left, nothing left, the
                                                                elephants ... (a noun: rule 10)
8b     left + a part (AFTER)                       swap         left hand, left side, a left turn
9      a cue before: DETERMINERS, POSITIONS,       swap         the left, to our right, top left, far
       PREPOSITIONS, FRAME_WORDS or a MOTION verb               right, from left, exits frame left,
                                                                camera pans right, turns left
9b     left/right + of + the/center/frame/...      swap         left of the screen
10     anything else                               AMBIGUOUS    he left the room, Left alone, ..., say it
                                                                right, food left on a floor
=====  ==========================================  ===========  =========================================

"alright" and "all right" both mean "OK": ``alright`` is another word (rule N, so it does not stop
a flip); ``all right`` is AMBIGUOUS (rule 2), as the phrase cannot be told from "all (to the) right"
in DiDeMo's captions, which often lack punctuation.

A caption is ``none`` (no spatial word: flipped with the caption as it is), ``swappable`` (every
spatial word swappable: flipped with :func:`swap_spatial`'s caption) or ``ambiguous`` (any spatial word
ambiguous: never flipped by the caption-aware flip). :func:`mentions_left_right` is the plain rule of
the report (``left`` or ``right`` as whole words, case-insensitive), :func:`count_spatial` the counts.

On the real annotation files (``lsdo-prepare spatial``, 2026-12-02): DiDeMo test 265 of 1,037
paragraphs say left or right (25.6%), validation 333 of 1,094 (30.4%); MSVD 75 of 80,827 captions
(0.09%), LSMDC test 4 of 1,000 (0.4%), MSR-VTT test 0 of 1,000. docs/datasets.md has the split
into swappable and ambiguous.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from lsdo.data.annotations import SPLITS, NoSplitError, load_annotations
from lsdo.errors import DataNotFoundError
from lsdo.options import option

Kind = Literal["none", "swappable", "ambiguous"]

# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------

LEFT_RIGHT = {"left": "right", "right": "left"}
ALWAYS_SWAP = {
    "leftmost": "rightmost",
    "rightmost": "leftmost",
    "leftward": "rightward",
    "rightward": "leftward",
    "leftwards": "rightwards",
    "rightwards": "leftwards",
    "lefthand": "righthand",
    "righthand": "lefthand",
    "lefthanded": "righthanded",
    "righthanded": "lefthanded",
}
# the clockwise family, matched on the text (two words or hyphenated): counter/anti-clockwise first
CLOCKWISE = re.compile(r"\b(?:counter|anti)(?:[ -]?)clockwise\b|\bclockwise\b", re.IGNORECASE)

# Words containing "left"/"right" that are other words: never changed, never counted (documentation
# and tests; the whole-word match is what keeps them).
NEVER = (
    "bright",
    "brightly",
    "upright",
    "fright",
    "frightened",
    "righteous",
    "copyright",
    "Wright",
    "alright",
    "rights",
    "lefts",
    "leftover",
    "leftovers",
    "leftist",
    "outright",
    "downright",
)

# Before left/right: determiners and possessives ("the left", "his right", "to our left") ...
DETERMINERS = frozenset("the his her their its my your our one's whose".split())
# ... and position words ("top left", "far right", "back left corner", "a hard right turn").
POSITIONS = frozenset("far extreme top bottom upper lower centre center middle front back rear hard".split())
# Before left/right: prepositions ("to left", "from right to left", "on left").
PREPOSITIONS = frozenset("to from on at toward towards onto facing via".split())
# Before left/right: the frame ("exits frame left", "screen right", "camera left", "stage left").
FRAME_WORDS = frozenset("frame screen camera stage shot".split())
# Motion verbs (base forms; -s, -es, -ed, -ing and a doubled last consonant are recognised):
# "pans left", "turning right", "veered left".
MOTION = frozenset(
    "pan tilt turn veer swerve swing move look glance gaze point head exit enter rotate shift slide step "
    "walk run go drift roll swim fly drive ride jump hop spin sway bend lean reach steer kick throw "
    "gesture motion wave zoom track travel dart dash crawl scroll push pull sweep strafe dodge duck "
    "face stare peer aim twist bank".split()
)
MOTION_IRREGULAR = frozenset("ran went goes swam flew rode drove threw swung leaned leant".split())
# After left/right: a body part or a part of something ("left hand", "right-handed", "left corner").
AFTER = frozenset(
    "side sides hand hands handed handedly arm arms leg legs foot feet knee knees eye eyes ear ears "
    "shoulder shoulders elbow elbows wrist wrists ankle ankles hip hips cheek cheeks thigh thighs palm "
    "palms fist fists finger fingers thumb thumbs toe toes heel heels glove gloves shoe shoes sock socks "
    "boot boots skate ski pocket sleeve brow eyebrow nostril lung breast chest temple paw paws claw "
    "flipper fin corner corners edge edges half part portion end lane lanes turn turns field fielder "
    "wall walls door doors window windows panel column row seat bank border margin flank "
    "wheel wheels tire tires pedal headlight mirror rear most".split()
)
PAIR_JOIN = frozenset("and or to then nor".split())
# "right" reading "correct": "the right answer", "at the right time".
CORRECT_NOUNS = frozenset(
    "answer answers thing things way ways time times moment choice choices decision decisions idea ideas "
    "one ones place spot position direction size fit track order amount words word note notes key tool "
    "shape person people guy".split()
)
# "right" after these reads "correct": "is right", "that's right", "just right", "looks right".
RIGHT_COPULA = frozenset(
    "is are was were be been being am that's it's you're he's she's they're we're i'm isn't wasn't "
    "just exactly quite not seems seem seemed looks look looked feels feel felt sounds sound all".split()
)
# "right" before these reads "directly / immediately": "right now", "right after", "walks right into".
INTENSIFIED = frozenset(
    "now away after before there here back behind in into through up down off out over under at on by "
    "beside next along across around past onto inside outside where when as then below above between "
    "against near beneath within about home ahead until till alongside underneath".split()
)
# "left" after these is the verb "leave" or "remaining": "he left", "was left", "nothing left".
LEFT_SUBJECTS = frozenset(
    "he she they it i we you who which that has have had having was were is are be been being get gets "
    "got getting nothing something anything everything nobody none little much many few more less some "
    "any still just only not never finally then and someone everyone anyone people man woman men women "
    "boy girl guy person".split()
)
LEFT_VERB_AFTER = frozenset("over behind alone unattended".split())
OF_OBJECTS = frozenset("the center centre frame screen him her them it me us".split())

# ---------------------------------------------------------------------------------------------
# Matching
# ---------------------------------------------------------------------------------------------

PLAIN = re.compile(r"\b(left|right)\b", re.IGNORECASE)
_TOKEN = re.compile(r"[A-Za-z0-9]+(?:['\u2019][A-Za-z]+)?|[^\sA-Za-z0-9\-]")


def mentions_left_right(caption: str) -> bool:
    """The plain rule: ``left`` or ``right`` as a whole word, any case (``left-hand`` counts, ``bright`` not)."""
    return PLAIN.search(caption) is not None


def _is_motion(word: str) -> bool:
    if word in MOTION or word in MOTION_IRREGULAR:
        return True
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) > len(suffix) + 1:
            stem = word[: -len(suffix)]
            candidates = {stem, stem + "e"}
            if len(stem) > 2 and stem[-1] == stem[-2]:
                candidates.add(stem[:-1])  # panned, panning
            if candidates & MOTION:
                return True
    return False


def _classify(tokens: list[str], i: int) -> bool:
    """Whether ``tokens[i]`` (``left`` or ``right``, lower case) is spatial for sure (else: ambiguous)."""

    def at(j: int) -> str:
        return tokens[j] if 0 <= j < len(tokens) else ""

    word, p, p2, n, n2 = tokens[i], at(i - 1), at(i - 2), at(i + 1), at(i + 2)
    if (p in PAIR_JOIN and p2 in LEFT_RIGHT) or (n in PAIR_JOIN and n2 in LEFT_RIGHT):
        return True  # left and right, from right to left, right then left
    strong = p in DETERMINERS or p in PREPOSITIONS  # enough to outweigh "right now", "left behind"
    if word == "right":
        if p == "all" or (n == "of" and n2 == "way") or (n == "side" and n2 == "up"):
            return False  # all right, right of way, right side up
        if p in DETERMINERS and n in CORRECT_NOUNS:
            return False  # the right answer
        if n in AFTER:
            return True  # right hand, right side
        if p in RIGHT_COPULA:
            return False  # is right, that's right, just right
        if n in INTENSIFIED and not strong:
            return False  # right now, right after, walks right into
    else:
        if n in LEFT_VERB_AFTER and not (strong and n != "over"):
            return False  # left over, left behind, left alone
        if p in LEFT_SUBJECTS:
            return False  # he left, was left, nothing left
        if n in AFTER:
            return True  # left hand, left side
    if strong or p in POSITIONS or p in FRAME_WORDS or _is_motion(p):
        return True
    return n == "of" and n2 in OF_OBJECTS  # left of the screen


def _scan(caption: str) -> tuple[list[tuple[int, int, str]], list[int]]:
    """(replacements: (start, end, new text) in the caption; the starts of its ambiguous words)."""
    spans = [(m.start(), m.end()) for m in _TOKEN.finditer(caption)]
    tokens = [caption[a:b].lower().replace("\u2019", "'") for a, b in spans]
    edits, doubtful = [], []
    for i, tok in enumerate(tokens):
        if tok in ALWAYS_SWAP or tok in LEFT_RIGHT:
            a, b = spans[i]
            if tok in LEFT_RIGHT and not _classify(tokens, i):
                doubtful.append(a)
            edits.append((a, b, _same_case(caption[a:b], {**ALWAYS_SWAP, **LEFT_RIGHT}[tok])))
    for m in CLOCKWISE.finditer(caption):
        mirror = "clockwise" if m.group(0).lower() != "clockwise" else "counterclockwise"
        edits.append((m.start(), m.end(), _same_case(m.group(0), mirror)))
    return sorted(edits), doubtful


def _same_case(old: str, new: str) -> str:
    if old.isupper() and len(old) > 1:
        return new.upper()
    if old[:1].isupper():
        return new[:1].upper() + new[1:]
    return new


def spatial_kind(caption: str) -> Kind:
    """``none`` (no spatial word), ``swappable`` (all swappable) or ``ambiguous`` (any doubtful use)."""
    edits, doubtful = _scan(caption)
    if not edits:
        return "none"
    return "ambiguous" if doubtful else "swappable"


def swap_spatial(caption: str) -> str | None:
    """The caption of the mirrored clip: spatial words swapped (left <-> right, clockwise <->
    counterclockwise ...); the caption itself when it has none; None when a use is ambiguous."""
    edits, doubtful = _scan(caption)
    if doubtful:
        return None
    out, pos = [], 0
    for a, b, new in edits:
        out += [caption[pos:a], new]
        pos = b
    return "".join(out) + caption[pos:]


def count_spatial(captions: Iterable[str]) -> dict[str, int]:
    """``captions``, ``left_right`` (the plain rule), ``spatial`` (any spatial word of the table),
    ``swappable`` and ``ambiguous`` (:func:`spatial_kind`), ``none`` (no spatial word)."""
    counts = {"captions": 0, "left_right": 0, "spatial": 0, "swappable": 0, "ambiguous": 0, "none": 0}
    for caption in captions:
        kind = spatial_kind(caption)
        counts["captions"] += 1
        counts["left_right"] += mentions_left_right(caption)
        counts["spatial"] += kind != "none"
        counts[kind] += 1
    return counts


# ---------------------------------------------------------------------------------------------
# The report: lsdo-prepare spatial dataset=NAME root=DIR [split=test] [examples=3]
# ---------------------------------------------------------------------------------------------

REPORT_DATASETS = ("msrvtt", "msvd", "lsmdc", "didemo")


@dataclass
class SpatialOptions:
    """What ``lsdo-prepare spatial`` takes (its keys and their defaults: written here once)."""

    dataset: str = option("the benchmark whose captions are counted", choices=REPORT_DATASETS)
    root: str = option("the folder holding its annotation files (dataset.ann_dir / dataset.root)")
    split: list[str] = option("splits to count (default: every split whose files are there)", [])
    examples: int = option("examples shown of each kind (swapped, not flipped)", 3, minimum=0)
    train_split: str = option("MSR-VTT's training list: 9k | 7k", "9k", choices=("9k", "7k"))


def _snippet(caption: str, width: int = 60) -> str:
    """The caption around its first ambiguous word, else its first spatial word (``width`` characters each side)."""
    edits, doubtful = _scan(caption)
    start = doubtful[0] if doubtful else edits[0][0] if edits else 0
    lo, hi = max(0, start - width), min(len(caption), start + width)
    return ("..." if lo else "") + caption[lo:hi] + ("..." if hi < len(caption) else "")


def split_report(name: str, split: str, captions: Sequence[str], examples: int = 3) -> list[str]:
    """The report's lines for one split: counts (:func:`count_spatial`) and a few examples of each kind."""
    c = count_spatial(captions)
    unit = "paragraphs" if name == "didemo" else "captions"
    pct = 100 * c["left_right"] / max(c["captions"], 1)
    lines = [
        f"{name} {split}: {c['captions']:,} {unit}; left/right (plain rule): {c['left_right']:,} ({pct:.2f}%); "
        f"any spatial word: {c['spatial']:,}; flip=caption_aware: {c['swappable']:,} swapped, "
        f"{c['ambiguous']:,} not flipped (ambiguous)"
    ]
    shown = {"swappable": 0, "ambiguous": 0}
    for caption in captions:
        kind = spatial_kind(caption)
        if kind == "none" or shown[kind] >= examples:
            continue
        shown[kind] += 1
        if kind == "swappable":
            lines.append(f"  swapped:     {_snippet(caption)!r}")
            lines.append(f"          ->   {_snippet(swap_spatial(caption) or '')!r}")
        else:
            lines.append(f"  not flipped: {_snippet(caption)!r}")
    return lines


def report(opts: SpatialOptions) -> list[str]:
    """The report's lines for every split asked for (or every split whose files are in ``root``)."""
    splits = list(opts.split) or list(SPLITS)
    lines, found = [], 0
    for split in splits:
        kw = {"train_split": opts.train_split} if opts.dataset == "msrvtt" else {}
        try:
            records = load_annotations(opts.dataset, split, opts.root, **kw)
        except (DataNotFoundError, NoSplitError) as exc:
            if opts.split:  # asked for by name: its files must be there
                raise
            lines.append(f"{opts.dataset} {split}: skipped ({str(exc).splitlines()[0]})")
            continue
        found += 1
        lines += split_report(opts.dataset, split, [r.caption for r in records], opts.examples)
    if not found:
        raise DataNotFoundError(f"{opts.dataset}: no split's annotation files under {opts.root}")
    return lines
