"""The in-memory matching index: the decrypted templates of one person group or face list.

Never persisted: the service builds one from the encrypted store on train (``add_many``) and keeps it
consistent with enrolments and deletions (``add`` / ``remove_face`` / ``remove_owner``), all under one
lock, so the worker thread can search while the API thread enrols.

How a search stays exact and fast (docs/matching.md has the measurements):

- **Frame.** When an empty index is filled with at least ``FIT_MIN`` templates at once, it fits a
  frame to them: their mean and principal axes. Templates are stored centred and rotated into that
  frame. A rotation preserves Euclidean distances, and real templates put ≈ 78 % of their variance in
  the first 32 axes (LFW, docs/matching.md). Smaller or incrementally built indexes use the identity
  frame: the same results, only less pruning.
- **Storage.** ``float32`` (exact), ``float16`` (distance error ≲ 1e-4) or ``int8`` (one scale per
  template and per-axis weights; distance error ≲ 3e-3, 4× smaller than float32: the choice for
  groups of 100k–1M). Each template is split into a *head* (the first ``head_dim`` axes) and a *tail*:
  32 head axes for 128-d templates; a quarter of the axes for wider ones (512-d unit templates spread
  their variance over more axes, so their head and mid bounds take 128 axes each).
- **Two stages, no approximation.** Stage 1 computes, for every stored template, the distance over the
  head axes only, a lower bound of the full distance (a chunked float32 GEMV; int8 and float16 chunks
  are widened in cache). Stage 2 takes the few templates with the smallest bounds, computes their full
  distances, and derives the bound ``B`` of the k-th best owner (and ``max_distance``); every template
  whose lower bound is ≤ ``B`` (plus a rounding margin) then gets its full distance (when there are
  many, a second lower bound over the next ``MID_DIM`` axes narrows them first; above 128-d, bounds
  over successive quarters of the axes, while many remain). Any template that
  could be in the answer has a lower bound ≤ ``B``, so the result is the brute-force result over the
  stored values. When the bound prunes little, a plain full scan is used instead.

IDs are kept compactly (UTF-8 bytes in one fixed-width array, binary search plus a small dict of
recent additions) because at a million faces Python string objects and dict entries would cost more
memory than the templates themselves.

Modules: ``index`` (``TemplateIndex``, ``Match``: the public face, its lock and checks), ``storage`` (the
frame and the quantised rows), ``search`` (the two-stage exact search), ``ids`` (the compact ID tables).
"""

from __future__ import annotations

from edged.matcher.ids import BATCH_DICT, MERGE_MIN
from edged.matcher.index import DIFF_CHUNK, FIT_MIN, HEAD_DIM, Match, TemplateIndex
from edged.matcher.search import CHUNK, MID_DIM, MID_MIN, PROBE, SMALL, WIDE
from edged.matcher.storage import ENCODE_BLOCK, FIT_SAMPLE, STORAGES, Storage

__all__ = [
    "BATCH_DICT",
    "CHUNK",
    "DIFF_CHUNK",
    "ENCODE_BLOCK",
    "FIT_MIN",
    "FIT_SAMPLE",
    "HEAD_DIM",
    "MERGE_MIN",
    "MID_DIM",
    "MID_MIN",
    "PROBE",
    "SMALL",
    "STORAGES",
    "WIDE",
    "Match",
    "Storage",
    "TemplateIndex",
]
